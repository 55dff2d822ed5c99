"""User-assigned managed identity of the MLflow tracking server: federated with the server's Kubernetes
ServiceAccount through the cluster's OIDC issuer (workload identity) and granted `Storage Blob Data
Contributor` on the artifacts container and on the backups container (the server's backup and gc Jobs
run with the same ServiceAccount), so they reach blob storage with no key."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import authorization, managedidentity

from components import roles

# The audience Azure AD expects in a federated Kubernetes service account token.
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"


@dataclass
class TrackingIdentityArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the identity (the platform group)."""
    location: str
    """Azure region."""
    name_prefix: str
    """Prefix of the identity name."""
    oidc_issuer_url: pulumi.Input[str]
    """The cluster's OIDC issuer, which signs the ServiceAccount tokens."""
    subject: str
    """`system:serviceaccount:<namespace>:<service account>` of the tracking server."""
    subscription_id: pulumi.Input[str]
    """Subscription of the built-in role definitions."""
    artifacts_container_id: pulumi.Input[str]
    """Scope of Storage Blob Data Contributor (artifacts; gc deletes those of deleted runs)."""
    backups_container_id: pulumi.Input[str]
    """Scope of Storage Blob Data Contributor (database backups, written by the backup Job)."""
    data_locked: bool = False
    """Whether the containers' resource group has a CanNotDelete lock (`dataRetention: retain`). Azure then
    refuses to delete the two assignments, so `pulumi destroy` forgets them instead; the identity they name
    is deleted, and a later stack grants its own new identity afresh."""


class TrackingIdentity(pulumi.ComponentResource):
    identity: managedidentity.UserAssignedIdentity
    federated_credential: managedidentity.FederatedIdentityCredential
    blob_access: authorization.RoleAssignment
    backup_access: authorization.RoleAssignment
    client_id: pulumi.Output[str]
    principal_id: pulumi.Output[str]

    def __init__(self, name: str, args: TrackingIdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:TrackingIdentity", name, None, opts)

        self.identity = managedidentity.UserAssignedIdentity(
            f"{name}-identity",
            resource_name_=f"{args.name_prefix}-tracking-server",
            resource_group_name=args.resource_group_name,
            location=args.location,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.federated_credential = managedidentity.FederatedIdentityCredential(
            f"{name}-federation",
            federated_identity_credential_resource_name="kubernetes-service-account",
            resource_name_=self.identity.name,
            resource_group_name=args.resource_group_name,
            issuer=args.oidc_issuer_url,
            subject=args.subject,
            audiences=[FEDERATION_AUDIENCE],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.blob_access = roles.assign_role(
            f"{name}-blob-data-contributor",
            subscription_id=args.subscription_id,
            role=roles.STORAGE_BLOB_DATA_CONTRIBUTOR,
            principal_id=self.identity.principal_id,
            scope=args.artifacts_container_id,
            parent=self,
            retain_on_delete=args.data_locked,
        )
        self.backup_access = roles.assign_role(
            f"{name}-backups-data-contributor",
            subscription_id=args.subscription_id,
            role=roles.STORAGE_BLOB_DATA_CONTRIBUTOR,
            principal_id=self.identity.principal_id,
            scope=args.backups_container_id,
            parent=self,
            retain_on_delete=args.data_locked,
        )

        self.client_id = self.identity.client_id
        self.principal_id = self.identity.principal_id

        self.register_outputs({"clientId": self.client_id, "principalId": self.principal_id})
