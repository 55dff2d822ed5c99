"""The Azure foundation under Pulumi mocks: what `pulumi up` would declare, per configuration.

Each configuration runs the whole program in a fresh mock runtime (tests/pulumi_mocks.py); the tests
check the inputs a reviewer would check. Expected values come from the stack config plus Pulumi.yaml's
defaults, never from a recorded run; the built-in role GUIDs below are Azure's published ids, written
out on purpose so a typo in components/roles.py cannot hide.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pulumi_mocks import (
    CLUSTER_PRINCIPAL_ID,
    KUBECONFIG,
    KUBELET_OBJECT_ID,
    OIDC_ISSUER_URL,
    SUBSCRIPTION_ID,
    ProgramRun,
    is_secret,
    run_program,
)

from settings import declared_config

BUILTIN_ROLES = {
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "AcrPush": "8311e382-0749-4cb8-b61a-304f252e45ec",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Azure Kubernetes Service Cluster User Role": "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
}

CONFIGURATIONS = {
    "defaults": {},
    "no-jobs-pool": {"jobsNodePool": False},
    "autoscale": {"systemNodeAutoscale": True, "systemNodeMinCount": 2, "systemNodeMaxCount": 5},
    "fixed-count": {"systemNodeAutoscale": False, "systemNodeCount": 4},
    "delete-data": {"dataRetention": "delete"},
    "retain-data": {"dataRetention": "retain", "backupRetentionDays": 90},
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
        ROLE_ASSIGNMENT: 7,
        STORAGE_ACCOUNT: 1,
        DISK: 1,
        "azure-native:storage:BlobContainer": 2,
        "azure-native:storage:ManagementPolicy": 1,
        "azure-native:storage:FileShare": 1,
        "azure-native:managedidentity:UserAssignedIdentity": 1,
        "azure-native:managedidentity:FederatedIdentityCredential": 1,
        "random:index/randomString:RandomString": 2,
        "pulumi:providers:kubernetes": 1,
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
        if resource.custom and resource.name != "data-guard":  # the stack-wide check, declared first
            assert "mlflow-aks:" in resource.options["parent"].split("::")[2], resource.name


@DEFAULT_AND_CUSTOM
def test_role_assignments_have_exact_role_principal_and_scope(case):
    _, run = case
    registry = run.one(REGISTRY)
    cluster = run.one(CLUSTER)
    deployer_sp = run.one("azuread:index/servicePrincipal:ServicePrincipal").outputs["objectId"]
    tracking = run.one("azure-native:managedidentity:UserAssignedIdentity").outputs["principalId"]
    container = run.named("storage-artifacts")
    backups = run.named("storage-backups")
    disk = run.one(DISK)

    expected = sorted(
        [
            (role_definition("AcrPull"), KUBELET_OBJECT_ID, registry.id),
            (role_definition("AcrPush"), deployer_sp, registry.id),
            (role_definition("Contributor"), deployer_sp, registry.id),
            (role_definition("Azure Kubernetes Service Cluster User Role"), deployer_sp, cluster.id),
            (role_definition("Storage Blob Data Contributor"), tracking, container.id),
            # The backup and gc Jobs run with the tracking server's identity: backups are written there.
            (role_definition("Storage Blob Data Contributor"), tracking, backups.id),
            # The cluster's control-plane identity attaches the MySQL disk that lives outside the node
            # resource group: Contributor on that one disk, not on its resource group.
            (role_definition("Contributor"), CLUSTER_PRINCIPAL_ID, disk.id),
        ]
    )
    assignments = run.of_type(ROLE_ASSIGNMENT)
    actual = sorted(
        (a.inputs["roleDefinitionId"], a.inputs["principalId"], a.inputs["scope"]) for a in assignments
    )
    assert actual == expected
    assert {a.inputs["principalType"] for a in assignments} == {"ServicePrincipal"}


@DEFAULT_AND_CUSTOM
def test_storage_account_is_locked_down_and_globally_named(case):
    cfg, run = case
    account = run.one(STORAGE_ACCOUNT).inputs
    suffix = run.named("storage-suffix")
    assert account["kind"] == "StorageV2"
    assert account["sku"] == {"name": cfg["storageSku"]}
    assert account["enableHttpsTrafficOnly"] is True
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["allowBlobPublicAccess"] is False
    assert account["accountName"] == f"{cfg['namePrefix']}data{suffix.outputs['result']}"
    assert re.fullmatch(r"[a-z0-9]{3,24}", account["accountName"])
    assert suffix.inputs["upper"] is False and suffix.inputs["special"] is False

    containers = {
        c.inputs["containerName"]: c.inputs for c in run.of_type("azure-native:storage:BlobContainer")
    }
    assert set(containers) == {"mlflow-artifacts", "mlflow-backups"}
    assert {c["publicAccess"] for c in containers.values()} == {"None"}
    share = run.one("azure-native:storage:FileShare").inputs
    assert share["shareQuota"] == cfg["fileShareQuotaGib"]
    assert share["enabledProtocols"] == "SMB"
    data_group = run.named("groups-data").outputs["name"]
    groups = {account["resourceGroupName"], share["resourceGroupName"]} | {
        c["resourceGroupName"] for c in containers.values()
    }
    assert groups == {data_group}


@EVERY_CONFIGURATION
def test_the_storage_account_deletes_backups_after_their_retention(case):
    """The retention is the account's rule, not the backup job's good behaviour: it holds whatever runs."""
    cfg, run = case
    policy = run.one("azure-native:storage:ManagementPolicy").inputs
    assert policy["accountName"] == run.one(STORAGE_ACCOUNT).outputs["name"]
    assert policy["managementPolicyName"] == "default"
    [rule] = policy["policy"]["rules"]
    assert rule["enabled"] is True and rule["type"] == "Lifecycle"
    assert rule["definition"]["filters"] == {"blobTypes": ["blockBlob"], "prefixMatch": ["mlflow-backups/"]}
    delete = rule["definition"]["actions"]["baseBlob"]["delete"]
    assert delete == {"daysAfterModificationGreaterThan": cfg["backupRetentionDays"]}


@DEFAULT_AND_CUSTOM
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
    # With dataRetention delete, destroy removes the disk only after the cluster that has it attached.
    assert any(urn.endswith(f"::{run.one(CLUSTER).name}") for urn in disk.options["dependencies"])


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


@EVERY_CONFIGURATION
def test_data_retention_decides_what_destroy_leaves(case):
    cfg, run = case
    keep = cfg["dataRetention"] == "retain"
    data_resources = {
        "groups-data",
        "storage-account",
        "storage-artifacts",
        "storage-backups",
        "storage-projects",
        "mysql-disk-disk",
    }
    for resource in run.resources:
        expected = keep and resource.name in data_resources
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
        "projectsShare",
        "deployerClientId",
        "deployerPassword",
        "trackingIdentityClientId",
        "tenantId",
    }
    assert {"kubeconfig", "deployerPassword"} <= run.secret_exports
    assert not run.secret_exports & {"clusterName", "acrLoginServer", "storageAccount", "deployerClientId"}
    assert run.exports["kubeconfig"] == KUBECONFIG
    assert run.exports["deployerPassword"] == run.named("deployer-password").outputs["value"]
    assert run.exports["dataResourceGroup"] == f"{cfg['namePrefix']}-data"
    assert run.exports["platformResourceGroup"] == f"{cfg['namePrefix']}-platform"


@DEFAULT_AND_CUSTOM
def test_kubernetes_provider_gets_the_kubeconfig_as_a_secret(case):
    _, run = case
    provider = run.one("pulumi:providers:kubernetes").inputs
    assert is_secret(provider["kubeconfig"])
    assert provider["kubeconfig"]["value"] == KUBECONFIG


@DEFAULT_AND_CUSTOM
def test_deployer_password_expires_when_configured(case):
    cfg, run = case
    password = run.one("azuread:index/servicePrincipalPassword:ServicePrincipalPassword").inputs
    assert password["endDate"] == cfg["deployerPasswordEndDate"]
    sp = run.one("azuread:index/servicePrincipal:ServicePrincipal")
    assert password["servicePrincipalId"] == sp.outputs["id"]
    assert sp.inputs["clientId"] == run.one("azuread:index/application:Application").outputs["clientId"]


@DEFAULT_AND_CUSTOM
def test_tracking_identity_federates_with_the_service_account(case):
    cfg, run = case
    identity = run.one("azure-native:managedidentity:UserAssignedIdentity")
    credential = run.one("azure-native:managedidentity:FederatedIdentityCredential").inputs
    assert credential["issuer"] == OIDC_ISSUER_URL
    assert (
        credential["subject"] == f"system:serviceaccount:{cfg['namespace']}:{cfg['trackingServiceAccount']}"
    )
    assert credential["audiences"] == ["api://AzureADTokenExchange"]
    assert credential["resourceName"] == identity.outputs["name"]
    assert run.exports["trackingIdentityClientId"] == identity.outputs["clientId"]
