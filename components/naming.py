"""Names of the Azure resources, and random suffixes for those that must be unique across all of Azure
(storage accounts, registries). The data resources' names are written here once: the components that
create them, the adoption of kept data (components/kept_data.py) and the data guard all use them."""

from __future__ import annotations

import pulumi
import pulumi_random as random

GLOBAL_SUFFIX_LENGTH = 8
"""Random lowercase letters and digits appended to a globally unique name."""
ARTIFACTS_CONTAINER = "mlflow-artifacts"
BACKUPS_CONTAINER = "mlflow-backups"
PROJECTS_SHARE = "mlflow-projects"
# The public endpoint's certificates, keys and ACME account (components/certificate_share.py).
CERTIFICATES_SHARE = "mlflow-tls"
# The data group's CanNotDelete lock while `dataRetention: retain` (components/resource_groups.py).
DATA_LOCK = "mlflow-aks-keep-data"
# A storage account has one lifecycle management policy, and this is its name.
MANAGEMENT_POLICY = "default"
# A container has one immutability policy (its default time-based retention), and this is its name.
BACKUPS_RETENTION_POLICY = "default"

# `database: flexibleServer`: the virtual network's subnets (components/private_network.py), the databases
# on the server, like charts/mysql creates them in the cluster, and the server parameter that requires TLS.
CLUSTER_SUBNET = "aks-nodes"
DATABASE_SUBNET = "mysql-flexible-server"
MYSQL_DATABASES = ("mlflow", "mlflow_auth", "mlflow_oidc")
REQUIRE_SECURE_TRANSPORT = "require_secure_transport"


def platform_group_name(name_prefix: str) -> str:
    return f"{name_prefix}-platform"


def cluster_name(name_prefix: str) -> str:
    return f"{name_prefix}-aks"


def data_group_name(name_prefix: str) -> str:
    return f"{name_prefix}-data"


def mysql_disk_name(name_prefix: str) -> str:
    return f"{name_prefix}-mysql"


def tracking_identity_name(name_prefix: str) -> str:
    """The tracking server's managed identity (components/workload_identity.py)."""
    return f"{name_prefix}-tracking-server"


def backup_identity_name(name_prefix: str) -> str:
    """The backup Job's managed identity (components/workload_identity.py)."""
    return f"{name_prefix}-backup"


def virtual_network_name(name_prefix: str) -> str:
    return f"{name_prefix}-vnet"


def mysql_private_dns_zone(name_prefix: str) -> str:
    """The private DNS zone of the flexible server: it must end in `.mysql.database.azure.com`
    (https://learn.microsoft.com/azure/mysql/flexible-server/concepts-networking-vnet#private-dns-zone-and-virtual-network-link)."""
    return f"{name_prefix}.private.mysql.database.azure.com"


def mysql_server_name(name_prefix: str, storage_account: str) -> str:
    """The flexible server's name, `<prefix>-mysql-<suffix>`: its DNS name is global, so it takes the random
    suffix of the data storage account (`<prefix>data<suffix>`), which adopting kept data already knows."""
    return f"{name_prefix}-mysql-{storage_account.removeprefix(storage_account_prefix(name_prefix))}"


def storage_account_prefix(name_prefix: str) -> str:
    """The storage account's name before its random suffix (3-24 lowercase letters and digits in all)."""
    return f"{name_prefix}data"


def files_account_prefix(name_prefix: str) -> str:
    """The project files account's name before its random suffix (components/project_share.py)."""
    return f"{name_prefix}files"


def certificates_account_prefix(name_prefix: str) -> str:
    """The certificate account's name before its random suffix (components/certificate_share.py)."""
    return f"{name_prefix}tls"


def global_name_suffix(name: str, parent: pulumi.Resource, *, protect: bool = False) -> pulumi.Output[str]:
    """A random suffix, fixed for the life of the stack, for a name no other Azure tenant may hold.

    Lowercase letters and digits only: the one alphabet both storage account and registry names accept.
    """
    suffix = random.RandomString(
        f"{name}-suffix",
        length=GLOBAL_SUFFIX_LENGTH,
        lower=True,
        upper=False,
        numeric=True,
        special=False,
        # A protected resource's name must not change under it: the suffix is protected with it.
        opts=pulumi.ResourceOptions(parent=parent, protect=protect),
    )
    return suffix.result
