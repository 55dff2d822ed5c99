"""The two resource groups: `platform` (cluster, registry, monitoring, identities) and `data` (storage and
the MySQL disk)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import resources


@dataclass
class ResourceGroupsArgs:
    location: str
    """Azure region of both groups."""
    name_prefix: str
    """Prefix of both group names."""
    retain_data: bool
    """Keep the data group in Azure on `pulumi destroy` (`dataRetention: retain`)."""


class ResourceGroups(pulumi.ComponentResource):
    platform: resources.ResourceGroup
    data: resources.ResourceGroup
    platform_name: pulumi.Output[str]
    data_name: pulumi.Output[str]

    def __init__(self, name: str, args: ResourceGroupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:ResourceGroups", name, None, opts)

        self.platform = resources.ResourceGroup(
            f"{name}-platform",
            resource_group_name=f"{args.name_prefix}-platform",
            location=args.location,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # With retain_on_delete, `pulumi destroy` forgets the group instead of deleting it, so the
        # experiments' artifacts and the project files outlive a teardown.
        self.data = resources.ResourceGroup(
            f"{name}-data",
            resource_group_name=f"{args.name_prefix}-data",
            location=args.location,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=args.retain_data),
        )
        self.platform_name = self.platform.name
        self.data_name = self.data.name

        self.register_outputs({"platformName": self.platform_name, "dataName": self.data_name})
