"""The Azure foundation under Pulumi mocks: what `pulumi up` would declare, per configuration.

Each configuration runs the whole program in a fresh mock runtime (tests/pulumi_mocks.py); the tests
check the inputs a reviewer would check. Expected values come from the stack config plus Pulumi.yaml's
defaults, never from a recorded run; the built-in role GUIDs below are Azure's published ids, written
out on purpose so a typo in components/roles.py cannot hide.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_mocks import (
    API_SERVER,
    API_SERVER_CA,
    CLUSTER_PRINCIPAL_ID,
    DEPLOYING_USER_OBJECT_ID,
    KUBELET_OBJECT_ID,
    OIDC_ISSUER_URL,
    REPO_ROOT,
    SUBSCRIPTION_ID,
    TENANT_ID,
    ProgramRun,
    RecordingMocks,
    is_secret,
    plain,
    run_program,
)

import alerts
from components.cluster_access import ACCESS_CHECKS, ACCESS_TIMEOUT_SECONDS, AKS_SERVER_APP_ID
from settings import declared_config

BUILTIN_ROLES = {
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "AcrPush": "8311e382-0749-4cb8-b61a-304f252e45ec",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Azure Kubernetes Service Cluster User Role": "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",
    "Azure Kubernetes Service RBAC Cluster Admin": "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
}

CONFIGURATIONS = {
    "defaults": {},
    "no-jobs-pool": {"jobsNodePool": False},
    "autoscale": {"systemNodeAutoscale": True, "systemNodeMinCount": 2, "systemNodeMaxCount": 5},
    "fixed-count": {"systemNodeAutoscale": False, "systemNodeCount": 4},
    "delete-data": {"dataRetention": "delete"},
    "retain-data": {"dataRetention": "retain", "backupRetentionDays": 90, "softDeleteRetentionDays": 365},
    "custom": {
        "namePrefix": "mlops7",
        "location": "northeurope",
        "kubernetesVersion": "1.33",
        "namespace": "ml-platform",
        "trackingServiceAccount": "tracker",
        "acrSku": "Premium",
        "storageSku": "Standard_ZRS",
        "fileShareQuotaGib": 512,
        "logRetentionDays": 90,
        "jobsNodeMaxCount": 7,
        "jobsNodeVmSize": "Standard_E8s_v5",
        "mysqlDiskSku": "Premium_ZRS",
        "mysqlDiskSizeGib": 128,
        "apiServerAuthorizedIpRanges": ["203.0.113.0/24", "198.51.100.7"],
        "deployerPasswordLifetimeDays": 90,
        "exportDeployerPassword": True,
    },
}
# Tests whose subject varies with a setting run over every configuration; the rest over two.
EVERY_CONFIGURATION = pytest.mark.parametrize("case", list(CONFIGURATIONS), indirect=True)
DEFAULT_AND_CUSTOM = pytest.mark.parametrize("case", ["defaults", "custom"], indirect=True)

CLUSTER = "azure-native:containerservice:ManagedCluster"
AGENT_POOL = "azure-native:containerservice:AgentPool"
ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
STORAGE_ACCOUNT = "azure-native:storage:StorageAccount"
REGISTRY = "azure-native:containerregistry:Registry"
RESOURCE_GROUP = "azure-native:resources:ResourceGroup"
DISK = "azure-native:compute:Disk"
LOCK = "azure-native:authorization:ManagementLockAtResourceGroupLevel"


def effective(config: dict[str, Any]) -> dict[str, Any]:
    """The values the program should use: Pulumi.yaml defaults overlaid with the stack config."""
    return {key: decl["default"] for key, decl in declared_config().items()} | config


def role_definition(name: str) -> str:
    guid = BUILTIN_ROLES[name]
    return f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


@pytest.fixture(scope="module")
def case(request) -> tuple[dict[str, Any], ProgramRun]:
    """(effective config, a fresh run of the program) for the configuration named by the parameter.

    Each configuration runs once per module in its own mock runtime (new monitor, root stack and
    config); the tests only read that record, so none can influence another, and the suite stays fast.
    """
    config = CONFIGURATIONS[request.param]
    return effective(config), run_program(config)


@EVERY_CONFIGURATION
def test_declares_every_foundation_resource_once(case):
    cfg, run = case
    expected = {
        RESOURCE_GROUP: 2,
        "azure-native:operationalinsights:Workspace": 1,
        CLUSTER: 1,
        AGENT_POOL: 1 if cfg["jobsNodePool"] else 0,
        REGISTRY: 1,
        "azuread:index/application:Application": 1,
        "azuread:index/servicePrincipal:ServicePrincipal": 1,
        "azuread:index/servicePrincipalPassword:ServicePrincipalPassword": 1,
        ROLE_ASSIGNMENT: 6,
        # The data account (artifacts, backups), the project files account and the certificate account.
        STORAGE_ACCOUNT: 3,
        DISK: 1,
        "azure-native:storage:BlobContainer": 2,
        "azure-native:storage:BlobContainerImmutabilityPolicy": 1,
        "azure-native:storage:BlobServiceProperties": 1,
        "azure-native:storage:ManagementPolicy": 1,
        "azure-native:storage:FileShare": 2,
        LOCK: 1 if cfg["dataRetention"] == "retain" else 0,
        # The tracking server's and the backup Job's.
        "azure-native:managedidentity:UserAssignedIdentity": 2,
        "azure-native:managedidentity:FederatedIdentityCredential": 2,
        "random:index/randomString:RandomString": 4,  # three storage accounts' suffixes, the registry's
        "pulumi:providers:kubernetes": 1,
        # Managed Prometheus and the alerts (components/alerts.py): one rule group per group of the rule file.
        "azure-native:monitor:AzureMonitorWorkspace": 1,
        "azure-native:monitor:DataCollectionEndpoint": 1,
        "azure-native:monitor:DataCollectionRule": 1,
        "azure-native:monitor:DataCollectionRuleAssociation": 2,
        "azure-native:monitor:ActionGroup": 1,
        "azure-native:alertsmanagement:PrometheusRuleGroup": len(alerts.groups()),
    }
    counts = run.type_counts()
    assert {t: counts.get(t, 0) for t in expected} == expected
    # Nothing else from Azure is declared.
    azure_types = {t for t in counts if t.startswith(("azure-native:", "azuread:"))}
    assert azure_types <= set(expected)


@DEFAULT_AND_CUSTOM
def test_every_custom_resource_is_a_child_of_a_component(case):
    _, run = case
    for resource in run.resources:
        # The stack-wide checks, declared first: the operators ledger, then the guards.
        if resource.custom and resource.name not in ("operators", "data-guard", "in-place-guard"):
            assert "mlflow-aks:" in resource.options["parent"].split("::")[2], resource.name


# Every role assignment the program can declare, by resource name: (role, principal, scope), the
# principal and scope read from the run. A new assignment, or a wider scope or role, fails
# test_every_role_assignment_is_in_the_table until it is written here.
def expected_assignments(cfg: dict[str, Any], run: ProgramRun) -> dict[str, tuple[str, str, str]]:
    deployer_sp = run.one("azuread:index/servicePrincipal:ServicePrincipal").outputs["objectId"]
    table = {
        "registry-kubelet-acr-pull": (role_definition("AcrPull"), KUBELET_OBJECT_ID, run.one(REGISTRY).id),
        # The deployer service principal only pushes images: AcrPush, nothing on the cluster.
        "deployer-acr-push": (role_definition("AcrPush"), deployer_sp, run.one(REGISTRY).id),
        # Whoever runs `pulumi up` installs the releases with their own Entra ID identity.
        "cluster-deployer-cluster-admin": (
            role_definition("Azure Kubernetes Service RBAC Cluster Admin"),
            DEPLOYING_USER_OBJECT_ID,
            run.one(CLUSTER).id,
        ),
        # The tracking server (and gc) write artifacts: that container only, no backups.
        "tracking-identity-blob-data-contributor": (
            role_definition("Storage Blob Data Contributor"),
            principal(run, "tracking-identity"),
            run.named("storage-artifacts").id,
        ),
        # The backup Job (and restores) write backups: that container only, no artifacts.
        "backup-identity-backups-data-contributor": (
            role_definition("Storage Blob Data Contributor"),
            principal(run, "backup-identity"),
            run.named("storage-backups").id,
        ),
        # The cluster's control-plane identity attaches the MySQL disk that lives outside the node
        # resource group: Contributor on that one disk, not on its resource group.
        "mysql-disk-cluster-attach": (role_definition("Contributor"), CLUSTER_PRINCIPAL_ID, run.one(DISK).id),
    }
    if cfg["exposure"] == "public":
        # The cluster's load balancer takes the stack's public IP, which lives in the platform group.
        table["public-endpoint-cluster-network"] = (
            f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/"
            "4d97b98b-1d4f-4787-a291-c67834d212e7",  # Network Contributor
            CLUSTER_PRINCIPAL_ID,
            run.named("groups-platform").id,
        )
    return table


def principal(run: ProgramRun, identity: str) -> str:
    """Principal id of the workload identity component `identity` (tracking-identity, backup-identity)."""
    return run.named(f"{identity}-identity").outputs["principalId"]


ASSIGNMENT_CONFIGURATIONS = {
    **{name: CONFIGURATIONS[name] for name in ("defaults", "custom", "delete-data")},
    "public": {"exposure": "public", "allowedSourceRanges": ["203.0.113.0/24"]},
}


@pytest.fixture(scope="module", params=list(ASSIGNMENT_CONFIGURATIONS))
def assignment_case(request) -> tuple[dict[str, Any], ProgramRun]:
    config = ASSIGNMENT_CONFIGURATIONS[request.param]
    return effective(config), run_program(config)


def test_every_role_assignment_is_in_the_table(assignment_case):
    cfg, run = assignment_case
    expected = expected_assignments(cfg, run)
    actual = {
        a.name: (a.inputs["roleDefinitionId"], a.inputs["principalId"], a.inputs["scope"])
        for a in run.of_type(ROLE_ASSIGNMENT)
    }
    assert actual == expected
    # Identities the program creates are declared as service principals (no replication wait); the
    # deploying principal has the type Entra ID gives it (a person here).
    for assignment in run.of_type(ROLE_ASSIGNMENT):
        expected_type = (
            "User" if assignment.inputs["principalId"] == DEPLOYING_USER_OBJECT_ID else "ServicePrincipal"
        )
        assert assignment.inputs["principalType"] == expected_type


def _at_or_above(scope: str, resource_id: str) -> bool:
    """Whether an assignment at `scope` reaches `resource_id` (Azure RBAC scopes inherit downwards)."""
    return resource_id == scope or resource_id.startswith(f"{scope.rstrip('/')}/")


def test_only_the_backup_identity_reaches_the_backups(assignment_case):
    """No assignment the program makes at the backups container or above it (account, group,
    subscription) names the tracking identity, or anyone but the backup identity; and the backup identity
    reaches nothing but that container."""
    _, run = assignment_case
    backups = run.named("storage-backups").id
    reaching = [a for a in run.of_type(ROLE_ASSIGNMENT) if _at_or_above(a.inputs["scope"], backups)]
    assert [a.inputs["principalId"] for a in reaching] == [principal(run, "backup-identity")]
    assert principal(run, "tracking-identity") not in {a.inputs["principalId"] for a in reaching}
    artifacts = run.named("storage-artifacts").id
    for identity, only in (("tracking-identity", artifacts), ("backup-identity", backups)):
        scopes = [
            a.inputs["scope"]
            for a in run.of_type(ROLE_ASSIGNMENT)
            if a.inputs["principalId"] == principal(run, identity)
        ]
        assert scopes == [only], identity


def test_a_ci_service_principal_running_pulumi_up_is_assigned_as_a_service_principal():
    """Azure refuses an assignment whose principalType differs from the principal's (and the SDK would
    send `User`): the type comes from Entra ID's directory object of the deploying principal."""
    run = run_program({}, mocks=RecordingMocks(deploying_principal_type="ServicePrincipal"))
    admin = run.named("cluster-deployer-cluster-admin")
    assert admin.inputs["principalId"] == DEPLOYING_USER_OBJECT_ID
    assert admin.inputs["principalType"] == "ServicePrincipal"
    (lookup,) = [c for c in run.calls if c.token == "azuread:index/getDirectoryObject:getDirectoryObject"]
    assert lookup.args["objectId"] == DEPLOYING_USER_OBJECT_ID


def data_account(run: ProgramRun):
    return run.named("storage-account")


def files_account(run: ProgramRun):
    return run.named("projects-account")


@DEFAULT_AND_CUSTOM
def test_storage_account_is_locked_down_and_globally_named(case):
    cfg, run = case
    account = data_account(run).inputs
    suffix = run.named("storage-suffix")
    assert account["kind"] == "StorageV2"
    assert account["sku"] == {"name": cfg["storageSku"]}
    assert account["enableHttpsTrafficOnly"] is True
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["allowBlobPublicAccess"] is False
    # No account key (or SAS signed with one) reads or deletes an artifact or a backup: Entra ID only,
    # also in the portal.
    assert account["allowSharedKeyAccess"] is False
    assert account["defaultToOAuthAuthentication"] is True
    assert account["accountName"] == f"{cfg['namePrefix']}data{suffix.outputs['result']}"
    assert re.fullmatch(r"[a-z0-9]{3,24}", account["accountName"])
    assert suffix.inputs["upper"] is False and suffix.inputs["special"] is False

    containers = {
        c.inputs["containerName"]: c.inputs for c in run.of_type("azure-native:storage:BlobContainer")
    }
    assert set(containers) == {"mlflow-artifacts", "mlflow-backups"}
    assert {c["publicAccess"] for c in containers.values()} == {"None"}
    assert {c["accountName"] for c in containers.values()} == {data_account(run).outputs["name"]}
    data_group = run.named("groups-data").outputs["name"]
    assert {account["resourceGroupName"]} | {c["resourceGroupName"] for c in containers.values()} == {
        data_group
    }
    # Nothing lists this account's keys (the program reads only the project files and certificate accounts').
    listed = [c.args["accountName"] for c in run.calls if c.token.endswith(":listStorageAccountKeys")]
    assert sorted(listed) == sorted(
        [files_account(run).outputs["name"], run.named("certificates-account").outputs["name"]]
    )


@DEFAULT_AND_CUSTOM
def test_the_project_share_has_an_account_of_its_own_in_the_platform_group(case):
    """The share needs key-based SMB (the CSI mount, the upload): its account takes keys, holds nothing but
    the share, and is not data: no retain, no protect, no import, no lock."""
    cfg, run = case
    account = files_account(run)
    suffix = run.named("projects-suffix")
    inputs = account.inputs
    assert inputs["accountName"] == f"{cfg['namePrefix']}files{suffix.outputs['result']}"
    assert re.fullmatch(r"[a-z0-9]{3,24}", inputs["accountName"])
    assert inputs["accountName"] != data_account(run).inputs["accountName"]
    assert inputs["resourceGroupName"] == run.named("groups-platform").outputs["name"]
    assert inputs["kind"] == "StorageV2"
    assert inputs["sku"] == {"name": cfg["storageSku"]}
    assert inputs["allowSharedKeyAccess"] is True
    assert inputs["enableHttpsTrafficOnly"] is True and inputs["minimumTlsVersion"] == "TLS1_2"
    assert inputs["allowBlobPublicAccess"] is False
    share = run.one("azure-native:storage:FileShare", "projects-share")
    assert share.inputs["shareName"] == "mlflow-projects"
    assert share.inputs["accountName"] == account.outputs["name"]
    assert share.inputs["resourceGroupName"] == inputs["resourceGroupName"]
    assert share.inputs["shareQuota"] == cfg["fileShareQuotaGib"]
    assert share.inputs["enabledProtocols"] == "SMB"
    for resource in (account, share, suffix):
        options = resource.options
        assert (options["retainOnDelete"], options["protect"], options["importId"]) == (False, False, ""), (
            resource.name
        )
    assert run.exports["projectsStorageAccount"] == account.outputs["name"]
    assert run.exports["projectsShare"] == "mlflow-projects"


@EVERY_CONFIGURATION
def test_deleted_and_overwritten_blobs_stay_recoverable_for_the_configured_days(case):
    """Blob soft delete, container soft delete and versioning on the data account, with the days from
    config (Azure's 1-365); deleting soft-deleted versions early stays off."""
    cfg, run = case
    days = cfg["softDeleteRetentionDays"]
    service = run.one("azure-native:storage:BlobServiceProperties")
    inputs = service.inputs
    assert inputs["accountName"] == data_account(run).outputs["name"]
    assert inputs["resourceGroupName"] == run.named("groups-data").outputs["name"]
    assert inputs["blobServicesName"] == "default"
    assert inputs["isVersioningEnabled"] is True
    assert inputs["deleteRetentionPolicy"] == {"enabled": True, "days": days}
    assert inputs["containerDeleteRetentionPolicy"] == {"enabled": True, "days": days}
    assert "allowPermanentDelete" not in inputs["deleteRetentionPolicy"]
    # Kept with the data: azure-native's delete would reset the properties (and so the protection).
    keep = cfg["dataRetention"] == "retain"
    assert service.options["retainOnDelete"] is keep
    assert service.options["protect"] is (keep and not cfg["allowDataReplacement"])


@EVERY_CONFIGURATION
def test_the_lifecycle_policy_bounds_backups_and_previous_versions(case):
    """The retention is the account's rule, not the backup job's good behaviour: it holds whatever runs.
    With versioning on, deleting a blob only makes it a previous version, so each rule also deletes the
    versions; every lifecycle delete is then soft-deleted for softDeleteRetentionDays, and gone after."""
    cfg, run = case
    policy = run.one("azure-native:storage:ManagementPolicy")
    inputs = policy.inputs
    assert inputs["accountName"] == data_account(run).outputs["name"]
    assert inputs["managementPolicyName"] == "default"
    rules = {rule["name"]: rule for rule in inputs["policy"]["rules"]}
    assert set(rules) == {"expire-database-backups", "expire-replaced-artifacts"}
    for rule in rules.values():
        assert rule["enabled"] is True and rule["type"] == "Lifecycle"
    backups = rules["expire-database-backups"]["definition"]
    assert backups["filters"] == {"blobTypes": ["blockBlob"], "prefixMatch": ["mlflow-backups/"]}
    assert backups["actions"] == {
        "baseBlob": {"delete": {"daysAfterModificationGreaterThan": cfg["backupRetentionDays"]}},
        "version": {"delete": {"daysAfterCreationGreaterThan": cfg["backupRetentionDays"]}},
    }
    artifacts = rules["expire-replaced-artifacts"]["definition"]
    assert artifacts["filters"] == {"blobTypes": ["blockBlob"], "prefixMatch": ["mlflow-artifacts/"]}
    # Current artifacts are MLflow's to delete (gc); only what was deleted or overwritten expires.
    assert artifacts["actions"] == {
        "version": {"delete": {"daysAfterCreationGreaterThan": cfg["softDeleteRetentionDays"]}}
    }
    # The same resource as before versions were expired (its old name), so no `pulumi up` replaces it.
    assert policy.name == "storage-lifecycle"


@EVERY_CONFIGURATION
def test_the_data_group_is_locked_while_retained(case):
    """CanNotDelete on the data group only with `retain`. The lock is not protected (switching to `delete`
    removes it on the next `pulumi up`), but the protected storage account depends on it, so `pulumi
    destroy --exclude-protected` keeps it (tests/test_data_lifecycle.py simulates that)."""
    cfg, run = case
    locks = run.of_type(LOCK)
    if cfg["dataRetention"] != "retain":
        assert locks == []
        assert not any("data-lock" in urn for urn in data_account(run).options["dependencies"])
        return
    (lock,) = locks
    assert lock.name == "groups-data-lock"
    assert lock.inputs["level"] == "CanNotDelete"
    assert lock.inputs["resourceGroupName"] == run.named("groups-data").outputs["name"]
    assert lock.inputs["lockName"] == "mlflow-aks-keep-data"
    assert "docs/operations.md" in lock.inputs["notes"] and len(lock.inputs["notes"]) <= 512
    assert (
        lock.id
        == f"{run.named('groups-data').id}/providers/Microsoft.Authorization/locks/mlflow-aks-keep-data"
    )
    assert (lock.options["protect"], lock.options["retainOnDelete"]) == (False, False)
    assert any(urn.endswith("::groups-data-lock") for urn in data_account(run).options["dependencies"])


@EVERY_CONFIGURATION
def test_role_assignments_inside_the_locked_group_are_left_on_destroy(case):
    """A CanNotDelete lock refuses to delete role assignments at or under its scope (ScopeLocked). Every
    assignment scoped inside the data group is therefore retained on delete while the lock is on, and only
    then; the rest (registry, cluster) are deleted as before."""
    cfg, run = case
    locked = cfg["dataRetention"] == "retain"
    data_group_id = run.named("groups-data").id
    inside = set()
    for assignment in run.of_type(ROLE_ASSIGNMENT):
        scope = assignment.inputs["scope"]
        if scope == data_group_id or scope.startswith(f"{data_group_id}/"):
            inside.add(assignment.name)
            assert assignment.options["retainOnDelete"] is locked, assignment.name
        else:
            assert assignment.options["retainOnDelete"] is False, assignment.name
    assert inside == {
        "tracking-identity-blob-data-contributor",
        "backup-identity-backups-data-contributor",
        "mysql-disk-cluster-attach",
    }


@EVERY_CONFIGURATION
def test_mysql_disk_is_in_the_data_group_and_attaches_to_the_nodes(case):
    cfg, run = case
    disk = run.one(DISK)
    inputs = disk.inputs
    assert inputs["resourceGroupName"] == run.named("groups-data").outputs["name"]
    assert inputs["diskName"] == f"{cfg['namePrefix']}-mysql"
    assert inputs["location"] == cfg["location"]
    assert inputs["sku"] == {"name": cfg["mysqlDiskSku"]}
    assert inputs["diskSizeGB"] == cfg["mysqlDiskSizeGib"]
    assert inputs["creationData"] == {"createOption": "Empty"}
    assert inputs["networkAccessPolicy"] == "DenyAll"
    assert inputs["publicNetworkAccess"] == "Disabled"
    # A disk without a zone attaches only to non-zonal nodes: no pool may be pinned to zones.
    assert "zones" not in inputs
    (system,) = run.one(CLUSTER).inputs["agentPoolProfiles"]
    pools = [system, *(pool.inputs for pool in run.of_type(AGENT_POOL))]
    assert all("availabilityZones" not in pool for pool in pools)
    # With dataRetention delete, destroy removes the disk only after the cluster that has it attached. A
    # retained disk must not depend on the cluster: `pulumi destroy --exclude-protected` keeps every
    # dependency of a protected resource, and would keep the cluster running.
    on_cluster = any(urn.endswith(f"::{run.one(CLUSTER).name}") for urn in disk.options["dependencies"])
    assert on_cluster is (cfg["dataRetention"] == "delete")


@DEFAULT_AND_CUSTOM
def test_registry_has_admin_user_off_and_a_random_global_name(case):
    cfg, run = case
    registry = run.one(REGISTRY).inputs
    suffix = run.named("registry-suffix").outputs["result"]
    assert registry["adminUserEnabled"] is False
    assert registry["sku"] == {"name": cfg["acrSku"]}
    assert registry["registryName"] == f"{cfg['namePrefix']}acr{suffix}"
    assert re.fullmatch(r"[a-zA-Z0-9]{5,50}", registry["registryName"])
    assert registry["resourceGroupName"] == run.named("groups-platform").outputs["name"]


@DEFAULT_AND_CUSTOM
def test_cluster_identity_rbac_oidc_workload_identity_and_monitoring(case):
    cfg, run = case
    cluster = run.one(CLUSTER).inputs
    workspace = run.one("azure-native:operationalinsights:Workspace")
    assert cluster["identity"] == {"type": "SystemAssigned"}
    assert cluster["enableRBAC"] is True
    assert cluster["oidcIssuerProfile"] == {"enabled": True}
    assert cluster["securityProfile"] == {"workloadIdentity": {"enabled": True}}
    assert cluster["addonProfiles"]["omsagent"] == {
        "enabled": True,
        "config": {"logAnalyticsWorkspaceResourceID": workspace.id},
    }
    assert workspace.inputs["retentionInDays"] == cfg["logRetentionDays"]
    assert cluster["networkProfile"]["networkPolicy"] in ("azure", "calico", "cilium")
    assert cluster.get("kubernetesVersion") == (cfg["kubernetesVersion"] or None)
    assert cluster["location"] == cfg["location"]


@EVERY_CONFIGURATION
def test_system_pool_count_or_autoscale_from_config(case):
    cfg, run = case
    (system,) = run.one(CLUSTER).inputs["agentPoolProfiles"]
    assert system["mode"] == "System"
    assert system["vmSize"] == cfg["systemNodeVmSize"]
    if cfg["systemNodeAutoscale"]:
        assert system["enableAutoScaling"] is True
        assert (system["minCount"], system["maxCount"]) == (
            cfg["systemNodeMinCount"],
            cfg["systemNodeMaxCount"],
        )
    else:
        assert system["enableAutoScaling"] is False
        assert system["count"] == cfg["systemNodeCount"]
        assert "minCount" not in system and "maxCount" not in system


@EVERY_CONFIGURATION
def test_autoscaled_node_counts_are_not_drift(case):
    """An autoscaled pool's `count` belongs to the cluster autoscaler once the pool exists: the program
    ignores it, so `pulumi up --refresh` never resizes a pool back. A fixed-size pool's count is config."""
    cfg, run = case
    ignored = run.one(CLUSTER).options["ignoreChanges"]
    if cfg["systemNodeAutoscale"]:
        assert ignored == ["agentPoolProfiles[0].count"]
    else:
        assert ignored == []
    for pool in run.of_type(AGENT_POOL):  # the jobs pool always autoscales (0..max)
        assert pool.inputs["enableAutoScaling"] is True
        assert pool.options["ignoreChanges"] == ["count"]


@EVERY_CONFIGURATION
def test_jobs_pool_scales_from_zero_and_only_takes_run_jobs(case):
    cfg, run = case
    pools = run.of_type(AGENT_POOL)
    if not cfg["jobsNodePool"]:
        assert pools == []
        return
    (pool,) = pools
    jobs = pool.inputs
    assert jobs["mode"] == "User"
    assert jobs["enableAutoScaling"] is True
    assert jobs["minCount"] == 0
    assert jobs["maxCount"] == cfg["jobsNodeMaxCount"]
    assert jobs["vmSize"] == cfg["jobsNodeVmSize"]
    assert jobs["nodeTaints"] == ["mlflow-aks/pool=jobs:NoSchedule"]
    assert jobs["nodeLabels"] == {"mlflow-aks/pool": "jobs"}
    assert jobs["resourceName"] == run.one(CLUSTER).outputs["name"]


@DEFAULT_AND_CUSTOM
def test_a_new_jobs_vm_size_replaces_the_pool_old_pool_first(case):
    """AKS cannot resize a pool; the jobs pool's name is fixed, so its replacement deletes it first."""
    cfg, run = case
    (pool,) = run.of_type(AGENT_POOL)
    assert cfg["jobsNodePool"] and pool.inputs["vmSize"] == cfg["jobsNodeVmSize"]
    assert pool.options["replaceOnChanges"] == ["vmSize"]
    assert pool.options["deleteBeforeReplace"] is True


@DEFAULT_AND_CUSTOM
def test_the_in_place_guard_records_what_azure_cannot_change_and_where_it_is(case):
    cfg, run = case
    guard = plain(run.one("pulumi-python:dynamic/mlflow-aks:InPlaceGuard").inputs)
    assert guard["values"] == {
        "systemNodeVmSize": cfg["systemNodeVmSize"],
        "mysqlDiskSku": cfg["mysqlDiskSku"],
    }
    cluster = run.one(CLUSTER).inputs
    assert guard["azure"] == {
        "subscription": SUBSCRIPTION_ID,
        "platform_group": cluster["resourceGroupName"],
        "cluster": cluster["resourceName"],
        "system_pool": cluster["agentPoolProfiles"][0]["name"],
        "data_group": run.one(DISK).inputs["resourceGroupName"],
        "mysql_disk": run.one(DISK).inputs["diskName"],
    }
    # The deployer's address is looked up only to check authorized ranges.
    assert run.detected == (1 if cfg["apiServerAuthorizedIpRanges"] else 0)


@EVERY_CONFIGURATION
def test_data_retention_decides_what_destroy_leaves(case):
    cfg, run = case
    keep = cfg["dataRetention"] == "retain"
    data_resources = {
        "groups-data",
        "storage-account",
        "storage-artifacts",
        "storage-backups",
        "storage-blob-service",
        "storage-lifecycle",
        "mysql-disk-disk",
        # Scoped inside the locked data group, where Azure refuses to delete them (see above).
        "tracking-identity-blob-data-contributor",
        "backup-identity-backups-data-contributor",
        "mysql-disk-cluster-attach",
    }
    # Whatever dataRetention: azure-native cannot delete it (pulumi/pulumi-azure-native#2156), and it
    # goes with its container.
    always = {"storage-backups-retention"}
    for resource in run.resources:
        expected = (keep and resource.name in data_resources) or resource.name in always
        assert resource.options["retainOnDelete"] is expected, resource.name


@DEFAULT_AND_CUSTOM
def test_exports_are_complete_and_secrets_stay_secret(case):
    cfg, run = case
    assert set(run.exports) >= {
        "platformResourceGroup",
        "dataResourceGroup",
        "clusterName",
        "kubeconfig",
        "acrLoginServer",
        "storageAccount",
        "artifactsContainer",
        "projectsStorageAccount",
        "projectsShare",
        "deployerClientId",
        "trackingIdentityClientId",
        "backupIdentityClientId",
        "tenantId",
    }
    assert "kubeconfig" in run.secret_exports
    assert not run.secret_exports & {"clusterName", "acrLoginServer", "storageAccount", "deployerClientId"}
    assert run.exports["dataResourceGroup"] == f"{cfg['namePrefix']}-data"
    assert run.exports["platformResourceGroup"] == f"{cfg['namePrefix']}-platform"
    # The deployer's password leaves the stack only when asked for, and then as a secret.
    if cfg["exportDeployerPassword"]:
        assert "deployerPassword" in run.secret_exports
        assert run.exports["deployerPassword"] == run.named("deployer-password").outputs["value"]
    else:
        assert "deployerPassword" not in run.exports
    password = run.named("deployer-password").outputs["value"]
    for key, value in run.exports.items():
        if key not in run.secret_exports:
            assert password not in repr(value), key


@DEFAULT_AND_CUSTOM
def test_cluster_signs_in_through_entra_id_with_azure_rbac_and_no_local_accounts(case):
    cfg, run = case
    cluster = run.one(CLUSTER).inputs
    assert cluster["aadProfile"] == {"managed": True, "enableAzureRBAC": True, "tenantID": TENANT_ID}
    assert cluster["disableLocalAccounts"] is True
    # A single address is sent as /32, the form AKS stores; empty means no IP restriction.
    expected = [r if "/" in r else f"{r}/32" for r in cfg["apiServerAuthorizedIpRanges"]]
    assert cluster["apiServerAccessProfile"] == {"authorizedIPRanges": expected}


@DEFAULT_AND_CUSTOM
def test_kubeconfig_is_an_entra_kubelogin_kubeconfig_without_any_credential(case):
    """The exported kubeconfig and the provider's: the cluster's server and CA from Azure, and one user,
    kubelogin with the Azure CLI's login. No client certificate, key or token anywhere; still a secret."""
    _, run = case
    provider = run.one("pulumi:providers:kubernetes").inputs
    assert is_secret(provider["kubeconfig"])
    assert provider["kubeconfig"]["value"] == run.exports["kubeconfig"]
    assert "kubeconfig" in run.secret_exports
    config = yaml.safe_load(run.exports["kubeconfig"])
    assert config["clusters"] == [
        {"name": "mlflow-aks", "cluster": {"server": API_SERVER, "certificate-authority-data": API_SERVER_CA}}
    ]
    (user,) = config["users"]
    assert user["user"] == {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubelogin",
            "args": ["get-token", "--login", "azurecli", "--server-id", AKS_SERVER_APP_ID],
            "env": None,
            "installHint": "kubelogin is not on PATH: install it with `az aks install-cli`",
            "provideClusterInfo": False,
        }
    }
    for credential in ("client-certificate", "client-key", "token:", "password", "devicecode"):
        assert credential not in run.exports["kubeconfig"]
    (credentials_call,) = [
        c for c in run.calls if c.token == "azure-native:containerservice:listManagedClusterUserCredentials"
    ]
    assert credentials_call.args["format"] == "exec"


@DEFAULT_AND_CUSTOM
def test_kubernetes_waits_until_the_deploying_principal_may_deploy(case):
    """The provider, and through it every Kubernetes and Helm resource, depends on the access check;
    the check polls the cluster's API server as the deploying principal, once its role assignment exists."""
    _, run = case
    access = run.one("pulumi-python:dynamic/mlflow-aks:ClusterAccess")
    admin = run.named("cluster-deployer-cluster-admin")
    inputs = plain(access.inputs)
    assert inputs["server"] == API_SERVER
    assert inputs["certificate_authority_data"] == API_SERVER_CA
    assert inputs["principal_id"] == DEPLOYING_USER_OBJECT_ID == admin.inputs["principalId"]
    assert inputs["role_assignment_id"] == admin.id
    assert inputs["checks"] == [dict(check) for check in ACCESS_CHECKS]
    assert inputs["timeout_seconds"] == ACCESS_TIMEOUT_SECONDS
    assert any(urn.endswith("::cluster-deployer-cluster-admin") for urn in access.options["dependencies"])
    provider = run.one("pulumi:providers:kubernetes")
    assert any(urn.endswith(f"::{access.name}") for urn in provider.options["dependencies"])
    kubernetes_resources = [r for r in run.resources if r.type.startswith("kubernetes:")]
    assert kubernetes_resources
    assert all(r.provider and f"::{provider.name}::" in r.provider for r in kubernetes_resources)


def test_the_kubernetes_provider_never_drops_state_for_an_unreachable_cluster(monkeypatch):
    """An expired `az login` or a laptop outside the authorized ranges makes the cluster "unreachable" to
    the provider; with deleteUnreachable a `pulumi refresh` would then forget every release while it keeps
    running (pulumi/pulumi-kubernetes#1485). Unset, the provider errors instead, and only an operator who
    exports PULUMI_K8S_DELETE_UNREACHABLE for one command (docs/operations.md) turns it on."""
    # The SDK reads the variable into the provider's inputs at program time: not set here, as by default.
    monkeypatch.delenv("PULUMI_K8S_DELETE_UNREACHABLE", raising=False)
    provider = run_program({}).one("pulumi:providers:kubernetes")
    assert "deleteUnreachable" not in provider.inputs
    assert "skipUpdateUnreachable" not in provider.inputs
    assert is_secret(provider.inputs["kubeconfig"])


def test_the_destroy_command_for_a_gone_cluster_sets_what_the_provider_reads():
    """docs/operations.md gives one command for a stack whose cluster is gone: it must set the variable
    the installed pulumi_kubernetes reads for deleteUnreachable, and refresh first (a Helm release's
    delete ignores the variable, pulumi/pulumi-kubernetes#2675; its read honours it)."""
    import pulumi_kubernetes

    source = (Path(pulumi_kubernetes.__file__).parent / "provider.py").read_text()
    (variable,) = set(re.findall(r"delete_unreachable = _utilities.get_env_bool\('(\w+)'\)", source))
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    section = operations.split("### When the cluster is already gone", 1)[1].split("\n### ", 1)[0]
    commands = [line for line in section.splitlines() if "pulumi destroy" in line and "=" in line]
    assert commands == [f"{variable}=true pulumi destroy --refresh --exclude-protected"]


@DEFAULT_AND_CUSTOM
def test_deployer_password_lives_the_configured_days_from_its_creation(case):
    """The end date is the PasswordExpiry resource's output (computed once, when it is created), never a
    date the program computes: the same config gives the same inputs, and the password is kept."""
    cfg, run = case
    expiry = run.one("pulumi-python:dynamic/mlflow-aks:PasswordExpiry")
    assert plain(expiry.inputs)["lifetime_days"] == cfg["deployerPasswordLifetimeDays"] <= 365
    assert any(urn.endswith("::deployer-sp") for urn in expiry.options["dependencies"])
    password = run.one("azuread:index/servicePrincipalPassword:ServicePrincipalPassword")
    assert any(urn.endswith(f"::{expiry.name}") for urn in password.options["dependencies"])
    sp = run.one("azuread:index/servicePrincipal:ServicePrincipal")
    assert password.inputs["servicePrincipalId"] == sp.outputs["id"]
    assert sp.inputs["clientId"] == run.one("azuread:index/application:Application").outputs["clientId"]


def test_the_password_end_date_is_the_one_the_expiry_resource_computed():
    end_date = "2027-05-29T09:15:42Z"

    def expiry_output(args):
        return {"end_date": end_date} if args.typ.endswith(":PasswordExpiry") else {}

    run = run_program({}, mocks=RecordingMocks(extra_outputs=expiry_output))
    password = run.one("azuread:index/servicePrincipalPassword:ServicePrincipalPassword")
    assert password.inputs["endDate"] == end_date


@DEFAULT_AND_CUSTOM
@pytest.mark.parametrize(
    ("identity", "azure_name", "service_account", "export"),
    [
        (
            "tracking-identity",
            "{namePrefix}-tracking-server",
            "{trackingServiceAccount}",
            "trackingIdentityClientId",
        ),
        ("backup-identity", "{namePrefix}-backup", "mlflow-backup", "backupIdentityClientId"),
    ],
)
def test_each_workload_identity_federates_with_its_own_service_account(
    case, identity, azure_name, service_account, export
):
    cfg, run = case
    uami = run.named(f"{identity}-identity")
    assert uami.inputs["resourceName"] == azure_name.format(**cfg)
    assert uami.inputs["resourceGroupName"] == run.named("groups-platform").outputs["name"]
    credential = run.named(f"{identity}-federation").inputs
    assert credential["issuer"] == OIDC_ISSUER_URL
    assert credential["subject"] == (
        f"system:serviceaccount:{cfg['namespace']}:{service_account.format(**cfg)}"
    )
    assert credential["audiences"] == ["api://AzureADTokenExchange"]
    assert credential["resourceName"] == uami.outputs["name"]
    assert run.exports[export] == uami.outputs["clientId"]


def test_the_tracking_identity_keeps_its_address_in_existing_stacks():
    """It was a TrackingIdentity component: the alias on the component (which the engine carries to its
    children, named as before) keeps the identity, its client id and its artifacts grant."""
    run = run_program({})
    component = run.named("tracking-identity")
    assert component.type == "mlflow-aks:foundation:WorkloadIdentity"
    assert any(
        'type: "mlflow-aks:foundation:TrackingIdentity"' in alias for alias in component.options["aliases"]
    )
    children = {r.name for r in run.resources if r.options["parent"].endswith("::tracking-identity")}
    assert children == {
        "tracking-identity-identity",
        "tracking-identity-federation",
        "tracking-identity-blob-data-contributor",
    }
    assert run.named("backup-identity").options["aliases"] == []


@EVERY_CONFIGURATION
def test_backups_are_write_once_for_the_retention_days(case):
    """Version-level WORM on the backups container with a default time-based retention policy of
    backupRetentionDays, unlocked; the lifecycle rule deletes a backup only once it is more than that old,
    so never while it is immutable."""
    cfg, run = case
    container = run.named("storage-backups")
    assert container.inputs["containerName"] == "mlflow-backups"
    assert container.inputs["immutableStorageWithVersioning"] == {"enabled": True}
    # Set when Azure creates a container, never changed after (no replacement of an older container).
    assert container.options["ignoreChanges"] == ["immutableStorageWithVersioning"]
    policy = run.one("azure-native:storage:BlobContainerImmutabilityPolicy")
    assert policy.name == "storage-backups-retention"
    assert policy.inputs == {
        "accountName": data_account(run).outputs["name"],
        "containerName": container.outputs["name"],
        "resourceGroupName": run.named("groups-data").outputs["name"],
        "immutabilityPolicyName": "default",
        "immutabilityPeriodSinceCreationInDays": cfg["backupRetentionDays"],
        "allowProtectedAppendWrites": False,
    }
    assert policy.id == f"{container.id}/immutabilityPolicies/default"
    # Versioning is version-level WORM's prerequisite.
    assert run.one("azure-native:storage:BlobServiceProperties").inputs["isVersioningEnabled"] is True
    rules = {r["name"]: r for r in run.one("azure-native:storage:ManagementPolicy").inputs["policy"]["rules"]}
    actions = rules["expire-database-backups"]["definition"]["actions"]
    assert actions["baseBlob"]["delete"] == {"daysAfterModificationGreaterThan": cfg["backupRetentionDays"]}
    assert actions["version"]["delete"] == {"daysAfterCreationGreaterThan": cfg["backupRetentionDays"]}
    assert policy.options["retainOnDelete"] is True
    assert policy.options["protect"] is (cfg["dataRetention"] == "retain" and not cfg["allowDataReplacement"])
    # The setup release (and so the first backup) waits for the policy.
    assert any(
        urn.endswith("::storage-backups-retention")
        for urn in run.named("mlflow-setup").options["dependencies"]
    )
