"""Built-in Azure role definitions the platform assigns, and one helper to assign them.

Ids are the fixed GUIDs of Azure's built-in roles (the same in every tenant); see
https://learn.microsoft.com/azure/role-based-access-control/built-in-roles.
"""

from __future__ import annotations

import pulumi
from pulumi_azure_native import authorization

ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
ACR_PUSH = "8311e382-0749-4cb8-b61a-304f252e45ec"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
# Azure RBAC for Kubernetes authorization: every action on every Kubernetes resource of the cluster.
AKS_RBAC_CLUSTER_ADMIN = "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
# Lets AKS's cloud provider put a public IP it does not own into the cluster's load balancer.
NETWORK_CONTRIBUTOR = "4d97b98b-1d4f-4787-a291-c67834d212e7"


def role_definition_id(subscription_id: pulumi.Input[str], role: str) -> pulumi.Output[str]:
    """The subscription-scoped resource id of built-in role `role` (a GUID above)."""
    return pulumi.Output.concat(
        "/subscriptions/", subscription_id, "/providers/Microsoft.Authorization/roleDefinitions/", role
    )


def assign_role(
    name: str,
    *,
    subscription_id: pulumi.Input[str],
    role: str,
    principal_id: pulumi.Input[str],
    scope: pulumi.Input[str],
    parent: pulumi.Resource,
    principal_type: pulumi.Input[str] = authorization.PrincipalType.SERVICE_PRINCIPAL,
    retain_on_delete: bool = False,
    aliases: list[pulumi.Alias] | None = None,
) -> authorization.RoleAssignment:
    """Grant `role` to a service principal or managed identity (`principal_id`) on `scope`.

    `principal_type`: `User`, `Group` or `ServicePrincipal`; Azure refuses a type that does not match the
    principal's (UnmatchedPrincipalType), and the SDK would send `User` for an empty one.
    `retain_on_delete` for a scope under a CanNotDelete lock, where Azure refuses to delete the assignment:
    Pulumi then forgets it instead (components/resource_groups.py).
    `aliases`: earlier names of the assignment, so that a rename keeps it.
    """
    return authorization.RoleAssignment(
        name,
        role_definition_id=role_definition_id(subscription_id, role),
        principal_id=principal_id,
        # Declaring the type lets Azure accept a principal created seconds ago (no replication wait).
        principal_type=principal_type,
        scope=scope,
        opts=pulumi.ResourceOptions(parent=parent, retain_on_delete=retain_on_delete, aliases=aliases),
    )
