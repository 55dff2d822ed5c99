"""The data a stack with `dataRetention: retain` leaves in Azure, found again by name for adoption.

`pulumi destroy --exclude-protected` keeps the data resources in Azure and in the stack's state, so the
same stack's next `pulumi up` simply uses them. A *new* stack (or the same one after `pulumi stack rm`)
adopts them with one config value, `dataStorageAccount` (the old stack's `storageAccount` output): the
program then declares the data resource group with its lock, the storage account, its containers
(artifacts, backups), the backups' retention policy and the lifecycle policy, and the MySQL disk with
the `import` option and the same inputs as the stack that created them, so the first `pulumi up` imports
them instead of creating them, and no later one replaces them (Pulumi keeps an imported resource whose id
matches, pulumi/pulumi developer-docs/architecture/import.md). The account's blob service properties (soft
delete, versioning) are not imported: azure-native treats them as a singleton child, whose create is a
plain PUT on the existing settings (pulumi/pulumi-azure-native#4738).

The backups container's immutability policy is such a child too, with one difference: azure-native
creates it with a PUT only while Azure reports the empty default (a period of 0 days,
provider/pkg/openapi/defaults/defaultResourcesState.go), and refuses to create over a real one. So the
kept policy is read first: imported when the keeping stack had one, created when it was older than
immutable backups.
"""

from __future__ import annotations

from dataclasses import dataclass

from pulumi_azure_native import authorization, storage

from components.naming import (
    ARTIFACTS_CONTAINER,
    BACKUPS_CONTAINER,
    BACKUPS_RETENTION_POLICY,
    DATA_LOCK,
    MANAGEMENT_POLICY,
    REQUIRE_SECURE_TRANSPORT,
    data_group_name,
    mysql_disk_name,
    mysql_private_dns_zone,
    mysql_server_name,
    virtual_network_name,
)


@dataclass(frozen=True)
class KeptData:
    """Azure resource ids of a stack's kept data resources (what `import` takes)."""

    subscription_id: str
    name_prefix: str
    storage_account: str
    backups_retention_days: int = 0
    """Days of the backups container's immutability policy; 0: it has none (kept by a stack older than
    immutable backups), and the adopting stack creates it."""

    @classmethod
    def in_current_subscription(cls, name_prefix: str, storage_account: str) -> KeptData:
        """The kept data of prefix `name_prefix` in the subscription `pulumi up` deploys to."""
        policy = storage.get_blob_container_immutability_policy(
            account_name=storage_account,
            container_name=BACKUPS_CONTAINER,
            immutability_policy_name=BACKUPS_RETENTION_POLICY,
            resource_group_name=data_group_name(name_prefix),
        )
        return cls(
            authorization.get_client_config().subscription_id,
            name_prefix,
            storage_account,
            policy.immutability_period_since_creation_in_days or 0,
        )

    @property
    def resource_group_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{data_group_name(self.name_prefix)}"

    @property
    def storage_account_id(self) -> str:
        return f"{self.resource_group_id}/providers/Microsoft.Storage/storageAccounts/{self.storage_account}"

    @property
    def container_id(self) -> str:
        return f"{self.storage_account_id}/blobServices/default/containers/{ARTIFACTS_CONTAINER}"

    @property
    def backups_container_id(self) -> str:
        return f"{self.storage_account_id}/blobServices/default/containers/{BACKUPS_CONTAINER}"

    @property
    def backups_retention_id(self) -> str | None:
        """The backups container's immutability policy, or None when the kept container has none."""
        if not self.backups_retention_days:
            return None
        return f"{self.backups_container_id}/immutabilityPolicies/{BACKUPS_RETENTION_POLICY}"

    @property
    def management_policy_id(self) -> str:
        return f"{self.storage_account_id}/managementPolicies/{MANAGEMENT_POLICY}"

    @property
    def lock_id(self) -> str:
        return f"{self.resource_group_id}/providers/Microsoft.Authorization/locks/{DATA_LOCK}"

    @property
    def disk_id(self) -> str:
        return (
            f"{self.resource_group_id}/providers/Microsoft.Compute/disks/{mysql_disk_name(self.name_prefix)}"
        )

    # `database: flexibleServer`: the network the server lives in, and the server with its databases.
    @property
    def virtual_network_id(self) -> str:
        return (
            f"{self.resource_group_id}/providers/Microsoft.Network/virtualNetworks/"
            f"{virtual_network_name(self.name_prefix)}"
        )

    @property
    def private_dns_zone_id(self) -> str:
        return (
            f"{self.resource_group_id}/providers/Microsoft.Network/privateDnsZones/"
            f"{mysql_private_dns_zone(self.name_prefix)}"
        )

    @property
    def dns_zone_link_id(self) -> str:
        return f"{self.private_dns_zone_id}/virtualNetworkLinks/{virtual_network_name(self.name_prefix)}"

    def mysql_server(self, server_name: str | None = None) -> AdoptedServer:
        """The kept flexible server (its name follows from the storage account's), or `server_name`."""
        name = server_name or mysql_server_name(self.name_prefix, self.storage_account)
        return AdoptedServer.in_data_group(self.subscription_id, self.name_prefix, name)


@dataclass(frozen=True)
class AdoptedServer:
    """A flexible server in the data resource group that the stack imports instead of creating one: the
    kept one (with `dataStorageAccount`) or one restored from the stack's (`databaseServerName`)."""

    server_id: str

    @classmethod
    def in_current_subscription(cls, name_prefix: str, server_name: str) -> AdoptedServer:
        """Server `server_name` in the data group of `name_prefix`, where `pulumi up` deploys."""
        return cls.in_data_group(authorization.get_client_config().subscription_id, name_prefix, server_name)

    @classmethod
    def in_data_group(cls, subscription_id: str, name_prefix: str, server_name: str) -> AdoptedServer:
        group_id = f"/subscriptions/{subscription_id}/resourceGroups/{data_group_name(name_prefix)}"
        return cls(f"{group_id}/providers/Microsoft.DBforMySQL/flexibleServers/{server_name}")

    @property
    def name(self) -> str:
        return self.server_id.rsplit("/", 1)[1]

    def database_id(self, database: str) -> str:
        return f"{self.server_id}/databases/{database}"

    @property
    def configuration_id(self) -> str:
        return f"{self.server_id}/configurations/{REQUIRE_SECURE_TRANSPORT}"
