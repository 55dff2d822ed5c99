"""Stack settings: `pulumi.Config` read into one frozen, validated `Settings` object.

Types and defaults come from the `config:` block of Pulumi.yaml (the one place they are written down);
this module adds the rules. `load_settings()` checks every key and raises one `SettingsError` listing
every bad key, its rule and the offending value, before the program declares any resource.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml

from components.chart_values import BACKUP_SERVICE_ACCOUNT, MLFLOW_PERMISSIONS
from components.naming import storage_account_prefix

REPO_ROOT = Path(__file__).resolve().parent
PROJECT_FILE = REPO_ROOT / "Pulumi.yaml"
MLPROJECT_FILE = REPO_ROOT / "mlflow_project" / "MLproject"
# Release name of charts/mlflow_setup in the namespace; run releases must not take it.
SETUP_RELEASE = "mlflow"
# A run's Job is `<name>-mlflow-project` and must stay within 63 characters.
RUN_NAME_MAX = 63 - len("-mlflow-project")
EXPOSURES = ("private", "public")
# `basic`: MLflow's own users and passwords; `entra`: people sign in with Entra ID (components/sign_in.py).
AUTH_MODES = ("basic", "entra")
# Keys read only with `auth: entra`: set with `basic`, they would be silently ignored.
ENTRA_ONLY_KEYS = ("entraAllowedGroups", "entraAdminGroups", "signInSecretLifetimeDays")

ACR_SKUS = ("Basic", "Standard", "Premium")
STORAGE_SKUS = (
    "Standard_LRS",
    "Standard_ZRS",
    "Standard_GRS",
    "Standard_RAGRS",
    "Standard_GZRS",
    "Standard_RAGZRS",
)
DATA_RETENTION_MODES = ("retain", "delete")
# Managed-disk SKUs that attach to the cluster's non-zonal nodes from a disk without a zone. PremiumV2_LRS
# and UltraSSD_LRS need a zonal disk (and zonal nodes), so they are not offered.
MYSQL_DISK_SKUS = ("Standard_LRS", "StandardSSD_LRS", "Premium_LRS", "StandardSSD_ZRS", "Premium_ZRS")
# The chart's MySQL claim requests 8Gi; the disk (its PersistentVolume) must be at least that large.
MYSQL_DISK_MIN_GIB = 8
MYSQL_DISK_MAX_GIB = 32767
# `inCluster`: MySQL in the cluster on the managed disk; `flexibleServer`: Azure Database for MySQL
# Flexible Server (components/database_server.py) in a virtual network the program owns.
DATABASE_MODES = ("inCluster", "flexibleServer")
# Keys read in one mode only: set in the other, they would be silently ignored.
IN_CLUSTER_ONLY_KEYS = ("mysqlDiskSku", "mysqlDiskSizeGib", "backupSchedule", "binlogShipMinutes")
FLEXIBLE_SERVER_ONLY_KEYS = (
    "databaseSku",
    "databaseHighAvailability",
    "databaseGeoRedundantBackup",
    "databaseBackupRetentionDays",
    "databaseServerName",
)
# The flexible server's compute tier follows from its SKU's series (B: Burstable, D: General Purpose,
# E: Business Critical, which the API still calls MemoryOptimized).
DATABASE_TIERS = {"B": "Burstable", "D": "GeneralPurpose", "E": "MemoryOptimized"}
DATABASE_HIGH_AVAILABILITY = ("Disabled", "SameZone", "ZoneRedundant")
# Azure's range for the flexible server's backup retention
# (https://learn.microsoft.com/azure/mysql/flexible-server/concepts-backup-restore#backup-retention).
DATABASE_BACKUP_RETENTION_DAYS = (1, 35)

_NAME_PREFIX = re.compile(r"^[a-z][a-z0-9]{2,10}$")
_VM_SIZE = re.compile(r"^Standard_[A-Za-z0-9_]+$")
_K8S_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LOCATION = re.compile(r"^[a-z][a-z0-9]+$")
_ADMIN_USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{2,63}$")
_STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_CRON_FIELD = r"[0-9*/,\-A-Za-z]+"
_CRON = re.compile(rf"^{_CRON_FIELD}( {_CRON_FIELD}){{4}}$")
_DURATION = re.compile(r"^(?=.)(\d+(\.\d+)?d)?(\d+(\.\d+)?h)?(\d+(\.\d+)?m)?(\d+(\.\d+)?s)?$")
# The chart schema accepts the same (charts/mlflow_setup/values.schema.json, tls.acmeDirectory).
_HTTPS_URL = re.compile(r"^https://[^\s/]+(/\S*)?$")
_DATABASE_SKU = re.compile(r"^Standard_[BDE][0-9]+[a-z]*(_v[0-9]+)?$")
# Flexible server names: 3-63 lowercase letters, digits and hyphens, not starting or ending with one.
_DATABASE_SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# An Entra ID object id as the portal and `az ad group show --query id` print it.
# An address Azure Monitor's action groups accept: local@domain.tld, nothing fancier.
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
# At most 1000 email receivers per action group
# (https://learn.microsoft.com/azure/azure-monitor/service-limits#action-groups).
MAX_ALERT_EMAILS = 1000
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class RunSpec:
    """One entry of config `runs`: an `mlflow run` of mlflow_project/ as a Kubernetes Job."""

    name: str
    """Helm release name; the Job is `<name>-mlflow-project`."""
    entry_point: str
    """MLproject entry point."""
    experiment: str
    """MLflow experiment the run logs to."""
    parameters: dict[str, str | int | float | bool]
    """Entry-point parameters (`-P key=value`)."""
    after: tuple[str, ...] = ()
    """Runs (listed earlier) whose Job must complete before this run is installed."""


@dataclass(frozen=True)
class Settings:
    """Every stack setting, typed. Field `foo_bar` is config key `fooBar` (see `config_key`)."""

    location: str
    """Azure region for every resource."""
    name_prefix: str
    """Prefix of every Azure resource name (3-11 lowercase letters/digits)."""
    data_retention: str
    """`retain`: `pulumi destroy` leaves the data resource group, storage account and MySQL disk, and the
    group is locked against deletion; `delete`: it doesn't."""
    data_storage_account: str | None
    """Storage account an earlier stack kept: adopt it and the rest of its data (None: create new data)."""
    allow_data_replacement: bool
    """Let a config change replace the data resources (off: the data guard stops it)."""
    kubernetes_version: str | None
    """AKS version, or None for the AKS default."""
    api_server_authorized_ip_ranges: tuple[str, ...]
    """IPv4 CIDRs that may reach the Kubernetes API server; empty: no IP restriction (Entra ID still)."""
    deployer_ip_address: str | None
    """The public IPv4 address the API server sees from the machine running `pulumi up` (None: detect
    it), checked against api_server_authorized_ip_ranges before anything is created
    (components/deployer_address.py)."""
    operators: tuple[str, ...]
    """Object ids (lower case, no repeats) of who runs `pulumi up`: owners of the Entra ID applications,
    cluster admins; empty: the stack's first deployer (components/operators.py)."""
    operators_group: str | None
    """Object id (lower case) of the group that gets the cluster role instead of each operator; None: each
    operator gets it."""
    system_node_vm_size: str
    """VM size of the system node pool."""
    system_node_count: int
    """System node count when autoscaling is off."""
    system_node_autoscale: bool
    """Whether the system pool autoscales between min and max."""
    system_node_min_count: int
    """Minimum system nodes when autoscaling."""
    system_node_max_count: int
    """Maximum system nodes when autoscaling."""
    jobs_node_pool: bool
    """Whether a tainted, autoscaled-from-zero `jobs` pool for run Jobs exists."""
    jobs_node_vm_size: str
    """VM size of the jobs pool."""
    jobs_node_max_count: int
    """Maximum nodes of the jobs pool."""
    log_retention_days: int
    """Log Analytics retention in days."""
    alert_emails: tuple[str, ...]
    """Who is mailed when an alert fires or resolves (lower case, no repeats); empty: nobody."""
    acr_sku: str
    """Container registry SKU."""
    storage_sku: str
    """Storage account replication SKU."""
    file_share_quota_gib: int
    """Project file share quota in GiB."""
    mysql_disk_sku: str
    """SKU of the MySQL data disk (a managed disk in the data resource group)."""
    mysql_disk_size_gib: int
    """Size of the MySQL data disk in GiB."""
    database: str
    """`inCluster` (MySQL on the managed disk) or `flexibleServer` (Azure Database for MySQL)."""
    database_sku: str
    """Compute SKU of the flexible server, e.g. Standard_B1ms."""
    database_high_availability: str
    """`Disabled`, `SameZone` or `ZoneRedundant` (the flexible server's standby)."""
    database_geo_redundant_backup: bool
    """Copy the flexible server's backups to the paired region."""
    database_backup_retention_days: int
    """Days of the flexible server's backups: its point-in-time restore window."""
    database_server_name: str | None
    """A flexible server (restored from the stack's) to adopt; None: the stack's own name."""
    backup_schedule: str
    """Cron schedule (UTC) of the database backup."""
    binlog_ship_minutes: int
    """Minutes between two shipments of the binary logs: the point-in-time recovery's RPO."""
    backup_retention_days: int
    """Days a backup is kept before the storage account deletes it."""
    soft_delete_retention_days: int
    """Days a deleted or overwritten artifact or backup, or a deleted container, stays recoverable."""
    gc_schedule: str
    """Cron schedule (UTC) of `mlflow gc`."""
    gc_older_than: str
    """`mlflow gc --older-than`: how long deleted runs stay restorable."""
    namespace: str
    """Kubernetes namespace of the platform."""
    runs_namespace: str
    """Kubernetes namespace of run Jobs (only the run credentials and the project volume)."""
    tracking_service_account: str
    """Kubernetes ServiceAccount name of the tracking server."""
    deployer_password_lifetime_days: int
    """Days the deployer service principal's password is valid from its creation."""
    export_deployer_password: bool
    """Export the deployer's password as the (secret) stack output `deployerPassword`."""
    exposure: str
    """`private` (ClusterIP) or `public` (HTTPS through the TLS terminator, 443 limited to
    allowed_source_ranges)."""
    allowed_source_ranges: tuple[str, ...]
    """CIDRs that may reach a public tracking server."""
    acme_directory: str
    """ACME directory of the public endpoint's certificate."""
    tracking_replicas: int
    """Tracking-server pods."""
    largest_artifact_mib: int
    """Largest artifact transfer through the server (MiB): a stopping pod waits for one to finish."""
    admin_username: str
    """MLflow admin user."""
    auth: str
    """`basic` (MLflow users and passwords) or `entra` (sign-in with Entra ID, run Jobs with their
    ServiceAccount token)."""
    entra_allowed_groups: tuple[str, ...]
    """Object ids (lower case) of the Entra ID groups whose members may sign in (`auth: entra`)."""
    entra_admin_groups: tuple[str, ...]
    """Object ids (lower case) of the Entra ID groups whose members are MLflow admins (`auth: entra`)."""
    default_permission: str
    """MLflow permission every user has on experiments and models they did not create (both modes)."""
    sign_in_secret_lifetime_days: int
    """Days the sign-in application's client secret is valid from its creation (`auth: entra`)."""
    kek_version: int
    """Version of the key over the AI Gateway's stored API keys; raising it rotates the key."""
    mlflow_telemetry: bool
    """MLflow's usage telemetry on (off: MLFLOW_DISABLE_TELEMETRY in every pod and Job)."""
    server_jobs: bool
    """MLflow's server-side jobs on (the jobs pod of charts/mlflow_setup)."""
    llm_provider_cidrs: tuple[str, ...]
    """CIDR ranges (canonical) of LLM providers at private addresses the gateway and judges reach."""
    runs: tuple[RunSpec, ...]
    """MLflow project runs, one `mlflow_project` release each."""

    @property
    def retain_data(self) -> bool:
        return self.data_retention == "retain"

    @property
    def protect_data(self) -> bool:
        """Data resources are `protect`ed while retained, unless their replacement is allowed."""
        return self.retain_data and not self.allow_data_replacement

    @property
    def flexible_server(self) -> bool:
        """The databases live in Azure Database for MySQL Flexible Server, not in the cluster."""
        return self.database == "flexibleServer"

    @property
    def database_tier(self) -> str:
        """The flexible server's compute tier, from its SKU's series."""
        return DATABASE_TIERS[self.database_sku.removeprefix("Standard_")[0]]

    @property
    def entra_sign_in(self) -> bool:
        """People sign in with Entra ID (the program registers the application, components/sign_in.py)."""
        return self.auth == "entra"

    @property
    def tracking_identity_subject(self) -> str:
        """The federated credential subject for the tracking server's ServiceAccount token."""
        return f"system:serviceaccount:{self.namespace}:{self.tracking_service_account}"

    @property
    def backup_identity_subject(self) -> str:
        """The federated credential subject for the backup Job's ServiceAccount token (the chart's)."""
        return f"system:serviceaccount:{self.namespace}:{BACKUP_SERVICE_ACCOUNT}"


@dataclass(frozen=True)
class Problem:
    key: str
    rule: str
    value: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.rule} (got {self.value!r})"


class SettingsError(ValueError):
    """Invalid stack configuration; `problems` names every bad key."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid stack configuration ({len(problems)} problem(s)):\n{lines}")


def config_key(field_name: str) -> str:
    """`system_node_count` -> `systemNodeCount`."""
    head, *rest = field_name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def declared_config(project_file: Path = PROJECT_FILE) -> dict[str, dict[str, Any]]:
    """The `config:` block of Pulumi.yaml: key -> {type, description, default}."""
    project = yaml.safe_load(project_file.read_text())
    return project["config"]


def _parse(raw: Any, declared_type: str) -> Any:
    """Turn a raw config value (string from `pulumi config`, or the YAML default) into its declared type."""
    if declared_type == "string":
        if not isinstance(raw, str):
            raise ValueError("must be a string")
        return raw
    if declared_type == "integer":
        if isinstance(raw, bool):
            raise ValueError("must be an integer")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str) and re.fullmatch(r"[+-]?\d+", raw.strip()):
            return int(raw)
        raise ValueError("must be an integer")
    if declared_type == "boolean":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise ValueError("must be true or false")
    if declared_type == "array":
        value = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(value, list):
            raise ValueError("must be a list")
        return value
    raise ValueError(f"unsupported declared type {declared_type!r}")


def _is_default(key: str, typed: dict[str, Any], declared: dict[str, dict[str, Any]]) -> bool:
    """Whether a key's typed value is its declared default (set or not: the CLI cannot tell them apart)."""
    try:
        return typed[key] == _parse(declared[key]["default"], declared[key]["type"])
    except (ValueError, json.JSONDecodeError):
        return False


def _raw_values(config: pulumi.Config, declared: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The stack's value for each declared key, else the Pulumi.yaml default."""
    values = {}
    for key, declaration in declared.items():
        raw = config.get(key)
        values[key] = declaration["default"] if raw is None else raw
    return values


def _one_of(allowed: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in allowed), f"must be one of {', '.join(allowed)}"


def _between(low: int, high: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: low <= v <= high), f"must be between {low} and {high}"


def _matches(pattern: re.Pattern[str], rule: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: bool(pattern.fullmatch(v))), rule


# Addresses a machine's own interfaces show but the internet never sees (RFC 1918, RFC 6598 shared,
# loopback, link-local, multicast and reserved): a deployer address in them is a mistake. Documentation
# ranges are allowed.
_NOT_SEEN_BY_AZURE = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/3",
    )
)


def _public_ipv4(value: str) -> bool:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return not any(address in network for network in _NOT_SEEN_BY_AZURE)


_VM_SIZE_RULE = _matches(_VM_SIZE, "must be an Azure VM size like Standard_D4s_v5")

# One rule per key: (predicate over the typed value, what the rule says).
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "location": _matches(_LOCATION, "must be an Azure region name like westeurope"),
    "namePrefix": _matches(
        _NAME_PREFIX,
        "must be 3-11 lowercase letters or digits starting with a letter, so the storage account names "
        "(prefix + 'data' or 'files' + 8-character random suffix) stay within 24 characters",
    ),
    "dataRetention": _one_of(DATA_RETENTION_MODES),
    "kubernetesVersion": (
        lambda v: v == "" or bool(_K8S_VERSION.fullmatch(v)),
        "must be MAJOR.MINOR or MAJOR.MINOR.PATCH (e.g. 1.33), or empty for the AKS default",
    ),
    "deployerIpAddress": (
        lambda v: v == "" or _public_ipv4(v),
        "must be empty (detect it) or the public IPv4 address the API server sees from this machine, like "
        "203.0.113.7: not a private, loopback, link-local or carrier-grade NAT address, which the API "
        "server never sees (`curl https://api.ipify.org` prints it)",
    ),
    "systemNodeVmSize": _VM_SIZE_RULE,
    "systemNodeCount": _between(1, 1000),
    "systemNodeMinCount": _between(1, 1000),
    "systemNodeMaxCount": _between(1, 1000),
    "jobsNodeVmSize": _VM_SIZE_RULE,
    "jobsNodeMaxCount": _between(1, 1000),
    "logRetentionDays": _between(30, 730),
    "acrSku": _one_of(ACR_SKUS),
    "storageSku": _one_of(STORAGE_SKUS),
    "fileShareQuotaGib": _between(1, 102400),
    "mysqlDiskSku": _one_of(MYSQL_DISK_SKUS),
    "mysqlDiskSizeGib": _between(MYSQL_DISK_MIN_GIB, MYSQL_DISK_MAX_GIB),
    "database": _one_of(DATABASE_MODES),
    "databaseSku": _matches(
        _DATABASE_SKU,
        "must be a flexible server compute size: Standard_B… (Burstable), Standard_D… (General "
        "Purpose) or Standard_E… (Business Critical), like Standard_B1ms or Standard_D2ds_v4",
    ),
    "databaseHighAvailability": _one_of(DATABASE_HIGH_AVAILABILITY),
    "databaseBackupRetentionDays": _between(*DATABASE_BACKUP_RETENTION_DAYS),
    "databaseServerName": (
        lambda v: v == "" or bool(_DATABASE_SERVER_NAME.fullmatch(v)),
        "must be empty or a flexible server name: 3-63 lowercase letters, digits or '-', not starting "
        "or ending with '-'",
    ),
    "namespace": _matches(
        _DNS1123_LABEL,
        "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', starting and ending "
        "with a letter or digit",
    ),
    "runsNamespace": _matches(
        _DNS1123_LABEL,
        "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', starting and ending "
        "with a letter or digit",
    ),
    "trackingServiceAccount": _matches(
        _DNS1123_SUBDOMAIN,
        "must be a DNS-1123 subdomain: lowercase letters, digits, '-' or '.', starting and ending "
        "with a letter or digit",
    ),
    # At most a year, as Microsoft recommends for client secrets; a new value rotates the password.
    "deployerPasswordLifetimeDays": _between(1, 365),
    "exposure": _one_of(EXPOSURES),
    "acmeDirectory": _matches(
        _HTTPS_URL, "must be an https:// URL of an ACME directory (e.g. Let's Encrypt's, or its staging)"
    ),
    "backupSchedule": _matches(_CRON, "must be a cron schedule of five fields, like '0 2 * * *'"),
    "binlogShipMinutes": _between(1, 60),
    "backupRetentionDays": _between(1, 3650),
    # Azure's range for blob and container soft delete
    # (https://learn.microsoft.com/azure/storage/blobs/soft-delete-blob-overview#how-blob-soft-delete-works).
    "softDeleteRetentionDays": _between(1, 365),
    "gcSchedule": _matches(_CRON, "must be a cron schedule of five fields, like '30 3 * * *'"),
    "gcOlderThan": _matches(
        _DURATION, "must be a duration like 30d, 12h or 1d2h (days, hours, minutes, seconds)"
    ),
    "trackingReplicas": _between(1, 10),
    # The most the server's streamed uploads can store: 50,000 blocks of 8 MiB (stream_artifacts.py).
    "largestArtifactMib": _between(1, 400_000),
    "adminUsername": _matches(
        _ADMIN_USERNAME, "must be 3-64 letters, digits, '_', '.' or '-', starting with a letter"
    ),
    "auth": _one_of(AUTH_MODES),
    "defaultPermission": _one_of(MLFLOW_PERMISSIONS),
    # At most a year, as for the deployer's password; a new value rotates the secret.
    "signInSecretLifetimeDays": _between(1, 365),
    "kekVersion": _between(1, 1000),
}


# The widest source range a public tracking server accepts, per address family: /8 is 16 million IPv4
# addresses, already far more than any team's networks; a wider one is the internet in all but name.
MIN_SOURCE_PREFIX = {4: 8, 6: 32}


def _provider_cidr_problems(ranges: list[Any]) -> list[Problem]:
    """llmProviderCidrs: CIDR ranges, none wider than MIN_SOURCE_PREFIX (an egress rule to much of the
    internet or of the private network is not a provider's address)."""

    def key(index: int) -> str:
        return f"llmProviderCidrs[{index}]"

    problems = []
    for index, cidr in enumerate(ranges):
        try:
            network = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            problems.append(Problem(key(index), "must be a CIDR range like 10.20.0.0/28", cidr))
            continue
        widest = MIN_SOURCE_PREFIX[network.version]
        if network.prefixlen < widest:
            rule = f"must not be wider than /{widest} (IPv{network.version}): it names a provider's addresses"
            problems.append(Problem(key(index), rule, cidr))
    return problems


def _cidr_problems(ranges: list[Any], exposure: Any) -> list[Problem]:
    key = "allowedSourceRanges"
    problems = []
    networks = []
    for index, cidr in enumerate(ranges):
        try:
            network = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            problems.append(Problem(f"{key}[{index}]", "must be a CIDR range like 203.0.113.0/24", cidr))
            continue
        networks.append(network)
        widest = MIN_SOURCE_PREFIX[network.version]
        if network.prefixlen < widest:
            rule = (
                f"must not be wider than /{widest} (IPv{network.version}): a wider range opens the tracking "
                "server to much of the internet"
            )
            problems.append(Problem(f"{key}[{index}]", rule, cidr))
    ipv4 = [n for n in networks if n.version == 4]
    if ipv4 and list(ipaddress.collapse_addresses(ipv4)) == [ipaddress.ip_network("0.0.0.0/0")]:
        rule = "must not together cover the whole IPv4 internet (e.g. 0.0.0.0/1 + 128.0.0.0/1)"
        problems.append(Problem(key, rule, ranges))
    if exposure == "public" and not ranges:
        problems.append(Problem(key, "must list at least one CIDR range when exposure is public", ranges))
    return problems


# AKS takes at most 200 authorized ranges (https://learn.microsoft.com/azure/aks/api-server-authorized-ip-ranges).
MAX_API_SERVER_RANGES = 200


def _api_server_range_problems(ranges: list[Any]) -> list[Problem]:
    """apiServerAuthorizedIpRanges: IPv4 CIDRs (what AKS accepts), none absurdly wide. Empty is allowed:
    no IP restriction, the API server still demands an Entra ID token with an Azure role."""
    key = "apiServerAuthorizedIpRanges"
    problems = []
    for index, cidr in enumerate(ranges):
        at = f"{key}[{index}]"
        try:
            # strict: AKS wants the range's first address (Azure/azure-cli-extensions#675).
            network = ipaddress.ip_network(str(cidr), strict=True)
        except ValueError:
            rule = "must be an IPv4 CIDR range starting at its first address, like 203.0.113.0/24"
            problems.append(Problem(at, rule, cidr))
            continue
        if network.version != 4:
            problems.append(Problem(at, "must be IPv4: AKS authorizes IPv4 ranges only", cidr))
        elif network.prefixlen < MIN_SOURCE_PREFIX[4]:
            rule = f"must not be wider than /{MIN_SOURCE_PREFIX[4]}: a wider range is much of the internet"
            problems.append(Problem(at, rule, cidr))
        elif network.network_address.is_unspecified:
            # No client has 0.0.0.0, and AKS treats 0.0.0.0/32 specially: it refuses it beside other
            # ranges ("not allowed with other IP ranges", Azure/terraform-azurerm-aks#378).
            problems.append(Problem(at, "must not start at 0.0.0.0, which no client has", cidr))
    # At most 200 ranges of at most /8 cannot add up to the whole IPv4 internet (256 /8s).
    if len(ranges) > MAX_API_SERVER_RANGES:
        rule = f"must list at most {MAX_API_SERVER_RANGES} ranges (AKS's limit)"
        problems.append(Problem(key, rule, ranges))
    return problems


def _email_problems(emails: list[Any]) -> list[Problem]:
    """alertEmails: email addresses, at most MAX_ALERT_EMAILS."""
    problems = []
    for index, email in enumerate(emails):
        if not (isinstance(email, str) and _EMAIL.fullmatch(email)):
            rule = "must be an email address like oncall@example.com"
            problems.append(Problem(f"alertEmails[{index}]", rule, email))
    if len(emails) > MAX_ALERT_EMAILS:
        rule = f"must list at most {MAX_ALERT_EMAILS} addresses (an action group's limit)"
        problems.append(Problem("alertEmails", rule, emails))
    return problems


def _group_problems(key: str, groups: list[Any], auth: Any) -> list[Problem]:
    """entraAllowedGroups / entraAdminGroups: Entra ID group object ids, at least one with `auth: entra`.

    The token's `groups` claim lists object ids, never display names (which are not unique either)."""
    problems = []
    for index, group in enumerate(groups):
        if not (isinstance(group, str) and _GUID.fullmatch(group)):
            rule = (
                "must be an Entra ID group's object id (a GUID like 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0), "
                "not its display name: tokens name groups by object id "
                "(`az ad group show --group <name> --query id -o tsv`)"
            )
            problems.append(Problem(f"{key}[{index}]", rule, group))
    if auth == "entra" and not groups:
        rule = "must list at least one Entra ID group object id when auth is entra"
        problems.append(Problem(key, rule, groups))
    return problems


def _operator_problems(operators: list[Any], group: Any) -> list[Problem]:
    """operators: object ids, each once; operatorsGroup: empty or an object id."""
    problems = []
    seen: dict[str, int] = {}
    for index, operator in enumerate(operators):
        at = f"operators[{index}]"
        if not (isinstance(operator, str) and _GUID.fullmatch(operator)):
            rule = (
                "must be the object id of a user or service principal (a GUID like "
                "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0), not a name or an application (client) id: "
                "`az ad user show --id <upn> --query id -o tsv`, "
                "`az ad sp show --id <client id> --query id -o tsv`"
            )
            problems.append(Problem(at, rule, operator))
            continue
        canonical = str(uuid.UUID(operator))
        if canonical in seen:
            problems.append(Problem(at, f"repeats operators[{seen[canonical]}]", operator))
        seen.setdefault(canonical, index)
    if group and not (isinstance(group, str) and _GUID.fullmatch(group)):
        rule = (
            "must be empty or an Entra ID group's object id (a GUID), not its display name: "
            "`az ad group show --group <name> --query id -o tsv`"
        )
        problems.append(Problem("operatorsGroup", rule, group))
    return problems


def _canonical_guids(groups: list[str]) -> tuple[str, ...]:
    """Lower case (as the `groups` claim carries them), without repeats, in the order given."""
    return tuple(dict.fromkeys(str(uuid.UUID(group)) for group in groups))


def read_entry_points(mlproject: Path = MLPROJECT_FILE) -> dict[str, dict[str, bool]]:
    """Entry points of the MLproject: name -> {parameter: required (no default)}."""
    document = yaml.safe_load(mlproject.read_text()) or {}
    entry_points = {}
    for name, entry in (document.get("entry_points") or {}).items():
        parameters = (entry or {}).get("parameters") or {}
        entry_points[name] = {
            parameter: not (isinstance(spec, dict) and "default" in spec)
            for parameter, spec in parameters.items()
        }
    return entry_points


_RUN_KEYS = {"name", "entryPoint", "experiment", "parameters", "after"}


@dataclass(frozen=True)
class ExperimentRule:
    """An entry point whose experiment is fixed by one of its parameters."""

    parameter: str
    """The parameter naming the experiment the entry point reads."""
    suffix: str
    """The experiment the run must log to is `<parameter value><suffix>`."""
    why: str
    """What the entry point does otherwise (for the error message)."""

    def experiment(self, parameters: dict[str, Any]) -> str | None:
        """The experiment these parameters require, or None when the parameter is unusable."""
        value = parameters.get(self.parameter)
        return f"{value}{self.suffix}" if isinstance(value, str) and value.strip() else None


# Per entry point of mlflow_project/MLproject: the experiment its run must log to, when the project
# dictates it. `evaluate` reads the `train` runs of `experiment_name` and logs its scores apart, in
# `<experiment_name>_eval`: evaluate.py checks the experiment `mlflow run --experiment-name` gave it
# and exits 2 (after the Job started) on any other. So the stack checks it up front, and a run may
# leave `experiment` out to get exactly that one. Entry points not listed here take any experiment.
EXPERIMENT_RULES: dict[str, ExperimentRule] = {
    "evaluate": ExperimentRule(
        parameter="experiment_name",
        suffix="_eval",
        why="evaluate.py exits 2 in any other experiment",
    ),
}


def _after_problems(at: str, name: Any, after: Any, names: list[Any], index: int) -> list[Problem]:
    """`after` must list runs listed before this one (by name): they are installed, and done, first."""
    if not isinstance(after, list):
        return [Problem(f"{at}.after", "must be a list of names of runs listed earlier in runs", after)]
    problems = []
    for position, other in enumerate(after):
        key = f"{at}.after[{position}]"
        if other == name:
            problems.append(Problem(key, f"must not name run {name!r} itself", other))
        elif other in names[:index]:
            continue
        elif other in names[index + 1 :]:
            problems.append(
                Problem(key, f"must name a run listed before {name!r} in runs (this one comes later)", other)
            )
        else:
            problems.append(
                Problem(key, "must name a run listed earlier in runs (no run has that name)", other)
            )
    return problems


def _experiment(at: str, run: dict[str, Any], entry_point: Any) -> tuple[str | None, list[Problem]]:
    """The run's experiment (given, or derived by EXPERIMENT_RULES) and the problems with it."""
    name, experiment, parameters = run.get("name"), run.get("experiment"), run.get("parameters", {})
    rule = EXPERIMENT_RULES.get(entry_point) if isinstance(entry_point, str) else None
    if rule is None or not isinstance(parameters, dict):
        if isinstance(experiment, str) and experiment.strip():
            return experiment, []
        return None, [Problem(f"{at}.experiment", "must be a non-empty experiment name", experiment)]
    required = rule.experiment(parameters)
    if required is None:
        if rule.parameter not in parameters:
            return None, []  # reported as a missing required parameter
        value = parameters[rule.parameter]
        rule_text = (
            f"must be a non-empty string, the experiment entry point {entry_point!r} of run {name!r} reads"
        )
        return None, [Problem(f"{at}.parameters.{rule.parameter}", rule_text, value)]
    if experiment is None or experiment == required:
        return required, []
    rule_text = (
        f"must be {required!r} for run {name!r} (or be left out): entry point {entry_point!r} logs to "
        f"`<{rule.parameter}>{rule.suffix}` and {rule.why}"
    )
    return None, [Problem(f"{at}.experiment", rule_text, experiment)]


def _run_problems(runs: list[Any], mlproject: Path) -> tuple[list[Problem], tuple[RunSpec, ...]]:
    """Check every `runs` entry against the rules and the MLproject; return problems and the parsed runs."""
    problems: list[Problem] = []
    specs: list[RunSpec] = []
    try:
        entry_points = read_entry_points(mlproject)
    except (OSError, yaml.YAMLError) as error:
        return [Problem("runs", f"needs a readable {mlproject.name} ({error})", str(mlproject))], ()
    seen: set[str] = set()
    names = [run.get("name") if isinstance(run, dict) else None for run in runs]
    for index, run in enumerate(runs):
        at = f"runs[{index}]"
        if not isinstance(run, dict):
            problems.append(
                Problem(at, "must be an object {name, entryPoint, experiment, parameters, after}", run)
            )
            continue
        unknown = sorted(set(run) - _RUN_KEYS)
        if unknown:
            problems.append(Problem(at, f"has unknown keys {unknown}; allowed: {sorted(_RUN_KEYS)}", run))
        name, entry_point = run.get("name"), run.get("entryPoint")
        parameters, after = run.get("parameters", {}), run.get("after", [])
        if not (isinstance(name, str) and _DNS1123_LABEL.fullmatch(name) and len(name) <= RUN_NAME_MAX):
            problems.append(
                Problem(
                    f"{at}.name",
                    f"must be a DNS-1123 label of at most {RUN_NAME_MAX} characters (it names the Helm "
                    "release and the Job `<name>-mlflow-project`)",
                    name,
                )
            )
        elif name == SETUP_RELEASE:
            problems.append(Problem(f"{at}.name", f"must not be {SETUP_RELEASE!r}, the setup release", name))
        elif name in seen:
            problems.append(Problem(f"{at}.name", "must be unique among runs", name))
        else:
            seen.add(name)
        experiment, experiment_problems = _experiment(at, run, entry_point)
        problems.extend(experiment_problems)
        after_problems = _after_problems(at, name, after, names, index)
        problems.extend(after_problems)
        if not isinstance(entry_point, str) or entry_point not in entry_points:
            problems.append(
                Problem(
                    f"{at}.entryPoint",
                    f"must be an entry point of {mlproject.parent.name}/{mlproject.name}: "
                    f"{', '.join(sorted(entry_points))}",
                    entry_point,
                )
            )
            continue
        if not isinstance(parameters, dict):
            problems.append(Problem(f"{at}.parameters", "must be an object of parameter: value", parameters))
            continue
        declared = entry_points[entry_point]
        for parameter, value in parameters.items():
            if parameter not in declared:
                problems.append(
                    Problem(
                        f"{at}.parameters.{parameter}",
                        f"is not a parameter of entry point {entry_point!r}: {', '.join(sorted(declared))}",
                        value,
                    )
                )
            elif not isinstance(value, str | int | float | bool):
                problems.append(
                    Problem(f"{at}.parameters.{parameter}", "must be a string, number or boolean", value)
                )
        missing = sorted(p for p, required in declared.items() if required and p not in parameters)
        if missing:
            problems.append(
                Problem(
                    f"{at}.parameters",
                    f"misses required parameters of {entry_point!r}: {missing}",
                    parameters,
                )
            )
        if isinstance(name, str) and isinstance(experiment, str) and not after_problems:
            specs.append(
                RunSpec(name, entry_point, experiment, dict(parameters), tuple(dict.fromkeys(after)))
            )
    return problems, tuple(specs)


def _validate(
    typed: dict[str, Any], problems: list[Problem], mlproject: Path, given: frozenset[str] = frozenset()
) -> tuple[RunSpec, ...]:
    """Apply RULES and the cross-key rules to every key that parsed; append one Problem per broken rule.

    `given`: the keys whose value is not their Pulumi.yaml default."""
    for key, (ok, rule) in RULES.items():
        if key in typed and not ok(typed[key]):
            problems.append(Problem(key, rule, typed[key]))
    kept, prefix = typed.get("dataStorageAccount"), typed.get("namePrefix")
    if (
        kept
        and isinstance(prefix, str)
        and not (_STORAGE_ACCOUNT.fullmatch(kept) and kept.startswith(storage_account_prefix(prefix)))
    ):
        rule = (
            f"must be empty or the storage account an earlier stack with namePrefix {prefix!r} kept "
            f"(its storageAccount output, '{storage_account_prefix(prefix)}' + suffix): the data resource "
            "group and disk are found by that prefix"
        )
        problems.append(Problem("dataStorageAccount", rule, kept))
    low, high = typed.get("systemNodeMinCount"), typed.get("systemNodeMaxCount")
    if typed.get("systemNodeAutoscale") and isinstance(low, int) and isinstance(high, int) and low > high:
        problems.append(Problem("systemNodeMinCount", f"must not exceed systemNodeMaxCount ({high})", low))
    if "alertEmails" in typed:
        problems.extend(_email_problems(typed["alertEmails"]))
    if "allowedSourceRanges" in typed:
        problems.extend(_cidr_problems(typed["allowedSourceRanges"], typed.get("exposure")))
    if "apiServerAuthorizedIpRanges" in typed:
        problems.extend(_api_server_range_problems(typed["apiServerAuthorizedIpRanges"]))
    if "llmProviderCidrs" in typed:
        problems.extend(_provider_cidr_problems(typed["llmProviderCidrs"]))
    if "deployerIpAddress" in given and typed.get("apiServerAuthorizedIpRanges") == []:
        rule = (
            "is read only when apiServerAuthorizedIpRanges is set (it is checked against them); set the "
            "ranges, or `pulumi config rm deployerIpAddress`"
        )
        problems.append(Problem("deployerIpAddress", rule, typed["deployerIpAddress"]))
    auth = typed.get("auth")
    if auth == "basic":
        for key in ENTRA_ONLY_KEYS:
            if key in given:
                rule = f"is read only with auth: entra; set auth to entra, or `pulumi config rm {key}`"
                problems.append(Problem(key, rule, typed.get(key)))
    else:
        for key in ("entraAllowedGroups", "entraAdminGroups"):
            if key in typed:
                problems.extend(_group_problems(key, typed[key], auth))
    if "operators" in typed:
        problems.extend(_operator_problems(typed["operators"], typed.get("operatorsGroup")))
    if typed.get("trackingServiceAccount") == BACKUP_SERVICE_ACCOUNT:
        rule = (
            f"must not be {BACKUP_SERVICE_ACCOUNT!r}, the backup Jobs' ServiceAccount: the server would get "
            "the backup identity, which may write the backups"
        )
        problems.append(Problem("trackingServiceAccount", rule, typed["trackingServiceAccount"]))
    problems.extend(_database_problems(typed, given))
    if typed.get("runsNamespace") is not None and typed.get("runsNamespace") == typed.get("namespace"):
        rule = "must differ from namespace: run Jobs never share a namespace with the platform's secrets"
        problems.append(Problem("runsNamespace", rule, typed["runsNamespace"]))
    if "runs" not in typed:
        return ()
    run_problems, runs = _run_problems(typed["runs"], mlproject)
    problems.extend(run_problems)
    return runs


def _database_problems(typed: dict[str, Any], given: frozenset[str]) -> list[Problem]:
    """Keys of the other database mode must not be set; high availability needs a non-burstable SKU."""
    database = typed.get("database")
    if database not in DATABASE_MODES:
        return []
    problems = []
    other, read_with = (
        (FLEXIBLE_SERVER_ONLY_KEYS, "flexibleServer")
        if database == "inCluster"
        else (IN_CLUSTER_ONLY_KEYS, "inCluster")
    )
    for key in other:
        if key in given:
            rule = (
                f"is read only with database: {read_with}; set database to {read_with}, or "
                f"`pulumi config rm {key}`"
            )
            problems.append(Problem(key, rule, typed.get(key)))
    sku, high_availability = typed.get("databaseSku"), typed.get("databaseHighAvailability")
    burstable = isinstance(sku, str) and bool(_DATABASE_SKU.fullmatch(sku)) and sku.startswith("Standard_B")
    if database == "flexibleServer" and burstable and high_availability in ("SameZone", "ZoneRedundant"):
        # https://learn.microsoft.com/azure/mysql/flexible-server/concepts-high-availability#limitations
        rule = (
            f"must be Disabled with databaseSku {sku} (Burstable): Azure offers high availability on General "
            "Purpose (Standard_D…) and Business Critical (Standard_E…) only"
        )
        problems.append(Problem("databaseHighAvailability", rule, high_availability))
    return problems


# Keys earlier versions read -> what to do instead. Set on a stack, they would be silently ignored.
RETIRED_KEYS = {
    "deployerPasswordEndDate": (
        "the password now lives deployerPasswordLifetimeDays days (at most 365) from its creation; "
        "`pulumi config rm deployerPasswordEndDate`"
    ),
}


_KEPT_ACCOUNT = re.compile(r"^(?P<prefix>[a-z][a-z0-9]{2,10})data[a-z0-9]{8}$")


def _kept_prefix(account: Any) -> str | None:
    """The namePrefix a kept storage account was created with (`<prefix>data<8-character suffix>`)."""
    match = _KEPT_ACCOUNT.fullmatch(account) if isinstance(account, str) else None
    return match["prefix"] if match else None


def load_settings(
    config: pulumi.Config | None = None,
    project_file: Path = PROJECT_FILE,
    mlproject: Path = MLPROJECT_FILE,
) -> Settings:
    """Read, type-check and validate every declared key; raise `SettingsError` naming each bad one."""
    config = config or pulumi.Config()
    declared = declared_config(project_file)
    raw = _raw_values(config, declared)

    problems: list[Problem] = []
    typed: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            typed[key] = _parse(value, declared[key]["type"])
        except (ValueError, json.JSONDecodeError) as error:
            problems.append(Problem(key, f"{error} ({declared[key]['type']})", value))
    # Keys whose value is not the Pulumi.yaml default. (`config.get` cannot tell: the Pulumi CLI hands the
    # program every project default as if the stack had set it, ValidateStackConfigAndApplyProjectConfig.)
    given = frozenset(key for key in typed if not _is_default(key, typed, declared))
    if "namePrefix" not in given and (prefix := _kept_prefix(typed.get("dataStorageAccount"))):
        # Adopting kept data with the one value copied from the old stack: its prefix is in the name.
        typed["namePrefix"] = prefix
    for key, replacement in RETIRED_KEYS.items():
        if config.get(key) is not None:
            problems.append(Problem(key, f"is no longer read: {replacement}", config.get(key)))
    runs = _validate(typed, problems, mlproject, given)
    if problems:
        raise SettingsError(problems)

    fields = {f.name: typed[config_key(f.name)] for f in dataclasses.fields(Settings)}
    fields["kubernetes_version"] = fields["kubernetes_version"] or None
    fields["data_storage_account"] = fields["data_storage_account"] or None
    fields["database_server_name"] = fields["database_server_name"] or None
    fields["deployer_ip_address"] = fields["deployer_ip_address"] or None
    fields["allowed_source_ranges"] = tuple(str(cidr) for cidr in fields["allowed_source_ranges"])
    fields["alert_emails"] = tuple(dict.fromkeys(email.lower() for email in fields["alert_emails"]))
    fields["llm_provider_cidrs"] = tuple(
        str(ipaddress.ip_network(str(cidr), strict=False)) for cidr in fields["llm_provider_cidrs"]
    )
    # Canonical form: a single address becomes /32, as AKS stores it.
    fields["api_server_authorized_ip_ranges"] = tuple(
        str(ipaddress.ip_network(str(cidr))) for cidr in fields["api_server_authorized_ip_ranges"]
    )
    fields["entra_allowed_groups"] = _canonical_guids(fields["entra_allowed_groups"])
    fields["entra_admin_groups"] = _canonical_guids(fields["entra_admin_groups"])
    fields["operators"] = _canonical_guids(fields["operators"])
    group = fields["operators_group"]
    fields["operators_group"] = str(uuid.UUID(group)) if group else None
    fields["runs"] = runs
    return Settings(**fields)
