"""StorageV2 account for the team's blob data (HTTPS only, TLS 1.2, no public blob access): private
containers for MLflow artifacts and for database backups.

- Only Microsoft Entra ID reaches the data: shared key access is off, so no account key (or SAS made from
  one) can read or delete an artifact. The tracking server and its Jobs use workload identity.
- Deleted and overwritten blobs stay recoverable for `soft_delete_retention_days`: blob versioning, blob
  soft delete and container soft delete. The lifecycle policy deletes backups after their retention and
  old previous versions, so what is kept stays bounded.
- A backup is write-once: the backups container's time-based retention policy keeps every backup from
  deletion and overwrite for `backup_retention_days`, whoever asks; the lifecycle rule deletes it after.
- With `dataRetention: retain` all of it survives `pulumi destroy`.

The project file share is mounted with a key (SMB), so it has an account of its own
(components/project_share.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import storage

from components.kept_data import KeptData
from components.naming import (
    ARTIFACTS_CONTAINER,
    BACKUPS_CONTAINER,
    BACKUPS_RETENTION_POLICY,
    MANAGEMENT_POLICY,
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
    retain_on_delete: bool
    """Leave the account, its containers and its data protection settings in Azure on `pulumi destroy`."""
    soft_delete_retention_days: int
    """Days a deleted blob, a previous version or a deleted container stays recoverable."""
    protect: bool = False
    """Protect all of them (and the name's suffix): Pulumi refuses to delete or replace them."""
    kept_data: KeptData | None = None
    """Data kept by an earlier stack: import its account, containers and lifecycle policy (same inputs)
    instead of creating new ones."""
    backup_retention_days: int = 30
    """Days a database backup is immutable (no delete, no overwrite), after which the account's lifecycle
    rule deletes it."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What the account waits for: the data group's lock, which `pulumi destroy --exclude-protected`
    then keeps with the account."""


def _expire(
    rule: str, container: str, actions: storage.ManagementPolicyActionArgs
) -> storage.ManagementPolicyRuleArgs:
    """A lifecycle rule applying `actions` to the block blobs of one container."""
    return storage.ManagementPolicyRuleArgs(
        name=rule,
        enabled=True,
        type=storage.RuleType.LIFECYCLE,
        definition=storage.ManagementPolicyDefinitionArgs(
            filters=storage.ManagementPolicyFilterArgs(
                blob_types=["blockBlob"], prefix_match=[f"{container}/"]
            ),
            actions=actions,
        ),
    )


def _versions_older_than(days: int) -> storage.ManagementPolicyVersionArgs:
    """Delete previous versions more than `days` days after they were created."""
    return storage.ManagementPolicyVersionArgs(
        delete=storage.DateAfterCreationArgs(days_after_creation_greater_than=days)
    )


class Storage(pulumi.ComponentResource):
    account: storage.StorageAccount
    backups_retention: storage.BlobContainerImmutabilityPolicy
    account_id: pulumi.Output[str]
    account_name: pulumi.Output[str]
    container_id: pulumi.Output[str]
    container_name: pulumi.Output[str]
    backups_container_id: pulumi.Output[str]
    backups_container_name: pulumi.Output[str]

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:Storage", name, None, opts)
        # The data outlives the platform: the account and its children are only forgotten on destroy,
        # never deleted (deleting a container alone would already lose the data).
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
            # Entra ID only: an account key can no longer read or delete artifacts or backups. Nothing
            # needs one: the server, backup and gc authenticate with workload identity
            # (DefaultAzureCredential), and azure-native creates containers, policies and properties
            # through Azure Resource Manager, not the blob endpoint (pulumi/pulumi-azure-native#29;
            # only its storage.Blob, unused here, is data plane: pulumi/pulumi-azure-native#2015).
            # https://learn.microsoft.com/azure/storage/common/shared-key-authorization-prevent
            allow_shared_key_access=False,
            # The portal then browses blobs with the signed-in user's Entra ID role, not a key.
            default_to_o_auth_authentication=True,
            opts=pulumi.ResourceOptions.merge(
                keep(kept and kept.storage_account_id), pulumi.ResourceOptions(depends_on=args.depends_on)
            ),
        )
        container = storage.BlobContainer(
            f"{name}-artifacts",
            container_name=ARTIFACTS_CONTAINER,
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            public_access=storage.PublicAccess.NONE,
            opts=keep(kept and kept.container_id),
        )
        # Version-level WORM: each backup version gets the container's retention policy (below) when it is
        # written, and nobody deletes or overwrites it before that ends. Versioning (below) is its
        # prerequisite. https://learn.microsoft.com/azure/storage/blobs/immutable-version-level-worm-policies
        # Azure sets it only when a container is created: a container an older stack made (kept, or this
        # stack's own) keeps its state, never a replacement (ignored, also in an import's comparison:
        # pulumi/pulumi developer-docs/architecture/import.md). The policy then applies at container level,
        # with the same protection, until `az storage container-rm migrate-vlw` (docs/backup-and-restore.md).
        backups = storage.BlobContainer(
            f"{name}-backups",
            container_name=BACKUPS_CONTAINER,
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            public_access=storage.PublicAccess.NONE,
            immutable_storage_with_versioning=storage.ImmutableStorageWithVersioningArgs(enabled=True),
            opts=pulumi.ResourceOptions.merge(
                keep(kept and kept.backups_container_id),
                pulumi.ResourceOptions(ignore_changes=["immutableStorageWithVersioning"]),
            ),
        )
        # Unlocked: it blocks every delete and overwrite all the same, but (unlike a locked one, which
        # azure-native cannot lock anyway) it can still be shortened with backupRetentionDays, and a
        # backup can be released on purpose: its version's policy is removed with the
        # immutableStorage/runAsSuperUser data action, which Storage Blob Data Contributor (both workload
        # identities' role) does not have (Owner-level data roles do):
        # https://learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory
        # #permissions-for-calling-data-operations. Locking is an operator's irreversible choice
        # (docs/backup-and-restore.md). Locked or not, the container and the account are deleted only
        # once the container is empty (immutable-version-level-worm-policies#deletion).
        if kept and kept.backups_retention_days not in (0, args.backup_retention_days):
            raise ValueError(
                f"backupRetentionDays: must be {kept.backups_retention_days} to adopt the kept backups "
                f"container (its retention policy has that many days; change it after the adoption), "
                f"got {args.backup_retention_days}"
            )
        self.backups_retention = storage.BlobContainerImmutabilityPolicy(
            f"{name}-backups-retention",
            account_name=self.account.name,
            container_name=backups.name,
            resource_group_name=args.resource_group_name,
            immutability_policy_name=BACKUPS_RETENTION_POLICY,
            immutability_period_since_creation_in_days=args.backup_retention_days,
            # Backups are block blobs committed once: nothing may be added to a protected one.
            allow_protected_append_writes=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                # Never deleted by Pulumi, whatever dataRetention: azure-native sends the delete without the
                # etag Azure demands (pulumi/pulumi-azure-native#2156); the policy goes with its container.
                retain_on_delete=True,
                protect=args.protect,
                import_=kept.backups_retention_id if kept else None,
            ),
        )
        # Recoverable for N days: an overwritten or deleted blob becomes a previous version (versioning), a
        # deleted version or blob is soft-deleted for N days, and so is a deleted container. Permanent
        # delete of soft-deleted versions stays off. The workload identities' Storage Blob Data Contributor
        # cannot delete versions either (that takes Storage Blob Data Owner:
        # https://learn.microsoft.com/azure/storage/blobs/versioning-overview#authorize-operations-on-blob-versions).
        # A singleton child of the account: creating it is a PUT, so adopted data needs no import.
        retention = storage.DeleteRetentionPolicyArgs(enabled=True, days=args.soft_delete_retention_days)
        storage.BlobServiceProperties(
            f"{name}-blob-service",
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            blob_services_name="default",
            is_versioning_enabled=True,
            delete_retention_policy=retention,
            container_delete_retention_policy=retention,
            # Retained and protected with the data: azure-native "deletes" it by resetting the
            # service's properties, which would switch the protection off on kept data.
            opts=keep(None),
        )
        # The account enforces the retention, whatever the backup job or gc do, and bounds what versioning
        # keeps: a lifecycle delete of a blob or version is itself soft-deleted for N days
        # (https://learn.microsoft.com/azure/storage/blobs/lifecycle-management-policy-delete), and a
        # version's age counts from its creation. So a backup goes R days after it was written (its
        # version too), then stays N days soft-deleted; an artifact's previous version (overwritten, or
        # deleted by gc) is deleted once it is N days old, then stays N days soft-deleted.
        # A backup is immutable until R days after its creation; the rule acts only once it is *more* than R
        # days old, so it never meets a backup still under retention (a run that did would be refused and
        # retried the next day).
        storage.ManagementPolicy(
            f"{name}-lifecycle",
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            management_policy_name=MANAGEMENT_POLICY,
            policy=storage.ManagementPolicySchemaArgs(
                rules=[
                    _expire(
                        "expire-database-backups",
                        BACKUPS_CONTAINER,
                        storage.ManagementPolicyActionArgs(
                            base_blob=storage.ManagementPolicyBaseBlobArgs(
                                delete=storage.DateAfterModificationArgs(
                                    days_after_modification_greater_than=args.backup_retention_days
                                )
                            ),
                            version=_versions_older_than(args.backup_retention_days),
                        ),
                    ),
                    _expire(
                        "expire-replaced-artifacts",
                        ARTIFACTS_CONTAINER,
                        storage.ManagementPolicyActionArgs(
                            version=_versions_older_than(args.soft_delete_retention_days)
                        ),
                    ),
                ]
            ),
            # Kept with the data: the lock refuses its deletion, and it keeps bounding the kept data.
            opts=pulumi.ResourceOptions.merge(
                keep(kept and kept.management_policy_id),
                # Its name before it expired versions too.
                pulumi.ResourceOptions(aliases=[pulumi.Alias(name=f"{name}-backup-retention")]),
            ),
        )

        self.account_id = self.account.id
        self.account_name = self.account.name
        self.container_id = container.id
        self.container_name = container.name
        self.backups_container_id = backups.id
        self.backups_container_name = backups.name

        self.register_outputs(
            {
                "accountName": self.account_name,
                "containerName": self.container_name,
                "backupsContainerName": self.backups_container_name,
            }
        )
