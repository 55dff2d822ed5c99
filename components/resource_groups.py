"""The two resource groups: `platform` (cluster, registry, monitoring, identities) and `data` (storage and
the MySQL disk)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import resources

from components.kept_data import KeptData
from components.naming import data_group_name, platform_group_name


@dataclass
class ResourceGroupsArgs:
    location: str
    """Azure region of both groups."""
    name_prefix: str
    """Prefix of both group names."""
    retain_data: bool
    """Keep the data group in Azure on `pulumi destroy` (`dataRetention: retain`)."""
    protect_data: bool = False
    """Protect the data group: Pulumi refuses to delete or replace it."""
    kept_data: KeptData | None = None
    """Data kept by an earlier stack: import its group instead of creating one."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What must exist first (the data guard): every other resource derives from these groups."""


class ResourceGroups(pulumi.ComponentResource):
    platform: resources.ResourceGroup
    data: resources.ResourceGroup
    platform_name: pulumi.Output[str]
    data_name: pulumi.Output[str]

    def __init__(self, name: str, args: ResourceGroupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:ResourceGroups", name, None, opts)

        self.platform = resources.ResourceGroup(
            f"{name}-platform",
            resource_group_name=platform_group_name(args.name_prefix),
            location=args.location,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        # With retain_on_delete, `pulumi destroy` forgets the group instead of deleting it, so the
        # experiments' artifacts and the project files outlive a teardown.
        self.data = resources.ResourceGroup(
            f"{name}-data",
            resource_group_name=data_group_name(args.name_prefix),
            location=args.location,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=args.depends_on,
                retain_on_delete=args.retain_data,
                protect=args.protect_data,
                import_=args.kept_data.resource_group_id if args.kept_data else None,
            ),
        )
        self.platform_name = self.platform.name
        self.data_name = self.data.name

        self.register_outputs({"platformName": self.platform_name, "dataName": self.data_name})
