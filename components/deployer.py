"""The deployer service principal: what pushes the images to ACR (`AcrPush`, `Contributor` on the
registry) and fetches cluster credentials (`Azure Kubernetes Service Cluster User Role` on the AKS)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_azuread as azuread
from pulumi_azure_native import authorization

from components import roles


@dataclass
class DeployerArgs:
    name_prefix: str
    """Prefix of the application's display name."""
    password_end_date: str
    """RFC 3339 expiry of the password."""
    subscription_id: pulumi.Input[str]
    """Subscription of the built-in role definitions."""
    registry_id: pulumi.Input[str]
    """Scope of AcrPush and Contributor."""
    cluster_id: pulumi.Input[str]
    """Scope of the AKS Cluster User Role."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What must exist before the Entra ID application is created (the data guard)."""


class Deployer(pulumi.ComponentResource):
    application: azuread.Application
    service_principal: azuread.ServicePrincipal
    role_assignments: list[authorization.RoleAssignment]
    """AcrPush, Contributor (registry) and AKS Cluster User: image pushes depend on them."""
    client_id: pulumi.Output[str]
    object_id: pulumi.Output[str]
    password: pulumi.Output[str]
    """The service principal's password (secret)."""

    def __init__(self, name: str, args: DeployerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:Deployer", name, None, opts)

        # The person running `pulumi up` owns the application, so they can manage it without admin rights.
        current = azuread.get_client_config_output()
        self.application = azuread.Application(
            f"{name}-app",
            display_name=f"{args.name_prefix}-deployer",
            owners=[current.object_id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.service_principal = azuread.ServicePrincipal(
            f"{name}-sp",
            client_id=self.application.client_id,
            owners=[current.object_id],
            opts=pulumi.ResourceOptions(parent=self),
        )
        password = azuread.ServicePrincipalPassword(
            f"{name}-password",
            service_principal_id=self.service_principal.id,
            display_name="pulumi",
            end_date=args.password_end_date,
            opts=pulumi.ResourceOptions(parent=self),
        )

        principal_id = self.service_principal.object_id
        self.role_assignments = [
            roles.assign_role(
                f"{name}-{suffix}",
                subscription_id=args.subscription_id,
                role=role,
                principal_id=principal_id,
                scope=scope,
                parent=self,
            )
            for suffix, role, scope in (
                ("acr-push", roles.ACR_PUSH, args.registry_id),
                ("acr-contributor", roles.CONTRIBUTOR, args.registry_id),
                ("aks-cluster-user", roles.AKS_CLUSTER_USER, args.cluster_id),
            )
        ]

        self.client_id = self.application.client_id
        self.object_id = principal_id
        self.password = pulumi.Output.secret(password.value)

        self.register_outputs(
            {"clientId": self.client_id, "objectId": self.object_id, "password": self.password}
        )
