"""The two resource groups: `platform` (cluster, registry, monitoring, identities, project files) and
`data` (the artifacts and backups storage account and the MySQL disk), and, while `dataRetention:
retain`, the CanNotDelete lock that keeps anyone (Pulumi, the portal, the CLI) from deleting the data
group or anything in it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import authorization, resources

from components.kept_data import KeptData
from components.naming import DATA_LOCK, data_group_name, platform_group_name


@dataclass
class ResourceGroupsArgs:
    location: str
    """Azure region of both groups."""
    name_prefix: str
    """Prefix of both group names."""
    retain_data: bool
    """Keep the data group in Azure on `pulumi destroy` (`dataRetention: retain`), and lock it against
    deletion."""
    protect_data: bool = False
    """Protect the data group: Pulumi refuses to delete or replace it."""
    kept_data: KeptData | None = None
    """Data kept by an earlier stack: import its group (and its lock) instead of creating them."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What must exist first (the data guard): every other resource derives from these groups."""


class ResourceGroups(pulumi.ComponentResource):
    platform: resources.ResourceGroup
    data: resources.ResourceGroup
    data_lock: authorization.ManagementLockAtResourceGroupLevel | None
    """The data group's CanNotDelete lock (retain only). The data resources depend on it, so that
    `pulumi destroy --exclude-protected` keeps it with them."""
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
        # experiments' artifacts, the backups and MySQL's disk outlive a teardown.
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
        # While retained, nobody deletes the data by accident: not `pulumi destroy`, not the portal, not
        # `az group delete`. The lock is not `protect`ed: switching to `dataRetention: delete` removes it
        # on the next `pulumi up`. It survives `pulumi destroy --exclude-protected` because the protected
        # storage account depends on it, and the CLI keeps every dependency of a protected resource
        # (getProtectedExcludes in pulumi/pulumi pkg/cmd/pulumi/operations/destroy.go).
        # A CanNotDelete lock also refuses to delete the role assignments at or under the group
        # (https://learn.microsoft.com/azure/azure-resource-manager/management/lock-resources
        # #considerations-before-applying-your-locks): those are retained on delete while the lock is on.
        self.data_lock = None
        if args.retain_data:
            self.data_lock = authorization.ManagementLockAtResourceGroupLevel(
                f"{name}-data-lock",
                lock_name=DATA_LOCK,
                resource_group_name=self.data.name,
                level=authorization.LockLevel.CAN_NOT_DELETE,
                notes=(
                    "mlflow-aks dataRetention: retain keeps this group's data (artifacts, backups, MySQL "
                    "disk). To delete it on purpose, see docs/operations.md, 'Delete kept data for good'."
                ),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    import_=args.kept_data.lock_id if args.kept_data else None,
                ),
            )
        self.platform_name = self.platform.name
        self.data_name = self.data.name

        self.register_outputs({"platformName": self.platform_name, "dataName": self.data_name})
