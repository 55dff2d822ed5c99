"""Azure Container Registry with the admin user off; the cluster's kubelet identity pulls with `AcrPull`,
so no image pull secret exists anywhere."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import authorization, containerregistry

from components import roles
from components.naming import global_name_suffix


@dataclass
class RegistryArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the registry (the platform group)."""
    location: str
    """Azure region."""
    name_prefix: str
    """Start of the registry name; a random suffix makes it globally unique."""
    sku: str
    """Basic, Standard or Premium."""
    subscription_id: pulumi.Input[str]
    """Subscription of the built-in role definitions."""
    kubelet_object_id: pulumi.Input[str]
    """Object id of the cluster's kubelet identity, granted AcrPull."""


class Registry(pulumi.ComponentResource):
    registry: containerregistry.Registry
    kubelet_pull: authorization.RoleAssignment
    """AcrPull of the kubelet identity: pods that pull from the registry depend on it."""
    registry_id: pulumi.Output[str]
    registry_name: pulumi.Output[str]
    login_server: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:Registry", name, None, opts)

        # Registry names are global across Azure: 5-50 alphanumerics, so prefix + "acr" + 8 random ones.
        suffix = global_name_suffix(name, self)
        self.registry = containerregistry.Registry(
            f"{name}-acr",
            registry_name=suffix.apply(lambda s: f"{args.name_prefix}acr{s}"),
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku=containerregistry.SkuArgs(name=args.sku),
            # Pushes use the deployer service principal, pulls the kubelet identity: no shared password.
            admin_user_enabled=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.kubelet_pull = roles.assign_role(
            f"{name}-kubelet-acr-pull",
            subscription_id=args.subscription_id,
            role=roles.ACR_PULL,
            principal_id=args.kubelet_object_id,
            scope=self.registry.id,
            parent=self,
        )

        self.registry_id = self.registry.id
        self.registry_name = self.registry.name
        self.login_server = self.registry.login_server

        self.register_outputs(
            {
                "registryId": self.registry_id,
                "registryName": self.registry_name,
                "loginServer": self.login_server,
            }
        )
