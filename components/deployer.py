"""The deployer service principal: what pushes the images to ACR, with `AcrPush` on the registry and
nothing else (least privilege: pushing an image needs no management-plane role on the registry, and
the cluster is reached with the Entra ID identity of whoever runs `pulumi up`, not with this one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_azuread as azuread
from pulumi_azure_native import authorization

from components import roles
from components.entra_owners import EntraOwners, owners_of_application
from components.password_expiry import PasswordExpiry


@dataclass
class DeployerArgs:
    name_prefix: str
    """Prefix of the application's display name."""
    password_lifetime_days: int
    """Days the password is valid from its creation (a new value rotates it)."""
    subscription_id: pulumi.Input[str]
    """Subscription of the built-in role definitions."""
    registry_id: pulumi.Input[str]
    """Scope of AcrPush."""
    owners: pulumi.Input[Sequence[str]]
    """Object ids of the application's and service principal's owners: the stack's operators
    (components/operators.py), a list that only grows."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What must exist before the Entra ID application is created (the data guard)."""


class Deployer(pulumi.ComponentResource):
    application: azuread.Application
    service_principal: azuread.ServicePrincipal
    owners: list[EntraOwners]
    """Operators added after creation, made owners of the application and service principal."""
    password_expiry: PasswordExpiry
    """The password's end date, fixed when the password is created."""
    role_assignments: list[authorization.RoleAssignment]
    """AcrPush on the registry: image pushes depend on it."""
    client_id: pulumi.Output[str]
    object_id: pulumi.Output[str]
    password: pulumi.Output[str]
    """The service principal's password (secret)."""

    def __init__(self, name: str, args: DeployerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:Deployer", name, None, opts)

        # The stack's operators own the application and its service principal, so any of them can manage
        # them without admin rights; not whoever runs `pulumi up` this time. `owners` is taken at creation
        # only: operators added later are added by `owners` below, and nobody is ever removed.
        self.application = azuread.Application(
            f"{name}-app",
            display_name=f"{args.name_prefix}-deployer",
            owners=args.owners,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on, ignore_changes=["owners"]),
        )
        self.service_principal = azuread.ServicePrincipal(
            f"{name}-sp",
            client_id=self.application.client_id,
            owners=args.owners,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["owners"]),
        )
        self.owners = owners_of_application(
            name, self.application.object_id, self.service_principal.object_id, args.owners, self
        )
        # A date computed once (components/password_expiry.py): the same lifetime on the next `pulumi up`
        # is no change, so the password is not rotated on every run.
        self.password_expiry = PasswordExpiry(
            f"{name}-password-expiry",
            lifetime_days=args.password_lifetime_days,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.service_principal]),
        )
        password = azuread.ServicePrincipalPassword(
            f"{name}-password",
            service_principal_id=self.service_principal.id,
            display_name="pulumi",
            end_date=self.password_expiry.end_date,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.password_expiry]),
        )

        principal_id = self.service_principal.object_id
        self.role_assignments = [
            roles.assign_role(
                f"{name}-acr-push",
                subscription_id=args.subscription_id,
                role=roles.ACR_PUSH,
                principal_id=principal_id,
                scope=args.registry_id,
                parent=self,
            )
        ]

        self.client_id = self.application.client_id
        self.object_id = principal_id
        self.password = pulumi.Output.secret(password.value)

        self.register_outputs(
            {"clientId": self.client_id, "objectId": self.object_id, "password": self.password}
        )
