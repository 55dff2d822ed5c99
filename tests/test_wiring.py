"""MLflow on the cluster under Pulumi mocks: images, namespace, Helm releases, project file sync, exports,
and the `runs` / exposure settings.

Each configuration runs the whole program once in a fresh mock runtime; tests read that record. The
expected values come from the configuration, from other recorded resources (the image digests, the
generated passwords) and from files on disk (the project), never from a stored copy of a run.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import pytest
import yaml
from pulumi_mocks import (
    REPO_ROOT,
    ProgramRun,
    RecordingMocks,
    contains_secret,
    is_secret,
    plain,
    run_program,
    storage_key,
)

from components.mlflow_releases import (
    AWAITED_RUN_TIMEOUT_SECONDS,
    RUN_DEADLINE_SECONDS,
    RUN_TIMEOUT_SECONDS,
    SETUP_TIMEOUT_SECONDS,
)
from components.project_files import collect_files, sha256
from components.registry_access import PUSH_ACCESS_TIMEOUT_SECONDS
from settings import SettingsError

RELEASE = "kubernetes:helm.sh/v3:Release"
IMAGE = "docker:index/image:Image"
PASSWORD = "random:index/randomPassword:RandomPassword"
PROJECT_FILES = "pulumi-python:dynamic/mlflow-aks:ProjectFiles"
PUSH_ACCESS = "pulumi-python:dynamic/mlflow-aks:RegistryPushAccess"

TRAIN = {
    "name": "train-demo",
    "entryPoint": "train",
    "experiment": "demo",
    "parameters": {"C": 0.5, "seed": 7},
}
EVALUATE = {
    "name": "evaluate-demo",
    "entryPoint": "evaluate",
    "experiment": "demo_eval",
    "parameters": {"experiment_name": "demo"},
}
# Evaluates what TRAIN logs, once TRAIN's Job is done; its experiment (`demo_eval`) is left to the rule.
EVALUATE_AFTER_TRAIN = {
    "name": "evaluate-trained",
    "entryPoint": "evaluate",
    "parameters": {"experiment_name": "demo"},
    "after": ["train-demo"],
}
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "private-three-runs": {"runs": [TRAIN, EVALUATE, EVALUATE_AFTER_TRAIN]},
    "public-no-jobs-pool": {
        "exposure": "public",
        "allowedSourceRanges": ["203.0.113.0/24", "198.51.100.7/32"],
        "jobsNodePool": False,
        "namespace": "ml-team",
        "trackingReplicas": 3,
        "largestArtifactMib": 2048,
        "adminUsername": "mlops",
        "mysqlDiskSizeGib": 64,
        "runs": [TRAIN],
    },
    "no-runs": {
        "backupSchedule": "15 1 * * 0",
        "gcSchedule": "0 4 * * *",
        "gcOlderThan": "7d12h",
        "binlogShipMinutes": 2,
        # The gateway keys' key rotated twice; telemetry opted in.
        "kekVersion": 3,
        # Server-side jobs off; a provider behind a private endpoint and a public one.
        "serverJobs": False,
        "llmProviderCidrs": ["10.30.4.0/28", "20.50.60.70"],
        "mlflowTelemetry": True,
    },
}


@pytest.fixture(scope="module", params=list(CONFIGURATIONS))
def case(request) -> tuple[dict[str, Any], ProgramRun]:
    config = CONFIGURATIONS[request.param]
    return config, run_program(config)


def setting(config: dict[str, Any], key: str, default: Any) -> Any:
    return config.get(key, default)


def generated(run: ProgramRun, suffix: str) -> str:
    return run.named(f"mlflow-{suffix}").outputs["result"]


def setup_release(run: ProgramRun):
    return run.named("mlflow-setup")


def run_releases(run: ProgramRun) -> dict[str, Any]:
    return {r.inputs["name"]: r for r in run.of_type(RELEASE) if r.name.startswith("mlflow-run-")}


def test_images_are_built_and_pushed_with_the_deployer_principal(case):
    _, run = case
    login_server = run.one("azure-native:containerregistry:Registry").outputs["loginServer"]
    deployer_client_id = run.one("azuread:index/application:Application").outputs["clientId"]
    sp_password = run.named("deployer-password").outputs["value"]
    push_grants = {
        r.name for r in run.of_type("azure-native:authorization:RoleAssignment") if "acr-push" in r.name
    }

    images = {image.name: image for image in run.of_type(IMAGE)}
    assert set(images) == {"images-tracking-server", "images-project", "images-mysql", "images-tls-proxy"}
    for image, (repository, context) in zip(
        (
            images["images-tracking-server"],
            images["images-project"],
            images["images-mysql"],
            images["images-tls-proxy"],
        ),
        (
            ("mlflow-tracking-server", "tracking-server"),
            ("mlflow-project", "project"),
            ("mlflow-mysql", "mysql"),
            ("mlflow-tls-proxy", "tls-proxy"),
        ),
        strict=True,
    ):
        registry = image.inputs["registry"]
        assert is_secret(registry), "registry credentials are a secret"
        assert plain(registry) == {
            "server": login_server,
            "username": deployer_client_id,
            "password": sp_password,
        }
        assert image.inputs["imageName"].startswith(f"{login_server}/{repository}:")
        # Relative to the project directory (the program's working directory under `pulumi up`), so
        # the inputs do not change with the checkout's location; the context's own Dockerfile.
        assert image.inputs["build"]["context"] == f"images/{context}"
        assert (REPO_ROOT / image.inputs["build"]["context"] / "Dockerfile").is_file()
        assert "dockerfile" not in image.inputs["build"]
        assert image.inputs["build"]["platform"] == "linux/amd64"
        assert image.inputs.get("skipPush") in (None, False)
        # Pushed only once the push-access check has seen the credential get a push token.
        assert [dep for dep in image.options["dependencies"] if dep.endswith("::images-push-access")]
    assert run.one("azure-native:containerregistry:Registry").inputs["adminUserEnabled"] is False
    # That check uses the same credential, asks for every repository, starts once AcrPush is assigned
    # and waits a bounded time (components/registry_access.py).
    access = run.one(PUSH_ACCESS)
    assert is_secret(access.inputs["password"]) and plain(access.inputs["password"]) == sp_password
    assert access.inputs["login_server"] == login_server
    assert access.inputs["username"] == deployer_client_id
    assert access.inputs["repositories"] == [
        "mlflow-tracking-server",
        "mlflow-project",
        "mlflow-mysql",
        "mlflow-tls-proxy",
    ]
    assert access.inputs["timeout_seconds"] == PUSH_ACCESS_TIMEOUT_SECONDS
    assert any(name in dep for dep in access.options["dependencies"] for name in push_grants)


def test_every_kubernetes_resource_uses_the_cluster_provider(case):
    _, run = case
    provider = run.one("pulumi:providers:kubernetes")
    kubernetes_resources = [r for r in run.resources if r.type.startswith("kubernetes:")]
    assert kubernetes_resources
    for resource in kubernetes_resources:
        assert resource.provider is not None and resource.provider.startswith(
            provider.outputs.get("urn", "urn:")
        )
        assert resource.provider.endswith(f"::{provider.name}::{provider.id}"), resource.name


def test_namespaces_are_created_by_the_program_and_runs_get_their_own(case):
    config, run = case
    namespaces = {n.name: n.inputs["metadata"] for n in run.of_type("kubernetes:core/v1:Namespace")}
    platform, runs = namespaces.pop("mlflow-namespace"), namespaces.pop("mlflow-runs-namespace")
    assert namespaces == {}
    assert platform["name"] == setting(config, "namespace", "mlflow")
    assert runs["name"] == setting(config, "runsNamespace", "mlflow-runs") != platform["name"]
    for namespace in (platform, runs):
        # Every pod of the charts meets "restricted" (tests/test_pod_security.py): enforced, not warned.
        for mode in ("enforce", "warn", "audit"):
            assert namespace["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    setup = setup_release(run)
    assert setup.inputs["namespace"] == platform["name"]
    # mlflow_setup puts the run credentials and the project volume in the runs namespace...
    assert plain(setup.inputs["values"])["project"]["namespace"] == runs["name"]
    assert any(dep.endswith("::mlflow-runs-namespace") for dep in setup.options["dependencies"])
    # ...and every run Job runs there, against the tracking server's in-cluster URL in the platform one.
    for release in run_releases(run).values():
        assert release.inputs["namespace"] == runs["name"]
        assert release.inputs["values"]["tracking"]["uri"] == (
            f"http://mlflow-tracking.{platform['name']}.svc.cluster.local:5000"
        )
    assert run.exports["runsNamespace"] == runs["name"]


def test_generated_secrets_come_from_pulumi_random(case):
    config, run = case
    passwords = {p.name: p.inputs for p in run.of_type(PASSWORD)}
    version = setting(config, "kekVersion", 1)

    # The gateway keys' passphrase of the current version and, after a rotation, the previous one.
    def kek(at: int) -> str:
        return "mlflow-kek-passphrase" if at == 1 else f"mlflow-kek-passphrase-v{at}"

    kek_passphrases = {kek(version)} if version == 1 else {kek(version), kek(version - 1)}
    assert set(passwords) == {
        "mlflow-mysql-root-password",
        "mlflow-mysql-password",
        "mlflow-admin-password",
        "mlflow-flask-secret-key",
        *kek_passphrases,
    }
    for inputs in passwords.values():
        assert inputs["special"] is False
        assert inputs["length"] >= 24


def test_encryption_keys_are_the_stacks_generated_secrets(case):
    """MLflow's gateway-key passphrase and webhook key: generated per stack, the same for every replica,
    and after a rotation (kekVersion raised) the previous passphrase too, so the init container re-wraps."""
    config, run = case
    version = setting(config, "kekVersion", 1)
    encryption = plain(setup_release(run).inputs["values"])["tracking"]["encryption"]
    current = generated(run, "kek-passphrase" if version == 1 else f"kek-passphrase-v{version}")
    previous = "" if version == 1 else generated(
        run, "kek-passphrase" if version == 2 else f"kek-passphrase-v{version - 1}"
    )  # fmt: skip
    webhook = run.named("mlflow-webhook-key")
    assert webhook.inputs["length"] == 32
    raw = base64.b64decode(webhook.outputs["base64"])
    assert encryption == {
        "kekPassphrase": current,
        "kekVersion": version,
        "previousKekPassphrase": previous,
        # Fernet's alphabet (URL-safe) over the same 32 random bytes.
        "webhookKey": base64.urlsafe_b64encode(raw).decode(),
    }
    assert len(current) >= 32 and current != previous


def test_telemetry_is_off_unless_opted_in(case):
    config, run = case
    enabled = setting(config, "mlflowTelemetry", False)
    assert plain(setup_release(run).inputs["values"])["telemetry"] == {"enabled": enabled}
    for release in run_releases(run).values():
        assert release.inputs["values"]["telemetry"] is enabled


def test_server_jobs_and_llm_providers_reach_the_chart(case):
    config, run = case
    values = plain(setup_release(run).inputs["values"])
    assert values["jobs"] == {"enabled": setting(config, "serverJobs", True)}
    cidrs = [str(ipaddress.ip_network(c)) for c in setting(config, "llmProviderCidrs", [])]
    private = any(not ipaddress.ip_network(c).is_global for c in cidrs)
    assert values["llm"] == {"providerCidrs": cidrs, "allowPrivateAddresses": private}


def test_setup_release_installs_atomically_with_secret_values(case):
    _, run = case
    setup = setup_release(run)
    inputs = setup.inputs
    assert inputs["name"] == "mlflow"
    assert inputs["chart"] == "charts/mlflow_setup"
    assert (REPO_ROOT / inputs["chart"] / "Chart.yaml").is_file()
    # The mysql subchart is a symlink in the chart: nothing to build, nothing written into the checkout.
    assert "dependencyUpdate" not in inputs
    assert inputs["atomic"] is True
    assert inputs["cleanupOnFail"] is True
    assert inputs["skipAwait"] is False
    # Long enough for freshly granted access to take effect and the pods' back-off to retry: the pods
    # need AcrPull, the federated credential, the blob role and the disk role (the release depends on
    # them, below), each up to 10 minutes to propagate; then image-pull back-off and MySQL's first start.
    assert inputs["timeout"] == SETUP_TIMEOUT_SECONDS >= 600 + 300 + 300
    assert is_secret(inputs["values"]), "mlflow_setup values carry passwords: the whole value is secret"
    # The pods need these Azure grants in place first.
    for dependency in (
        "registry-kubelet-acr-pull",
        "tracking-identity-federation",
        "tracking-identity-blob-data",
        "backup-identity-federation",
        "backup-identity-backups-data",
        "mysql-disk-cluster-attach",
    ):
        assert any(dependency in urn for urn in setup.options["dependencies"]), dependency


def test_mysql_is_pulled_by_digest_from_the_stacks_registry(case):
    """The MySQL image the program pushed (images/mysql) is what the setup release's MySQL runs: the
    stack's ACR, by the pushed image's digest; nothing points at Docker Hub."""
    _, run = case
    values = plain(setup_release(run).inputs["values"])
    login_server = run.one("azure-native:containerregistry:Registry").outputs["loginServer"]
    pushed = run.named("images-mysql").outputs["repoDigest"]
    assert pushed.startswith(f"{login_server}/mlflow-mysql@sha256:")
    _, _, digest = pushed.partition("@")
    assert values["mysql"]["image"] == {
        "registry": login_server,
        "repository": "mlflow-mysql",
        "digest": digest,
    }
    assert run.exports["mysqlImage"] == pushed
    assert "docker.io" not in yaml.safe_dump(values)


def test_setup_values_come_from_stack_outputs(case):
    config, run = case
    values = plain(setup_release(run).inputs["values"])
    tracking_image = run.named("images-tracking-server").outputs["repoDigest"]
    registry, _, digest = tracking_image.partition("@")
    assert values["tracking"]["image"] == {
        "registry": registry.split("/")[0],
        "repository": "mlflow-tracking-server",
        "digest": digest,
    }
    identity = run.named("tracking-identity-identity").outputs["clientId"]
    assert values["tracking"]["serviceAccount"] == {
        "name": setting(config, "trackingServiceAccount", "mlflow-tracking"),
        "workloadIdentityClientId": identity,
    }
    assert values["tracking"]["replicaCount"] == setting(config, "trackingReplicas", 2)
    # A stopping pod lets the largest artifact's transfer finish (tests/test_charts_rollouts.py).
    largest = setting(config, "largestArtifactMib", 10240)
    assert values["tracking"]["shutdown"] == {"largestTransferMiB": largest}
    auth = values["tracking"]["auth"]
    assert auth["adminUsername"] == setting(config, "adminUsername", "admin")
    assert auth["adminPassword"] == generated(run, "admin-password")
    assert auth["flaskSecretKey"] == generated(run, "flask-secret-key")
    assert values["mysql"]["auth"] == {
        "rootPassword": generated(run, "mysql-root-password"),
        "password": generated(run, "mysql-password"),
    }
    account = run.named("storage-account").outputs["name"]
    assert values["tracking"]["artifacts"]["storageAccount"] == account
    assert values["tracking"]["artifacts"]["container"] == "mlflow-artifacts"
    # The project volume mounts the share in its own account, with that account's key: the key of the
    # artifacts account never reaches the cluster (that account takes no key anyway).
    files = run.named("projects-account").outputs["name"]
    volume = values["project"]["volume"]
    assert volume["storageAccount"] == files
    assert volume["shareName"] == "mlflow-projects"
    assert volume["resourceGroup"] == run.named("groups-platform").outputs["name"]
    assert volume["storageAccountKey"] == storage_key(files)
    assert storage_key(account) not in repr(values)


def test_mysql_data_is_a_volume_on_the_retained_disk_outside_the_release(case):
    """MySQL's PersistentVolume and claim are the program's, not the release's: an atomic rollback of a
    failed install deletes only what the release made, so the claim stays bound to the disk with its data
    and the next install mounts it again (before, the claim outlived a rollback and the release's static
    volume stayed Terminating, blocking every reinstall)."""
    config, run = case
    values = plain(setup_release(run).inputs["values"])
    disk = run.one("azure-native:compute:Disk")
    assert disk.inputs["resourceGroupName"] == run.named("groups-data").outputs["name"]
    assert disk.id.endswith(f"/providers/Microsoft.Compute/disks/{disk.outputs['name']}")
    assert run.exports["mysqlDiskId"] == disk.id
    namespace = setting(config, "namespace", "mlflow")
    # With the cluster provider, as all here.
    volume = run.one("kubernetes:core/v1:PersistentVolume", "mlflow-mysql-volume-volume")
    claim = run.one("kubernetes:core/v1:PersistentVolumeClaim", "mlflow-mysql-volume-claim")
    spec = volume.inputs["spec"]
    assert spec["csi"] == {
        "driver": "disk.csi.azure.com",
        "volumeHandle": disk.id,
        "volumeAttributes": {"fsType": "ext4"},
    }
    assert spec["persistentVolumeReclaimPolicy"] == "Retain"
    assert spec["capacity"] == {"storage": f"{setting(config, 'mysqlDiskSizeGib', 64)}Gi"}
    assert spec["claimRef"] == {"namespace": namespace, "name": "mlflow-mysql-data"}
    assert claim.inputs["metadata"] == {
        "name": "mlflow-mysql-data",
        "namespace": namespace,
        "labels": {"app.kubernetes.io/part-of": "mlflow-aks", "app.kubernetes.io/component": "database"},
    }
    claim_spec = claim.inputs["spec"]
    assert claim_spec["volumeName"] == volume.inputs["metadata"]["name"] == f"{namespace}-mlflow-mysql-data"
    # Static on both sides: bound by name, never provisioned; the claim asks for no more than the disk.
    assert spec["storageClassName"] == claim_spec["storageClassName"] == ""
    assert int(claim_spec["resources"]["requests"]["storage"].removesuffix("Gi")) <= int(
        spec["capacity"]["storage"].removesuffix("Gi")
    )
    assert values["mysql"]["persistence"] == {"existingClaim": "mlflow-mysql-data"}
    assert any(
        urn.endswith("::mlflow-mysql-volume-claim") for urn in setup_release(run).options["dependencies"]
    )


def test_backups_and_gc_are_scheduled_from_config_into_the_data_account(case):
    config, run = case
    values = plain(setup_release(run).inputs["values"])
    account = run.named("storage-account").outputs["name"]
    container = run.named("storage-backups").outputs["name"]
    backup_identity = run.named("backup-identity-identity")
    assert values["backup"] == {
        "schedule": setting(config, "backupSchedule", "0 2 * * *"),
        "destination": f"wasbs://{container}@{account}.blob.core.windows.net/databases",
        # The backup Job's own ServiceAccount, federated with the backup identity (not the server's).
        "serviceAccount": "mlflow-backup",
        "workloadIdentityClientId": backup_identity.outputs["clientId"],
        # The binary logs shipped every binlogShipMinutes: the RPO of a restore to a point in time.
        # Its interval is recorded with each shipment: MlflowBinlogShippingStale compares against it.
        "binaryLogs": {
            "schedule": f"*/{setting(config, 'binlogShipMinutes', 5)} * * * *",
            "intervalSeconds": 60 * setting(config, "binlogShipMinutes", 5),
        },
    }
    assert (
        values["backup"]["workloadIdentityClientId"]
        != values["tracking"]["serviceAccount"]["workloadIdentityClientId"]
    )
    assert values["gc"] == {
        "schedule": setting(config, "gcSchedule", "30 3 * * *"),
        "olderThan": setting(config, "gcOlderThan", "30d"),
    }
    # The identity the backup Job writes with may write there, and is federated with its ServiceAccount,
    # before the release installs.
    grant = run.named("backup-identity-backups-data-contributor")
    assert grant.inputs["scope"] == run.named("storage-backups").id
    assert grant.inputs["principalId"] == backup_identity.outputs["principalId"]
    credential = run.named("backup-identity-federation")
    assert (
        credential.inputs["subject"]
        == f"system:serviceaccount:{setting(config, 'namespace', 'mlflow')}:mlflow-backup"
    )
    for dependency in ("backup-identity-backups-data-contributor", "backup-identity-federation"):
        assert any(urn.endswith(f"::{dependency}") for urn in setup_release(run).options["dependencies"])


def test_exposure_follows_config(case):
    config, run = case
    values = plain(setup_release(run).inputs["values"])
    exposure = values["exposure"]
    if setting(config, "exposure", "private") == "public":
        assert exposure["type"] == "public"
        assert exposure["loadBalancerSourceRanges"] == config["allowedSourceRanges"]
        # The static public IP Pulumi owns: its DNS label makes the hostname the chart and the URL use.
        ip = run.one("azure-native:network:PublicIPAddress")
        label = ip.inputs["dnsSettings"]["domainNameLabel"]
        assert label.startswith("mlflow-mlflow-")
        host = f"{label}.westeurope.cloudapp.azure.com"
        assert exposure["hostname"] == host
        assert exposure["publicIP"] == {"name": ip.outputs["name"], "resourceGroup": "mlflow-platform"}
        assert values["tls"]["image"]["repository"] == "mlflow-tls-proxy"
        assert values["tls"]["acmeDirectory"] == setting(
            config, "acmeDirectory", "https://acme-v02.api.letsencrypt.org/directory"
        )
        # HTTPS only: no port (443), no plain-HTTP URL.
        assert run.exports["trackingUrl"] == f"https://{host}"
        assert "portForward" not in run.exports
    else:
        assert exposure["type"] == "private"
        assert exposure["loadBalancerSourceRanges"] == []
        assert "tls" not in values and "hostname" not in exposure
        assert run.of_type("azure-native:network:PublicIPAddress") == []
        namespace = setting(config, "namespace", "mlflow")
        assert run.exports["trackingUrl"] == f"http://mlflow-tracking.{namespace}.svc.cluster.local:5000"
        assert run.exports["portForward"].startswith(f"kubectl --namespace {namespace} port-forward service/")


def test_one_project_release_per_configured_run(case):
    config, run = case
    releases = run_releases(run)
    configured = {r["name"]: r for r in setting(config, "runs", [])}
    assert set(releases) == set(configured)
    project_image = run.named("images-project").outputs["repoDigest"]
    jobs_pool = setting(config, "jobsNodePool", True)
    for name, release in releases.items():
        spec = configured[name]
        inputs = release.inputs
        assert inputs["chart"] == "charts/mlflow_project"
        assert inputs["atomic"] is True and inputs["cleanupOnFail"] is True and inputs["skipAwait"] is False
        assert not contains_secret(inputs["values"]), "run values hold no secret"
        values = inputs["values"]
        assert values["run"]["entryPoint"] == spec["entryPoint"]
        expected_experiment = spec.get("experiment") or f"{spec['parameters']['experiment_name']}_eval"
        assert values["run"]["experiment"] == expected_experiment
        assert values["run"]["parameters"] == {k: str(v) for k, v in spec["parameters"].items()}
        assert values["run"]["project"] == "mlflow_project"
        assert (
            f"{values['image']['registry']}/{values['image']['repository']}@{values['image']['digest']}"
            == (project_image)
        )
        assert values["jobsPool"]["enabled"] is jobs_pool
        if jobs_pool:
            assert values["jobsPool"]["nodeSelector"] == {"mlflow-aks/pool": "jobs"}
            assert values["jobsPool"]["tolerations"][0]["effect"] == "NoSchedule"
        setup_urn = [urn for urn in release.options["dependencies"] if urn.endswith("::mlflow-setup")]
        files_urn = [urn for urn in release.options["dependencies"] if urn.endswith("::mlflow-project-files")]
        assert setup_urn and files_urn, "a run waits for the tracking server and the project files"
        # Scheduled on the jobs pool: the release waits for the pool, and a pool that failed to create
        # fails the run at once instead of leaving its Job Pending until the release times out.
        pool_urns = [urn for urn in release.options["dependencies"] if urn.endswith("::cluster-jobs-pool")]
        assert len(pool_urns) == (1 if jobs_pool else 0), name


def test_a_changed_run_replaces_its_release_instead_of_upgrading_the_job(case):
    """A Job's pod template is immutable: new values must uninstall the release, then install it again."""
    config, run = case
    releases = run_releases(run)
    assert len(releases) == len(setting(config, "runs", []))
    for name, release in releases.items():
        assert release.options["replaceOnChanges"] == ["values"], name
        assert release.options["deleteBeforeReplace"] is True, name
    assert setup_release(run).options["replaceOnChanges"] == [], "the setup release upgrades in place"


def test_a_run_after_others_is_installed_once_their_jobs_complete(case):
    config, run = case
    releases = run_releases(run)
    configured = setting(config, "runs", [])
    awaited = {other for spec in configured for other in spec.get("after", [])}
    for spec in configured:
        release = releases[spec["name"]]
        depends_on = {urn.rsplit("::", 1)[1] for urn in release.options["dependencies"]}
        run_dependencies = {d.removeprefix("mlflow-run-") for d in depends_on if d.startswith("mlflow-run-")}
        assert run_dependencies == set(spec.get("after", [])), spec["name"]
        inputs = release.inputs
        if spec["name"] in awaited:
            # The Job must complete (a failure fails the release), within the Job's own deadline.
            assert inputs["waitForJobs"] is True, spec["name"]
            assert inputs["timeout"] == AWAITED_RUN_TIMEOUT_SECONDS > RUN_DEADLINE_SECONDS
        else:
            assert inputs["waitForJobs"] is False, spec["name"]
            assert inputs["timeout"] == RUN_TIMEOUT_SECONDS
    if setting(config, "runs", []) == CONFIGURATIONS["private-three-runs"]["runs"]:
        assert awaited == {"train-demo"}


def test_awaited_run_timeout_covers_the_charts_job_deadline():
    chart_values = yaml.safe_load((REPO_ROOT / "charts" / "mlflow_project" / "values.yaml").read_text())
    assert chart_values["activeDeadlineSeconds"] == RUN_DEADLINE_SECONDS
    assert AWAITED_RUN_TIMEOUT_SECONDS >= RUN_DEADLINE_SECONDS + RUN_TIMEOUT_SECONDS


def test_project_files_are_synced_from_disk_with_a_secret_key(case):
    _, run = case
    sync = run.one(PROJECT_FILES)
    inputs = sync.inputs
    files = run.named("projects-account").outputs["name"]
    assert inputs["account_name"] == files
    assert inputs["share_name"] == "mlflow-projects"
    assert inputs["directory"] == "mlflow_project"
    assert is_secret(inputs["account_key"]) and plain(inputs["account_key"]) == storage_key(files)
    on_disk = collect_files(REPO_ROOT / "mlflow_project")
    assert "MLproject" in on_disk
    assert inputs["hashes"] == {path: sha256(content) for path, content in on_disk.items()}
    assert {path: base64.b64decode(data) for path, data in inputs["contents"].items()} == on_disk
    assert "account_key" in sync.options["additionalSecretOutputs"]


def test_exports_for_users_and_for_a_run_by_hand(case):
    config, run = case
    assert run.exports["adminUser"] == setting(config, "adminUsername", "admin")
    assert run.exports["adminPassword"] == generated(run, "admin-password")
    assert "adminPassword" in run.secret_exports
    assert run.exports["runs"] == [r["name"] for r in setting(config, "runs", [])]
    assert run.exports["runChart"] == "charts/mlflow_project"
    assert (REPO_ROOT / run.exports["runChart"] / "Chart.yaml").is_file()
    manual = run.exports["runValues"]
    assert "runValues" not in run.secret_exports
    assert set(manual) >= {"image", "tracking", "projectVolume", "serviceAccountName", "jobsPool"}
    assert "run" not in manual
    secrets = {generated(run, s) for s in ("admin-password", "mysql-password", "mysql-root-password")}
    keys = {storage_key(run.named(f"{a}-account").outputs["name"]) for a in ("storage", "projects")}
    assert not any(secret in repr(manual) for secret in secrets | keys)
    for key, value in run.exports.items():
        if key not in run.secret_exports:
            assert not any(secret in repr(value) for secret in secrets | keys), key


# (config, key the error must start with). Each is rejected before any resource exists.
BAD_WIRING_CONFIGURATIONS: list[tuple[dict[str, Any], str]] = [
    ({"runs": [TRAIN, dict(TRAIN, experiment="other")]}, "runs[1].name"),
    ({"runs": [dict(TRAIN, entryPoint="predict")]}, "runs[0].entryPoint"),
    ({"runs": [dict(TRAIN, parameters={"learning_rate": 0.1})]}, "runs[0].parameters.learning_rate"),
    ({"runs": [dict(TRAIN, name="Train_1")]}, "runs[0].name"),
    ({"runs": [dict(TRAIN, name="r" * 49)]}, "runs[0].name"),
    ({"runs": [dict(TRAIN, name="mlflow")]}, "runs[0].name"),
    ({"runs": [dict(EVALUATE, parameters={})]}, "runs[0].parameters"),
    ({"runs": [dict(TRAIN, experiment="")]}, "runs[0].experiment"),
    ({"runs": [dict(TRAIN, parameters={"C": [1, 2]})]}, "runs[0].parameters.C"),
    ({"runs": [TRAIN, dict(EVALUATE_AFTER_TRAIN, after=["train-old"])]}, "runs[1].after[0]"),
    ({"runs": [dict(EVALUATE_AFTER_TRAIN), TRAIN]}, "runs[0].after[0]"),
    ({"runs": [TRAIN, dict(EVALUATE, after=["evaluate-demo"])]}, "runs[1].after[0]"),
    ({"runs": [TRAIN, dict(EVALUATE, after=["train-demo", "evaluate-demo"])]}, "runs[1].after[1]"),
    ({"runs": [TRAIN, dict(EVALUATE, after="train-demo")]}, "runs[1].after"),
    ({"runs": [dict(EVALUATE, experiment="demo")]}, "runs[0].experiment"),
    ({"runs": [dict(EVALUATE, experiment="")]}, "runs[0].experiment"),
    (
        {"runs": [dict(EVALUATE_AFTER_TRAIN, after=[], parameters={"experiment_name": ""})]},
        "runs[0].parameters.experiment_name",
    ),
    ({"runs": [dict(TRAIN, image="other")]}, "runs[0]"),
    ({"runs": ["train"]}, "runs[0]"),
    ({"runs": {"name": "train"}}, "runs"),
    ({"exposure": "public"}, "allowedSourceRanges"),
    ({"exposure": "public", "allowedSourceRanges": ["0.0.0.0/0"]}, "allowedSourceRanges[0]"),
    ({"allowedSourceRanges": ["10.0.0.300/24"]}, "allowedSourceRanges[0]"),
    ({"exposure": "internet"}, "exposure"),
    ({"trackingReplicas": 0}, "trackingReplicas"),
    ({"largestArtifactMib": 0}, "largestArtifactMib"),
    ({"adminUsername": "a b"}, "adminUsername"),
]


@pytest.mark.parametrize(
    ("config", "key"), BAD_WIRING_CONFIGURATIONS, ids=[key for _, key in BAD_WIRING_CONFIGURATIONS]
)
def test_bad_runs_and_exposure_are_rejected_naming_the_key(config, key):
    mocks = RecordingMocks()
    with pytest.raises(SettingsError) as raised:
        run_program(config, mocks=mocks)
    keys = [p.key for p in raised.value.problems]
    assert key in keys, keys
    assert key in str(raised.value)
    assert mocks.resources == []
