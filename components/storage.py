"""StorageV2 account (HTTPS only, TLS 1.2, no public blob access) with private blob containers for MLflow
artifacts and for database backups, and a file share for MLflow project files. A lifecycle rule deletes
backups older than their retention. With `dataRetention: retain` all of it survives `pulumi destroy`."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import storage

from components.kept_data import KeptData
from components.naming import (
    ARTIFACTS_CONTAINER,
    BACKUPS_CONTAINER,
    PROJECTS_SHARE,
    global_name_suffix,
    storage_account_prefix,
)


@dataclass
class StorageArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the account (the data group)."""
    location: str
    """Azure region."""
    name_prefix: str
    """Start of the account name; a random suffix makes it globally unique."""
    sku: str
    """Replication SKU, e.g. Standard_LRS."""
    file_share_quota_gib: int
    """Quota of the project file share."""
    retain_on_delete: bool
    """Leave account, container and share in Azure on `pulumi destroy`."""
    protect: bool = False
    """Protect account, container and share (and the name's suffix): Pulumi refuses to delete or replace
    them."""
    kept_data: KeptData | None = None
    """Data kept by an earlier stack: import its account, containers and share (same inputs) instead of
    creating new ones."""
    backup_retention_days: int = 30
    """Days a database backup is kept before the account's lifecycle rule deletes it."""


class Storage(pulumi.ComponentResource):
    account: storage.StorageAccount
    account_id: pulumi.Output[str]
    account_name: pulumi.Output[str]
    container_id: pulumi.Output[str]
    container_name: pulumi.Output[str]
    backups_container_id: pulumi.Output[str]
    backups_container_name: pulumi.Output[str]
    share_name: pulumi.Output[str]
    primary_key: pulumi.Output[str]
    """First access key of the account (secret): mounts the file share and uploads project files."""

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:Storage", name, None, opts)
        # The data outlives the platform: the account and both children are only forgotten on destroy,
        # never deleted (deleting the container or share alone would already lose the data).
        kept = args.kept_data

        def keep(import_id: str | None) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(
                parent=self,
                retain_on_delete=args.retain_on_delete,
                protect=args.protect,
                import_=import_id if kept else None,
            )

        # Storage account names are global across Azure: 3-24 lowercase letters and digits. An adopted
        # account keeps the name it has (its random suffix came from the stack that created it).
        if kept:
            account_name: pulumi.Input[str] = kept.storage_account
        else:
            suffix = global_name_suffix(name, self, protect=args.protect)
            account_name = suffix.apply(lambda s: f"{storage_account_prefix(args.name_prefix)}{s}")
        self.account = storage.StorageAccount(
            f"{name}-account",
            account_name=account_name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind=storage.Kind.STORAGE_V2,
            sku=storage.SkuArgs(name=args.sku),
            enable_https_traffic_only=True,
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            allow_blob_public_access=False,
            opts=keep(kept and kept.storage_account_id),
        )
        container = storage.BlobContainer(
            f"{name}-artifacts",
            container_name=ARTIFACTS_CONTAINER,
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            public_access=storage.PublicAccess.NONE,
            opts=keep(kept and kept.container_id),
        )
        backups = storage.BlobContainer(
            f"{name}-backups",
            container_name=BACKUPS_CONTAINER,
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            public_access=storage.PublicAccess.NONE,
            opts=keep(kept and kept.backups_container_id),
        )
        # The storage account enforces the backups' retention, whatever the backup job does: blobs in the
        # backups container are deleted this many days after they were written.
        storage.ManagementPolicy(
            f"{name}-backup-retention",
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            management_policy_name="default",  # an account has one policy, and this is its name
            policy=storage.ManagementPolicySchemaArgs(
                rules=[
                    storage.ManagementPolicyRuleArgs(
                        name="expire-database-backups",
                        enabled=True,
                        type=storage.RuleType.LIFECYCLE,
                        definition=storage.ManagementPolicyDefinitionArgs(
                            filters=storage.ManagementPolicyFilterArgs(
                                blob_types=["blockBlob"], prefix_match=[f"{BACKUPS_CONTAINER}/"]
                            ),
                            actions=storage.ManagementPolicyActionArgs(
                                base_blob=storage.ManagementPolicyBaseBlobArgs(
                                    delete=storage.DateAfterModificationArgs(
                                        days_after_modification_greater_than=args.backup_retention_days
                                    )
                                )
                            ),
                        ),
                    )
                ]
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        share = storage.FileShare(
            f"{name}-projects",
            share_name=PROJECTS_SHARE,
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            share_quota=args.file_share_quota_gib,
            enabled_protocols=storage.EnabledProtocols.SMB,
            opts=keep(kept and kept.share_id),
        )

        keys = storage.list_storage_account_keys_output(
            account_name=self.account.name, resource_group_name=args.resource_group_name
        )
        self.primary_key = pulumi.Output.secret(keys.keys[0].value)
        self.account_id = self.account.id
        self.account_name = self.account.name
        self.container_id = container.id
        self.container_name = container.name
        self.backups_container_id = backups.id
        self.backups_container_name = backups.name
        self.share_name = share.name

        self.register_outputs(
            {
                "accountName": self.account_name,
                "containerName": self.container_name,
                "backupsContainerName": self.backups_container_name,
                "shareName": self.share_name,
                "primaryKey": self.primary_key,
            }
        )
