"""`database: flexibleServer`: Azure Database for MySQL Flexible Server in the data resource group, with the
databases the tracking server uses, in place of MySQL in the cluster and its disk.

The server is reachable only from the cluster's virtual network (components/private_network.py: a
delegated subnet, a private DNS zone, public network access disabled) and only over TLS
(`require_secure_transport` ON; the chart's clients verify its certificate). Azure takes its backups: a
point-in-time restore to any second within `backup_retention_days`, geo-redundant copies if asked for.
Like the MySQL disk, it is the team's data: protected and retained under `dataRetention: retain`, imported
when kept data is adopted, or when the stack adopts a server restored from its own (`adopted`).

The tracking server connects as the server's administrator, a login and password Pulumi generates
(secret end to end). A narrower MySQL user would take SQL run against the server (CREATE USER, GRANT),
which no azure-native resource does and the program has no network path for: the server is private. The
admin holds the rights Azure gives it, over this server's databases, which only the platform uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_random as random
from pulumi_azure_native import dbformysql

from components.kept_data import AdoptedServer
from components.naming import MYSQL_DATABASES, REQUIRE_SECURE_TRANSPORT
from components.server_password import ServerAdminPassword

ADMIN_LOGIN = "mlflow"
# MySQL 8.0 as the API names it; Azure upgrades the major version in place (`az mysql flexible-server
# upgrade`), which the program then leaves alone (ignore_changes below).
VERSION = "8.0.21"
# The smallest a flexible server takes; it grows by itself (auto-grow), which high availability requires
# anyway (https://learn.microsoft.com/azure/mysql/flexible-server/concepts-high-availability#limitations).
STORAGE_GIB = 20
# As charts/mysql creates the databases in the cluster (templates/configmap-initdb.yaml).
CHARSET = "utf8mb4"
COLLATION = "utf8mb4_bin"
# What Azure decides or a restore carries, which the program does not set: the zones, the storage it grew
# to, an in-place major version upgrade.
AZURE_MANAGED = [
    "availabilityZone",
    "highAvailability.standbyAvailabilityZone",
    "storage.storageSizeGB",
    "version",
]
# What an adopted server is imported without (the import compares the program's inputs with what Azure
# returns): its password, which Azure never returns (ServerAdminPassword sets it), what a restored server
# records about its creation, and high availability, which a restore turns off
# (https://learn.microsoft.com/azure/mysql/flexible-server/concepts-backup-restore#restore).
ADOPTION_ONLY = [
    "administratorLoginPassword",
    "createMode",
    "restorePointInTime",
    "sourceServerResourceId",
    "highAvailability",
]


@dataclass
class DatabaseServerArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the server (the data group)."""
    location: str
    """Azure region (the cluster's)."""
    server_name: pulumi.Input[str]
    """The server's name; its DNS name `<name>.mysql.database.azure.com` is global."""
    sku: str
    """Compute SKU, e.g. Standard_B1ms."""
    tier: str
    """Compute tier of that SKU: Burstable, GeneralPurpose or MemoryOptimized (Business Critical)."""
    high_availability: str
    """`Disabled`, `SameZone` or `ZoneRedundant`."""
    geo_redundant_backup: bool
    """Copy the backups to the paired region."""
    backup_retention_days: int
    """Days of point-in-time restore."""
    delegated_subnet_id: pulumi.Input[str]
    """Subnet delegated to Microsoft.DBforMySQL/flexibleServers."""
    private_dns_zone_id: pulumi.Input[str]
    """Private DNS zone (`….private.mysql.database.azure.com`) linked to the cluster's network."""
    retain_on_delete: bool
    """Leave the server (and its databases) in Azure on `pulumi destroy`."""
    protect: bool
    """Protect the server and its databases: Pulumi refuses to delete or replace them."""
    adopted: AdoptedServer | None = None
    """An existing server to import instead of creating one: the kept one, or one restored from it."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """The DNS zone's link to the network (the server needs it) and the data group's lock."""


class DatabaseServer(pulumi.ComponentResource):
    admin_password: random.RandomPassword
    server: dbformysql.Server
    secure_transport: dbformysql.Configuration
    databases: dict[str, dbformysql.Database]
    password_reset: ServerAdminPassword | None
    """Sets an adopted server's admin password to the stack's (None for a server the stack created)."""
    server_name: pulumi.Output[str]
    host: pulumi.Output[str]
    """The server's DNS name, the one its TLS certificate is for."""
    admin_login: str
    admin_password_value: pulumi.Output[str]
    """The admin's password (secret)."""

    def __init__(self, name: str, args: DatabaseServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:DatabaseServer", name, None, opts)
        adopted = args.adopted

        # Letters and digits only: it travels in the chart's database URIs (3 of Azure's 4 character
        # classes, as its password rules ask).
        self.admin_password = random.RandomPassword(
            f"{name}-admin-password",
            length=32,
            special=False,
            min_lower=2,
            min_upper=2,
            min_numeric=2,
            opts=pulumi.ResourceOptions(parent=self),
        )
        password = pulumi.Output.secret(self.admin_password.result)

        def data_options(import_id: str | None, **extra) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(
                parent=self,
                retain_on_delete=args.retain_on_delete,
                protect=args.protect,
                import_=import_id,
                **extra,
            )

        self.server = dbformysql.Server(
            f"{name}-server",
            server_name=args.server_name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            version=VERSION,
            administrator_login=ADMIN_LOGIN,
            administrator_login_password=None if adopted else password,
            sku=dbformysql.MySQLServerSkuArgs(name=args.sku, tier=args.tier),
            storage=dbformysql.StorageArgs(storage_size_gb=STORAGE_GIB, auto_grow="Enabled"),
            backup=dbformysql.BackupArgs(
                backup_retention_days=args.backup_retention_days,
                geo_redundant_backup="Enabled" if args.geo_redundant_backup else "Disabled",
            ),
            high_availability=dbformysql.HighAvailabilityArgs(mode=args.high_availability),
            # Private access only: no public endpoint, no firewall rule can open one.
            network=dbformysql.NetworkArgs(
                delegated_subnet_resource_id=args.delegated_subnet_id,
                private_dns_zone_resource_id=args.private_dns_zone_id,
                public_network_access="Disabled",
            ),
            opts=data_options(
                adopted.server_id if adopted else None,
                depends_on=args.depends_on,
                ignore_changes=[*AZURE_MANAGED, *(ADOPTION_ONLY if adopted else [])],
                additional_secret_outputs=["administratorLoginPassword"],
            ),
        )
        # ON is Azure's default too; declared so that nobody turns it off unnoticed. A server parameter
        # always exists, so creating it is a PUT (pulumi-azure-native provider/pkg/openapi/defaults/
        # defaultResourcesState.go lists these configurations).
        self.secure_transport = dbformysql.Configuration(
            f"{name}-require-secure-transport",
            configuration_name=REQUIRE_SECURE_TRANSPORT,
            server_name=self.server.name,
            resource_group_name=args.resource_group_name,
            value="ON",
            source="user-override",
            opts=data_options(adopted.configuration_id if adopted else None),
        )
        self.databases = {
            database: dbformysql.Database(
                f"{name}-{database.replace('_', '-')}",
                database_name=database,
                server_name=self.server.name,
                resource_group_name=args.resource_group_name,
                charset=CHARSET,
                collation=COLLATION,
                opts=data_options(adopted.database_id(database) if adopted else None),
            )
            for database in MYSQL_DATABASES
        }
        # An adopted server has the password of the stack that created it (or of the moment it was
        # restored from): it takes this stack's, as the in-cluster MySQL does on a kept disk.
        self.password_reset = None
        if adopted:
            self.password_reset = ServerAdminPassword(
                f"{name}-admin-password-reset",
                server_id=self.server.id,
                password=password,
                opts=pulumi.ResourceOptions(parent=self),
            )

        self.server_name = self.server.name
        self.host = self.server.fully_qualified_domain_name
        self.admin_login = ADMIN_LOGIN
        self.admin_password_value = password

        self.register_outputs({"serverName": self.server_name, "host": self.host})
