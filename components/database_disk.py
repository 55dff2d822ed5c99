"""The Azure managed disk that holds MySQL's data (MLflow runs, metrics, users), in the data resource group,
and the role that lets the cluster attach it. With `dataRetention: retain` the disk survives `pulumi destroy`
like the storage account does; components/database_volume.py puts a static PersistentVolume and its claim
on it, which charts/mysql mounts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import authorization, compute

from components import roles
from components.kept_data import KeptData
from components.naming import mysql_disk_name


@dataclass
class DatabaseDiskArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the disk (the data group)."""
    location: str
    """Azure region (the cluster's)."""
    name_prefix: str
    """Start of the disk name (`<prefix>-mysql`)."""
    sku: str
    """Managed-disk SKU, e.g. StandardSSD_LRS."""
    size_gib: int
    """Disk size in GiB."""
    retain_on_delete: bool
    """Leave the disk in Azure on `pulumi destroy`."""
    protect: bool
    """Protect the disk: Pulumi refuses to delete or replace it."""
    kept_data: KeptData | None
    """Data kept by an earlier stack: import its disk (same inputs) instead of creating an empty one."""
    subscription_id: pulumi.Input[str]
    """Subscription of the role definition."""
    cluster_principal_id: pulumi.Input[str]
    """Principal of the AKS cluster's control-plane identity, which attaches the disk to a node."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """With `dataRetention: delete`, the cluster: destroy then deletes the disk only after the cluster (and
    so once nothing has it attached any more). Nothing with `retain`: `pulumi destroy --exclude-protected`
    keeps every dependency of the protected disk, and would keep the cluster too."""


class DatabaseDisk(pulumi.ComponentResource):
    disk: compute.Disk
    attach_access: authorization.RoleAssignment
    disk_id: pulumi.Output[str]
    """Resource id of the disk: the CSI volume handle of MySQL's PersistentVolume."""
    disk_name: pulumi.Output[str]

    def __init__(self, name: str, args: DatabaseDiskArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:DatabaseDisk", name, None, opts)

        self.disk = compute.Disk(
            f"{name}-disk",
            disk_name=mysql_disk_name(args.name_prefix),
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku=compute.DiskSkuArgs(name=args.sku),
            disk_size_gb=args.size_gib,
            creation_data=compute.CreationDataArgs(create_option=compute.DiskCreateOption.EMPTY),
            # No `zones`, on purpose: a disk without a zone attaches to the cluster's regional (non-zonal)
            # nodes (components/cluster.py declares no availability zones). An LRS disk pinned to a zone
            # would only attach to nodes in that zone; ZRS SKUs would also attach to zonal nodes.
            # No export or import through SAS URLs: the data only leaves through MySQL.
            network_access_policy=compute.NetworkAccessPolicy.DENY_ALL,
            public_network_access=compute.PublicNetworkAccess.DISABLED,
            opts=pulumi.ResourceOptions(
                parent=self,
                retain_on_delete=args.retain_on_delete,
                protect=args.protect,
                import_=args.kept_data.disk_id if args.kept_data else None,
                depends_on=args.depends_on,
            ),
        )
        # A disk outside the node resource group: the AKS documentation for static Azure Disk volumes asks
        # for the cluster identity to hold Contributor on the disk's resource group. Contributor on the
        # disk itself is the narrowest scope that covers it; nothing else in the data group is reachable.
        self.attach_access = roles.assign_role(
            f"{name}-cluster-attach",
            subscription_id=args.subscription_id,
            role=roles.CONTRIBUTOR,
            principal_id=args.cluster_principal_id,
            scope=self.disk.id,
            parent=self,
            # A retained disk sits under the data group's CanNotDelete lock, which refuses to delete this
            # assignment: destroy forgets it instead (its principal, the cluster's identity, goes anyway).
            retain_on_delete=args.retain_on_delete,
        )

        self.disk_id = self.disk.id
        self.disk_name = self.disk.name

        self.register_outputs({"diskId": self.disk_id, "diskName": self.disk_name})
