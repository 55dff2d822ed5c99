"""`database: inCluster | flexibleServer` under Pulumi mocks: what each mode declares.

flexibleServer: Azure Database for MySQL Flexible Server in the data group, in a subnet delegated to it of
the virtual network the cluster's nodes are in, named by a private DNS zone linked to that network, with no
public access, TLS required, the backups and high availability the config asks for, the three databases
in utf8mb4, an admin password Pulumi generates (secret), and the chart pointed at it over verified TLS;
no MySQL disk, volume or backup CronJob. inCluster: exactly what it was (no network, the disk).
Expected values come from the config and Pulumi.yaml's defaults, not from a recorded run.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from pulumi_mocks import CLUSTER_PRINCIPAL_ID, REPO_ROOT, ProgramRun, is_secret, plain, run_program

from components.chart_values import SYSTEM_CA_BUNDLE
from settings import declared_config

SERVER = "azure-native:dbformysql:Server"
DATABASE = "azure-native:dbformysql:Database"
CONFIGURATION = "azure-native:dbformysql:Configuration"
VNET = "azure-native:network:VirtualNetwork"
ZONE = "azure-native:privatedns:PrivateZone"
LINK = "azure-native:privatedns:VirtualNetworkLink"
CLUSTER = "azure-native:containerservice:ManagedCluster"
AGENT_POOL = "azure-native:containerservice:AgentPool"
DISK = "azure-native:compute:Disk"
PASSWORD = "random:index/randomPassword:RandomPassword"
NETWORK_CONTRIBUTOR = "4d97b98b-1d4f-4787-a291-c67834d212e7"
FLEXIBLE = {"database": "flexibleServer"}
# General Purpose, with a standby in another zone, geo-redundant backups kept 21 days.
FLEXIBLE_HA = {
    "database": "flexibleServer",
    "databaseSku": "Standard_D2ds_v4",
    "databaseHighAvailability": "ZoneRedundant",
    "databaseGeoRedundantBackup": True,
    "databaseBackupRetentionDays": 21,
}
DEFAULTS = {key: d["default"] for key, d in declared_config().items()}


@pytest.fixture(scope="module", params=["inCluster", "flexibleServer", "flexibleServer-ha"])
def mode(request) -> tuple[str, dict, ProgramRun]:
    config = {"inCluster": {}, "flexibleServer": FLEXIBLE, "flexibleServer-ha": FLEXIBLE_HA}[request.param]
    return request.param, config, run_program(config)


def setup_values(run: ProgramRun) -> dict:
    return plain(run.named("mlflow-setup").inputs["values"])


def test_each_mode_declares_its_database_and_nothing_of_the_other(mode):
    name, _, run = mode
    flexible = name != "inCluster"
    assert len(run.of_type(SERVER)) == int(flexible)
    assert len(run.of_type(VNET)) == int(flexible) and len(run.of_type(ZONE)) == int(flexible)
    assert len(run.of_type(DISK)) == int(not flexible)
    claims = [r for r in run.of_type("kubernetes:core/v1:PersistentVolumeClaim") if "mysql" in r.name]
    volumes = [r for r in run.of_type("kubernetes:core/v1:PersistentVolume") if "mysql" in r.name]
    assert (len(claims), len(volumes)) == ((0, 0) if flexible else (1, 1))
    assert ("mysqlDiskId" in run.exports) is not flexible
    assert ("databaseServer" in run.exports) is flexible


def test_the_cluster_is_in_the_programs_network_only_with_a_flexible_server(mode):
    name, _, run = mode
    cluster = run.one(CLUSTER)
    [system] = plain(cluster.inputs)["agentPoolProfiles"]
    jobs = plain(run.one(AGENT_POOL).inputs)
    if name == "inCluster":
        assert "vnetSubnetID" not in system and "vnetSubnetID" not in jobs
        assert cluster.options["replaceOnChanges"] == [] and cluster.options["deleteBeforeReplace"] is False
        return
    subnet = f"{run.one(VNET).id}/subnets/aks-nodes"
    assert system["vnetSubnetID"] == subnet and jobs["vnetSubnetID"] == subnet
    # Moving a pool to another subnet is a new cluster (AKS refuses the change in place), deleted first.
    assert cluster.options["replaceOnChanges"] == ["agentPoolProfiles[*].vnetSubnetID"]
    assert cluster.options["deleteBeforeReplace"] is True
    # The cluster's identity may manage its load balancer in its own subnet, and nowhere else in the network.
    [grant] = [
        r
        for r in run.of_type("azure-native:authorization:RoleAssignment")
        if r.name.endswith("cluster-subnet")
    ]
    assert plain(grant.inputs)["scope"] == subnet
    assert plain(grant.inputs)["principalId"] == CLUSTER_PRINCIPAL_ID
    assert plain(grant.inputs)["roleDefinitionId"].endswith(f"/roleDefinitions/{NETWORK_CONTRIBUTOR}")


@pytest.fixture(scope="module", params=["flexibleServer", "flexibleServer-ha"])
def flexible(request) -> tuple[dict, ProgramRun]:
    config = {"flexibleServer": FLEXIBLE, "flexibleServer-ha": FLEXIBLE_HA}[request.param]
    return {**DEFAULTS, **config}, run_program(config)


def test_the_server_is_private_in_its_delegated_subnet_named_by_a_linked_zone(flexible):
    _, run = flexible
    vnet, zone, link, server = run.one(VNET), run.one(ZONE), run.one(LINK), run.one(SERVER)
    subnets = {s["name"]: s for s in plain(vnet.inputs)["subnets"]}
    delegated = subnets["mysql-flexible-server"]
    assert [d["serviceName"] for d in delegated["delegations"]] == ["Microsoft.DBforMySQL/flexibleServers"]
    assert "delegations" not in subnets["aks-nodes"]
    assert plain(zone.inputs)["privateZoneName"] == "mlflow.private.mysql.database.azure.com"
    assert plain(link.inputs)["virtualNetwork"] == {"id": vnet.id}
    assert plain(link.inputs)["privateZoneName"] == "mlflow.private.mysql.database.azure.com"
    assert plain(link.inputs)["registrationEnabled"] is False
    network = plain(server.inputs)["network"]
    assert network == {
        "delegatedSubnetResourceId": f"{vnet.id}/subnets/mysql-flexible-server",
        "privateDnsZoneResourceId": zone.id,
        "publicNetworkAccess": "Disabled",
    }
    # The server waits for the zone's link, and everything is in the data group.
    assert any(urn.endswith("::private-network-dns-link") for urn in server.options["dependencies"])
    for resource in (vnet, zone, link, server):
        assert plain(resource.inputs)["resourceGroupName"] == "mlflow-data", resource.name
    assert plain(server.inputs)["location"] == "westeurope" and plain(vnet.inputs)["location"] == "westeurope"


def test_tls_is_required_and_the_backups_and_high_availability_follow_config(flexible):
    config, run = flexible
    server = plain(run.one(SERVER).inputs)
    assert server["sku"] == {
        "name": config["databaseSku"],
        "tier": {"B": "Burstable", "D": "GeneralPurpose"}[config["databaseSku"][len("Standard_")]],
    }
    assert server["highAvailability"] == {"mode": config["databaseHighAvailability"]}
    assert server["backup"] == {
        "backupRetentionDays": config["databaseBackupRetentionDays"],
        "geoRedundantBackup": "Enabled" if config["databaseGeoRedundantBackup"] else "Disabled",
    }
    [tls] = run.of_type(CONFIGURATION)
    assert plain(tls.inputs) == {
        "configurationName": "require_secure_transport",
        "serverName": server["serverName"],
        "resourceGroupName": "mlflow-data",
        "value": "ON",
        "source": "user-override",
    }


def test_the_admin_password_is_generated_and_secret_end_to_end(flexible):
    _, run = flexible
    server = run.one(SERVER)
    [generated] = [r for r in run.of_type(PASSWORD) if r.name == "mysql-server-admin-password"]
    assert is_secret(server.inputs["administratorLoginPassword"])
    assert plain(server.inputs)["administratorLoginPassword"] == generated.outputs["result"]
    assert plain(server.inputs)["administratorLogin"] == "mlflow"
    assert plain(generated.inputs)["length"] >= 16
    # The chart receives it inside its values, which are secret as a whole; the stack exports it nowhere.
    release = run.named("mlflow-setup").inputs["values"]
    assert is_secret(release)
    assert plain(release)["externalDatabase"]["password"] == generated.outputs["result"]
    assert generated.outputs["result"] not in json.dumps(plain(run.exports))


def test_the_three_databases_exist_in_utf8mb4_as_in_the_cluster(flexible):
    _, run = flexible
    server = plain(run.one(SERVER).inputs)["serverName"]
    databases = {plain(d.inputs)["databaseName"]: plain(d.inputs) for d in run.of_type(DATABASE)}
    assert set(databases) == {"mlflow", "mlflow_auth", "mlflow_oidc"}
    for database in databases.values():
        assert (database["charset"], database["collation"]) == ("utf8mb4", "utf8mb4_bin")
        assert database["serverName"] == server and database["resourceGroupName"] == "mlflow-data"


def test_the_servers_name_takes_the_storage_accounts_suffix(flexible):
    _, run = flexible
    account = run.exports["storageAccount"]
    suffix = account.removeprefix("mlflowdata")
    assert plain(run.one(SERVER).inputs)["serverName"] == f"mlflow-mysql-{suffix}"
    assert run.exports["databaseServer"] == f"mlflow-mysql-{suffix}"
    assert run.exports["databaseHost"] == f"mlflow-mysql-{suffix}.mysql.database.azure.com"


def test_the_chart_reaches_the_server_over_verified_tls_without_mysql_or_backups(flexible):
    _, run = flexible
    values = setup_values(run)
    server = run.one(SERVER)
    assert values["mysql"] == {"enabled": False}
    # No scheduled backups; the backup identity stays, for restoring an in-cluster backup into this mode.
    client_id = run.one(
        "azure-native:managedidentity:UserAssignedIdentity", "backup-identity-identity"
    ).outputs["clientId"]
    assert values["backup"] == {
        "enabled": False,
        "serviceAccount": "mlflow-backup",
        "workloadIdentityClientId": client_id,
    }
    database = values["externalDatabase"]
    assert database["host"] == server.outputs["fullyQualifiedDomainName"]
    assert database["user"] == "mlflow"
    assert database["tls"] == {"caFile": SYSTEM_CA_BUNDLE}
    assert database["networkCidr"] == "10.224.16.0/24"
    assert database["networkCidr"] == plain(run.one(VNET).inputs)["subnets"][1]["addressPrefix"]
    assert database["flexibleServer"] == {
        "name": plain(server.inputs)["serverName"],
        "resourceGroup": "mlflow-data",
    }
    # The release waits for the server's TLS setting, its databases and the nodes' subnet role.
    waits_for = {urn.rsplit("::", 1)[1] for urn in run.named("mlflow-setup").options["dependencies"]}
    assert {
        "mysql-server-require-secure-transport",
        "mysql-server-mlflow",
        "mysql-server-mlflow-auth",
        "mysql-server-mlflow-oidc",
        "private-network-cluster-subnet",
    } <= waits_for


def test_in_cluster_the_chart_values_are_mysql_with_its_backups():
    values = setup_values(run_program({}))
    assert values["mysql"]["enabled"] is True and values["mysql"]["persistence"]["existingClaim"]
    assert "externalDatabase" not in values and values["backup"]["destination"].startswith("wasbs://")


def test_the_programs_values_render_no_mysql_and_no_backup_cronjob(flexible, helm_bin, tmp_path):
    _, run = flexible
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(setup_values(run)))
    done = subprocess.run(
        [
            helm_bin,
            "template",
            "mlflow",
            str(REPO_ROOT / "charts/mlflow_setup"),
            "-n",
            "mlflow",
            "-f",
            str(values_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    assert not [o for o in objects if o["kind"] == "StatefulSet"]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "CronJob"] == ["mlflow-gc"]
