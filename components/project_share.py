"""The MLflow project file share, in a storage account of its own in the platform resource group.

Run Jobs mount the share through the Azure Files CSI driver with the account's key (SMB), and
components/project_files.py uploads the project with it: Azure Files takes no Entra ID token for either.
Azure's advice is to move Azure Files data to a separate account before turning shared key off on an
account (https://learn.microsoft.com/azure/storage/common/shared-key-authorization-prevent
#transition-azure-files-workloads), so the artifacts account (components/storage.py) refuses keys, and
this key opens nothing but the project files.

Nothing here is data: every `pulumi up` uploads mlflow_project/ from the repository again. So the account
lives and dies with the platform (no retain, no protect, no lock, no adoption), and `pulumi destroy
--exclude-protected` removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import storage

from components.naming import PROJECTS_SHARE, files_account_prefix, global_name_suffix


@dataclass
class ProjectShareArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the account (the platform group)."""
    location: str
    """Azure region."""
    name_prefix: str
    """Start of the account name; a random suffix makes it globally unique."""
    sku: str
    """Replication SKU, e.g. Standard_LRS (the data account's: run Jobs need the share as much)."""
    quota_gib: int
    """Quota of the project file share."""


class ProjectShare(pulumi.ComponentResource):
    account: storage.StorageAccount
    account_name: pulumi.Output[str]
    share_name: pulumi.Output[str]
    account_key: pulumi.Output[str]
    """First access key of this account (secret): mounts the share and uploads the project files."""

    def __init__(self, name: str, args: ProjectShareArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:ProjectShare", name, None, opts)

        suffix = global_name_suffix(name, self)
        self.account = storage.StorageAccount(
            f"{name}-account",
            account_name=suffix.apply(lambda s: f"{files_account_prefix(args.name_prefix)}{s}"),
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind=storage.Kind.STORAGE_V2,
            sku=storage.SkuArgs(name=args.sku),
            enable_https_traffic_only=True,
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            allow_blob_public_access=False,
            # Explicitly on (null means on too, but an Azure Policy default may differ): the CSI driver
            # mounts a static Azure Files volume with the name and key in a Secret
            # (https://learn.microsoft.com/azure/aks/azure-csi-files-storage-provision).
            allow_shared_key_access=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        share = storage.FileShare(
            f"{name}-share",
            share_name=PROJECTS_SHARE,
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            share_quota=args.quota_gib,
            enabled_protocols=storage.EnabledProtocols.SMB,
            opts=pulumi.ResourceOptions(parent=self),
        )
        keys = storage.list_storage_account_keys_output(
            account_name=self.account.name, resource_group_name=args.resource_group_name
        )

        self.account_name = self.account.name
        self.share_name = share.name
        self.account_key = pulumi.Output.secret(keys.keys[0].value)

        self.register_outputs(
            {"accountName": self.account_name, "shareName": self.share_name, "accountKey": self.account_key}
        )
