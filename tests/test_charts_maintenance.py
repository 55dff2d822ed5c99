"""charts/mlflow_setup's maintenance: the backup and gc CronJobs, the backup before a schema migration,
the rollback guard, and the switch to Recreate when the MLflow version changes (so two versions never
write one schema)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from components import chart_values
from components.chart_values import setup_values
from tests import chart_render as cr
from tests.fake_kube_api import FakeKubeApi

IMAGE_REQUIREMENTS = cr.REPO_ROOT / "images" / "tracking-server" / "requirements.txt"
TRACKING = f"/apis/apps/v1/namespaces/{cr.NAMESPACE}/deployments/{chart_values.TRACKING_SERVICE}"
VERSION_ANNOTATION = "mlflow-aks/mlflow-version"


@pytest.fixture(scope="module")
def objects(helm_bin, tmp_path_factory) -> list[dict]:
    return cr.render(
        helm_bin,
        cr.SETUP_CHART,
        cr.SETUP_RELEASE,
        setup_values(cr.SETUP_CONTEXTS["private"]),
        tmp_path_factory.mktemp("m"),
    )


def cronjob(objects: list[dict], task: str) -> dict:
    [found] = [
        o
        for o in cr.of_kind(objects, "CronJob")
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == task
    ]
    return found


@pytest.mark.parametrize(
    ("task", "command"),
    [
        ("backup", ["python", "/app/backup.py", "backup", "--reason", "scheduled"]),
        ("gc", ["python", "/app/collect_garbage.py", "--older-than", "30d"]),
    ],
)
def test_maintenance_cronjobs_run_with_the_servers_image_and_settings(objects, task, command):
    ctx = cr.SETUP_CONTEXTS["private"]
    job = cronjob(objects, task)
    spec = job["spec"]
    assert spec["schedule"] == {"backup": ctx.backup_schedule, "gc": ctx.gc_schedule}[task]
    assert spec["timeZone"] == "Etc/UTC" and spec["concurrencyPolicy"] == "Forbid"
    assert spec["failedJobsHistoryLimit"] >= 1, "a failed run stays visible in `kubectl get jobs`"
    pod = spec["jobTemplate"]["spec"]["template"]
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["automountServiceAccountToken"] is False
    [container] = pod["spec"]["containers"]
    server = cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["image"] == server["image"]
    assert container["command"] == command
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["key"] == "backend-store-uri"
    if task == "backup":
        assert env["MLFLOW_AKS_BACKUP_DESTINATION"]["value"] == ctx.backup_destination()
        assert (
            ctx.backup_destination()
            == f"wasbs://mlflow-backups@{ctx.storage_account}.blob.core.windows.net/databases"
        )
    else:
        server_args = server["args"]
        assert (
            env["MLFLOW_AKS_ARTIFACTS_DESTINATION"]["value"]
            == server_args[server_args.index("--artifacts-destination") + 1]
        )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    ("task", "service_account", "client_id"),
    [
        # Its own ServiceAccount, whose identity may write the backups container and nothing else.
        ("backup", chart_values.BACKUP_SERVICE_ACCOUNT, "backup_identity_client_id"),
        # The tracking server's: the artifacts container, no access to the backups.
        ("gc", "mlflow-tracking", "tracking_identity_client_id"),
    ],
)
def test_each_maintenance_job_runs_as_the_service_account_of_its_own_identity(
    objects, task, service_account, client_id
):
    ctx = cr.SETUP_CONTEXTS["private"]
    pod = cronjob(objects, task)["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == service_account
    account = cr.one(objects, "ServiceAccount", service_account)
    assert account["metadata"]["namespace"] == cr.NAMESPACE
    assert account["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": getattr(ctx, client_id)
    }
    assert account["automountServiceAccountToken"] is False
    assert ctx.backup_identity_client_id != ctx.tracking_identity_client_id


def test_without_backups_there_is_no_backup_account_and_no_identity_is_asked_for(helm_bin, tmp_path):
    values = setup_values(cr.SETUP_CONTEXTS["private"])
    values["backup"] = {"enabled": False}
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_path)
    assert [
        c["metadata"]["labels"]["app.kubernetes.io/component"] for c in cr.of_kind(objects, "CronJob")
    ] == ["gc"]
    accounts = {a["metadata"]["name"] for a in cr.of_kind(objects, "ServiceAccount")}
    assert chart_values.BACKUP_SERVICE_ACCOUNT not in accounts


def _job(objects: list[dict], component: str) -> dict:
    [found] = [
        o
        for o in cr.of_kind(objects, "Job")
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


def test_a_migration_waits_for_this_revisions_backup_taken_with_the_backup_identity(objects):
    """The server's init container has no backup access and no destination: it waits for the pre-migration
    Job of its own revision, which runs as the backup ServiceAccount, writes where the scheduled backups
    go, and is no hook (it runs beside the pods, on install and on every upgrade)."""
    ctx = cr.SETUP_CONTEXTS["private"]
    migrate = cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]["spec"][
        "initContainers"
    ][0]
    env = {e["name"]: e.get("value") for e in migrate["env"]}
    assert "MLFLOW_AKS_BACKUP_DESTINATION" not in env
    job = _job(objects, "pre-migration")
    assert env["MLFLOW_AKS_BACKUP_JOB"] == job["metadata"]["name"] == "mlflow-pre-migration-r1"
    assert env["MLFLOW_AKS_BACKUP_WAIT_SECONDS"] == str(job["spec"]["activeDeadlineSeconds"])
    assert "helm.sh/hook" not in (job["metadata"].get("annotations") or {})
    pod = job["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == chart_values.BACKUP_SERVICE_ACCOUNT
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["python", "/app/migrate.py", "backup-before"]
    assert container["image"] == migrate["image"]
    job_env = {e["name"]: e.get("value") for e in container["env"]}
    assert job_env["MLFLOW_AKS_BACKUP_DESTINATION"] == ctx.backup_destination()
    assert job_env["MLFLOW_AKS_BACKUP_WAIT_SECONDS"] == env["MLFLOW_AKS_BACKUP_WAIT_SECONDS"]


def test_a_rollback_first_restores_the_schema_the_version_rolled_back_to_can_serve(objects):
    """Helm runs the pre-rollback hooks of the revision it rolls back TO: this version's image, as the backup
    ServiceAccount, restores the pre-migration backup of its own schema when a newer version migrated it."""
    guard = _job(objects, "rollback-guard")
    assert guard["metadata"]["annotations"] == {
        "helm.sh/hook": "pre-rollback",
        "helm.sh/hook-delete-policy": "before-hook-creation",
    }
    assert guard["spec"]["backoffLimit"] == 0  # a restore is not retried blindly
    pod = guard["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == chart_values.BACKUP_SERVICE_ACCOUNT
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["python", "/app/migrate.py", "rollback-guard"]
    server = cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["image"] == server["image"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_AKS_BACKUP_DESTINATION"]["value"] == cr.SETUP_CONTEXTS["private"].backup_destination()


def test_without_backups_a_migration_of_existing_data_is_refused(helm_bin, tmp_path):
    values = setup_values(cr.SETUP_CONTEXTS["private"])
    values["backup"] = {"enabled": False}
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_path)
    assert cr.of_kind(objects, "Job") == []
    migrate = cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]["spec"][
        "initContainers"
    ][0]
    assert not {"MLFLOW_AKS_BACKUP_JOB", "MLFLOW_AKS_BACKUP_DESTINATION"} & {
        e["name"] for e in migrate["env"]
    }


def test_the_image_s_mlflow_version_is_the_charts_app_version(objects):
    """The Recreate switch below compares the chart's appVersion: it must be the image's MLflow."""
    pinned = re.search(r"^mlflow\[auth\]==(\S+)$", IMAGE_REQUIREMENTS.read_text(), re.M).group(1)
    for chart in (cr.SETUP_CHART, cr.PROJECT_CHART):
        assert yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"] == pinned, chart.name
    annotations = cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"][
        "metadata"
    ]["annotations"]
    assert annotations[VERSION_ANNOTATION] == pinned


def _upgrade_render(helm_bin: str, tmp_path: Path, running_version: str | None) -> dict:
    """The tracking Deployment as `helm upgrade` renders it over pods of `running_version`."""
    api = FakeKubeApi()
    try:
        if running_version is not None:
            api.objects[TRACKING] = {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": chart_values.TRACKING_SERVICE, "namespace": cr.NAMESPACE},
                "spec": {"template": {"metadata": {"annotations": {VERSION_ANNOTATION: running_version}}}},
            }  # fmt: skip
        values = tmp_path / "values.yaml"
        values.write_text(yaml.safe_dump(setup_values(cr.SETUP_CONTEXTS["private"])))
        done = subprocess.run(
            [helm_bin, "template", cr.SETUP_RELEASE, str(cr.SETUP_CHART), "-f", str(values),
             "--namespace", cr.NAMESPACE, "--dry-run=server", "--kubeconfig", str(api.kubeconfig(tmp_path))],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert TRACKING in api.requests, "the chart looked the running Deployment up"
    finally:
        api.close()
    return cr.one(
        [d for d in yaml.safe_load_all(done.stdout) if d], "Deployment", chart_values.TRACKING_SERVICE
    )


@pytest.mark.parametrize(
    ("running", "strategy"),
    [(None, "RollingUpdate"), ("3.17.2", "RollingUpdate"), ("3.16.0", "Recreate"), ("2.22.1", "Recreate")],
    ids=["first-install", "same-version", "older-version", "much-older-version"],
)
def test_a_new_mlflow_version_replaces_every_pod_before_the_new_ones_migrate(
    helm_bin, tmp_path, running, strategy
):
    """Over running pods of another MLflow version, the upgrade stops them all first (Recreate), so the
    new pods' init container backs up and migrates with no old server writing; otherwise pods roll."""
    deployment = _upgrade_render(helm_bin, tmp_path, running)
    assert deployment["spec"]["strategy"]["type"] == strategy
    if strategy == "RollingUpdate":
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"backup": {"destination": ""}}, "destination"),
        ({"backup": {"schedule": "daily"}}, "schedule"),
        ({"gc": {"olderThan": "a month"}}, "olderThan"),
        ({"backup": {"destination": "https://acct.blob.core.windows.net/backups"}}, "destination"),
        # Without the backup identity the Job could not write; with the tracking one it must not.
        ({"backup": {"workloadIdentityClientId": ""}}, "workloadIdentityClientId"),
        ({"backup": {"workloadIdentityClientId": "backup-identity"}}, "workloadIdentityClientId"),
        ({"backup": {"serviceAccount": "mlflow-tracking"}}, "backup.serviceAccount must differ"),
        ({"backup": {"serviceAccount": "Backup_SA"}}, "serviceAccount"),
    ],
)
def test_maintenance_values_are_checked(helm_bin, tmp_path, change, key):
    values = setup_values(cr.SETUP_CONTEXTS["private"])
    for section, settings in change.items():
        values[section] = {**values[section], **settings}
    result = cr.template(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_path)
    assert result.returncode != 0
    assert key in result.stderr


def _steps(cronjob_object: dict) -> tuple[dict, list[dict]]:
    pod = cronjob_object["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod, [*pod.get("initContainers", []), *pod["containers"]]


def _mysql_image(objects: list[dict]) -> str:
    return cr.one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"]


def test_binary_logs_are_shipped_by_the_backup_identity_with_mysqls_own_tools(objects):
    """Every binlogShipMinutes (the RPO): plan (this image), fetch (MySQL's mysqlbinlog, the same image as
    the server, so it reads its logs), upload (this image), one at a time, as the backup ServiceAccount; the
    database password only in an in-memory volume."""
    ctx = cr.SETUP_CONTEXTS["private"]
    shipping = cronjob(objects, "binlogs")
    assert shipping["spec"]["schedule"] == f"*/{ctx.binlog_ship_minutes} * * * *"
    assert shipping["spec"]["concurrencyPolicy"] == "Forbid"
    pod, steps = _steps(shipping)
    assert pod["serviceAccountName"] == chart_values.BACKUP_SERVICE_ACCOUNT
    tracking = cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    assert [(s["name"], s["image"], s["command"]) for s in steps] == [
        (
            "plan",
            tracking,
            ["python", "/app/backup.py", "binlogs", "plan", "/ship", "--secrets", "/ship-secrets"],
        ),
        ("fetch", _mysql_image(objects), ["bash", "/ship/fetch.sh"]),
        ("upload", tracking, ["python", "/app/backup.py", "binlogs", "upload", "/ship"]),
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["ship-secrets"]["emptyDir"]["medium"] == "Memory"
    for step in steps:
        env = {e["name"]: e.get("value") for e in step["env"]}
        assert env["MLFLOW_AKS_BACKUP_DESTINATION"] == ctx.backup_destination()
        assert {m["mountPath"] for m in step["volumeMounts"]} >= {"/ship", "/ship-secrets"}


def test_a_point_in_time_restore_is_a_suspended_template_of_three_steps(objects):
    """Never scheduled: scripts/cluster-restore --to makes a Job of it. stage (the backup before the time),
    replay (MySQL's own tools), swap; each told the time through MLFLOW_AKS_RESTORE_TO."""
    template = cronjob(objects, "point-in-time-restore")
    assert template["spec"]["suspend"] is True
    pod, steps = _steps(template)
    assert pod["serviceAccountName"] == chart_values.BACKUP_SERVICE_ACCOUNT
    assert [(s["name"], s["command"]) for s in steps] == [
        (
            "stage",
            ["python", "/app/backup.py", "restore", "--stage", "/restore", "--secrets", "/restore-secrets"],
        ),
        ("replay", ["bash", "/restore/replay.sh"]),
        ("swap", ["python", "/app/backup.py", "swap", "/restore"]),
    ]
    assert steps[1]["image"] == _mysql_image(objects)
    assert {v["name"]: v for v in pod["volumes"]}["restore-secrets"]["emptyDir"]["medium"] == "Memory"
    for step in steps:
        assert "MLFLOW_AKS_RESTORE_TO" in {e["name"] for e in step["env"]}
