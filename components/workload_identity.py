"""A workload identity: a user-assigned managed identity federated with one Kubernetes ServiceAccount
through the cluster's OIDC issuer, holding given roles on given scopes and nothing else. Pods running as
that ServiceAccount exchange their projected token for the identity's Entra ID token: no key, no secret.

The program makes two, each with one grant (__main__.py): the tracking server's (Storage Blob Data
Contributor on the artifacts container; the gc Job runs with it too) and the backup Job's (the same role on
the backups container only), so the server cannot reach a backup and the backup Job cannot reach an
artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import authorization, managedidentity

from components import roles

# The audience Azure AD expects in a federated Kubernetes service account token.
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
# The federated credential's name on its identity (each identity has one).
FEDERATED_CREDENTIAL = "kubernetes-service-account"


@dataclass(frozen=True)
class RoleGrant:
    """One built-in role on one scope, assigned to the identity."""

    name: str
    """End of the assignment's resource name (`<component name>-<name>`)."""
    role: str
    """Built-in role definition GUID (components/roles.py)."""
    scope: pulumi.Input[str]
    """Resource id the role applies to (and everything under it)."""


@dataclass
class WorkloadIdentityArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the identity (the platform group)."""
    location: str
    """Azure region."""
    identity_name: str
    """Azure name of the identity, e.g. `<prefix>-tracking-server`."""
    oidc_issuer_url: pulumi.Input[str]
    """The cluster's OIDC issuer, which signs the ServiceAccount tokens."""
    subject: str
    """`system:serviceaccount:<namespace>:<service account>`: the `sub` of that ServiceAccount's tokens."""
    subscription_id: pulumi.Input[str]
    """Subscription of the built-in role definitions."""
    grants: list[RoleGrant] = field(default_factory=list)
    """Everything the identity may do; nothing else is assigned to it."""
    data_locked: bool = False
    """Whether the grants' scopes sit in the data group under its CanNotDelete lock (`dataRetention:
    retain`). Azure then refuses to delete the assignments, so `pulumi destroy` forgets them instead; the
    identity they name is deleted, and a later stack grants its own new identity afresh."""


class WorkloadIdentity(pulumi.ComponentResource):
    identity: managedidentity.UserAssignedIdentity
    federated_credential: managedidentity.FederatedIdentityCredential
    role_assignments: list[authorization.RoleAssignment]
    """One per grant, in the order given."""
    client_id: pulumi.Output[str]
    principal_id: pulumi.Output[str]

    def __init__(self, name: str, args: WorkloadIdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:WorkloadIdentity", name, None, opts)

        self.identity = managedidentity.UserAssignedIdentity(
            f"{name}-identity",
            resource_name_=args.identity_name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.federated_credential = managedidentity.FederatedIdentityCredential(
            f"{name}-federation",
            federated_identity_credential_resource_name=FEDERATED_CREDENTIAL,
            resource_name_=self.identity.name,
            resource_group_name=args.resource_group_name,
            issuer=args.oidc_issuer_url,
            subject=args.subject,
            audiences=[FEDERATION_AUDIENCE],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.role_assignments = [
            roles.assign_role(
                f"{name}-{grant.name}",
                subscription_id=args.subscription_id,
                role=grant.role,
                principal_id=self.identity.principal_id,
                scope=grant.scope,
                parent=self,
                retain_on_delete=args.data_locked,
            )
            for grant in args.grants
        ]

        self.client_id = self.identity.client_id
        self.principal_id = self.identity.principal_id

        self.register_outputs({"clientId": self.client_id, "principalId": self.principal_id})
