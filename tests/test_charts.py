"""charts/mlflow_setup, charts/mlflow_project and charts/mysql, rendered by `helm template` with the values
components/chart_values.py produces from example stack contexts: lint, Kubernetes 1.32 schema validity,
and the properties issue 3 asks for. Any helm failure is a test failure."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from components import chart_values
from components.chart_values import ImageRef, ProjectContext, Run, SetupContext, project_values, setup_values
from tests import chart_render as cr

IMAGE_DIR = cr.REPO_ROOT / "images" / "tracking-server"
PROJECT_CASES = [(run, pool) for run in cr.RUNS for pool in (False, True)]


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("charts")


@pytest.fixture(scope="module")
def setup_renders(helm_bin, tmp_dir) -> dict[str, list[dict]]:
    return {
        name: cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(ctx), tmp_dir)
        for name, ctx in cr.SETUP_CONTEXTS.items()
    }


@pytest.fixture(scope="module")
def project_renders(helm_bin, tmp_dir) -> dict[tuple[str, bool], list[dict]]:
    renders = {}
    for run_name, pool in PROJECT_CASES:
        ctx = cr.project_context(cr.RUNS[run_name], pool)
        renders[(run_name, pool)] = cr.render(
            helm_bin, cr.PROJECT_CHART, ctx.run.name, project_values(ctx), tmp_dir
        )
    return renders


@pytest.fixture(scope="module")
def private_setup(setup_renders) -> list[dict]:
    return setup_renders["private"]


def tracking_deployment(objects: list[dict]) -> dict:
    return cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)


def server_container(objects: list[dict]) -> dict:
    pod = tracking_deployment(objects)["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "mlflow")


def server_args(objects: list[dict]) -> dict[str, str | None]:
    """`mlflow server` arguments as {flag: value or None for a bare flag}."""
    args = server_container(objects)["args"]
    parsed: dict[str, str | None] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else None
            parsed[arg] = None if nxt is None or nxt.startswith("--") else nxt
    return parsed


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- lint and Kubernetes schema -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(cr.SETUP_CONTEXTS))
def test_setup_chart_lints_strict(helm_bin, tmp_dir, name):
    result = cr.lint(helm_bin, cr.SETUP_CHART, setup_values(cr.SETUP_CONTEXTS[name]), tmp_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize(("run", "pool"), PROJECT_CASES)
def test_project_chart_lints_strict(helm_bin, tmp_dir, run, pool):
    ctx = cr.project_context(cr.RUNS[run], pool)
    result = cr.lint(helm_bin, cr.PROJECT_CHART, project_values(ctx), tmp_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("claim", ["", cr.MYSQL_CLAIM], ids=["dynamic-disk", "existing-claim"])
def test_mysql_chart_lints_strict(helm_bin, tmp_dir, claim):
    values = {
        "auth": {"rootPassword": "r" * 16, "password": "p" * 16, "extraDatabases": ["mlflow_auth"]},
        "persistence": {"existingClaim": claim},
    }
    result = cr.lint(helm_bin, cr.MYSQL_CHART, values, tmp_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_mysql_chart_alone_pulls_the_official_image_by_digest_only(helm_bin, tmp_dir):
    """`helm install` of charts/mysql by hand: its default is the official image by the digest
    images/mysql/Dockerfile builds from, never a tag; a missing or tag-like digest is refused."""
    values = {"auth": {"rootPassword": "r" * 16, "password": "p" * 16}}
    [(_, container)] = list(cr.every_container(cr.render(helm_bin, cr.MYSQL_CHART, "db", values, tmp_dir)))
    base = (cr.REPO_ROOT / "images" / "mysql" / "Dockerfile").read_text()
    [digest] = re.findall(r"^FROM mysql:[\w.-]+@(sha256:[0-9a-f]{64})$", base, flags=re.MULTILINE)
    assert container["image"] == f"docker.io/library/mysql@{digest}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    for bad in ("", "8.4.6", "latest", "sha256:abc"):
        result = cr.template(helm_bin, cr.MYSQL_CHART, "db", {**values, "image": {"digest": bad}}, tmp_dir)
        assert result.returncode != 0 and "digest" in result.stderr, (bad, result.stderr)


def test_every_object_is_valid_kubernetes(setup_renders, project_renders):
    objects = [o for r in [*setup_renders.values(), *project_renders.values()] for o in r]
    assert len(objects) > 20
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, cr.KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")


def test_setup_renders_what_issue_3_lists(private_setup):
    kinds = sorted({o["kind"] for o in private_setup})
    for kind in (
        "Deployment",
        "StatefulSet",
        "Service",
        "Secret",
        "ServiceAccount",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Pod",
        "ConfigMap",
    ):
        assert kind in kinds
    for obj in private_setup:
        if obj["kind"] != "PersistentVolume":
            # The platform's namespace, or the runs' own for what runs use (tests/test_runs_isolation.py).
            assert obj["metadata"]["namespace"] in (cr.NAMESPACE, cr.RUNS_NAMESPACE), obj["metadata"]["name"]


# --- images, hardening, probes --------------------------------------------------------------------


def test_our_images_are_acr_by_digest(setup_renders, project_renders):
    """Every container of every object (CronJobs, init containers and the helm test pod included), MySQL's
    too, runs one of the stack's images from its ACR by digest: nothing comes from a public registry."""
    images = set()
    for objects in [*setup_renders.values(), *project_renders.values()]:
        for _, container in cr.every_container(objects):
            image = container["image"]
            ImageRef.parse(image, cr.ACR)  # raises unless <acr>/<repo>@sha256:<hex>
            images.add(image)
    assert images == {cr.TRACKING_IMAGE, cr.PROJECT_IMAGE, cr.MYSQL_IMAGE, cr.TLS_IMAGE}


def test_every_container_is_hardened_and_sized(setup_renders, project_renders):
    checked = 0
    for objects in [*setup_renders.values(), *project_renders.values()]:
        for obj, pod in cr.pod_specs(objects):
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            assert pod["automountServiceAccountToken"] is False, where
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
            # Pod Security "restricted" volume types only (no hostPath and the like).
            for volume in pod.get("volumes", []):
                assert set(volume) - {"name"} <= {
                    "emptyDir",
                    "secret",
                    "configMap",
                    "persistentVolumeClaim",
                }, where
            for c in cr.containers(pod):
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["capabilities"]["drop"] == ["ALL"], where
                assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000, where
                for bound in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(c["resources"][bound]), f"{where} {c['name']} {bound}"
                checked += 1
    assert checked >= 3 * 4 + len(PROJECT_CASES)


def test_long_running_containers_have_all_probes(private_setup):
    for obj, pod in cr.pod_specs(private_setup):
        if obj["kind"] in ("Deployment", "StatefulSet"):
            for c in pod["containers"]:
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert probe in c, f"{obj['metadata']['name']}/{c['name']} lacks {probe}"


def test_tracking_readiness_checks_more_than_health(private_setup):
    """/health is OK even with the artifact store down: readiness runs ready.py through the server."""
    container = server_container(private_setup)
    readiness = container["readinessProbe"]
    assert "httpGet" not in readiness
    command = readiness["exec"]["command"]
    assert command[:2] == ["python", "/app/ready.py"]
    assert command[command.index("--port") + 1] == str(container["ports"][0]["containerPort"])
    assert int(command[command.index("--timeout") + 1]) < readiness["timeoutSeconds"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # The probe runs with the container's environment: the platform's identity (the Flask secret key
    # from the chart's Secret) and no user credentials, so ready.py asks serve.py's readiness endpoint.
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "flask-secret-key"
    assert "MLFLOW_TRACKING_USERNAME" not in env and "MLFLOW_TRACKING_PASSWORD" not in env


# --- the tracking server ---------------------------------------------------------------------------


def test_tracking_server_runs_mlflow_server_as_issue_3_says(private_setup):
    ctx = cr.SETUP_CONTEXTS["private"]
    container = server_container(private_setup)
    assert container["command"] == ["python", "/app/serve.py"]
    args = server_args(private_setup)
    assert args["--artifacts-destination"] == (
        f"wasbs://{ctx.artifacts_container}@{ctx.storage_account}.blob.core.windows.net/{ctx.artifacts_path}"
    )
    assert "--serve-artifacts" in args
    assert args["--app-name"] == "basic-auth"
    assert args["--host"] == "0.0.0.0"  # noqa: S104 - inside the pod, behind the Service
    assert "--backend-store-uri" not in args  # from the Secret, through MLFLOW_BACKEND_STORE_URI
    env = {e["name"]: e for e in container["env"]}
    for name, key in (
        ("MLFLOW_BACKEND_STORE_URI", "backend-store-uri"),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "admin-password"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-secret-key"),
    ):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == key
        assert key in cr.secret_data(cr.one(private_setup, "Secret", ref["name"]))
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"]["value"] == ctx.admin_username
    # Server-side jobs are accepted here and run elsewhere (tests/test_charts_jobs.py).
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "true"
    assert env["MLFLOW_AKS_JOB_RUNNER"]["value"] == "separate"


def test_allowed_hosts_cover_cluster_names_and_public_name(setup_renders):
    for name, ctx in cr.SETUP_CONTEXTS.items():
        hosts = server_args(setup_renders[name])["--allowed-hosts"].split(",")
        in_cluster = chart_values.tracking_url(ctx.namespace).removeprefix("http://")
        assert in_cluster in hosts
        svc = chart_values.TRACKING_SERVICE
        assert {svc, f"{svc}.{ctx.namespace}", f"{svc}.{ctx.namespace}.svc.cluster.local"} <= set(hosts)
        assert "*" not in hosts
        if ctx.exposure == "public":
            # The terminator passes the client's Host on: the bare name (HTTPS on 443), no port.
            assert ctx.public_hostname in hosts
            assert not [h for h in hosts if h.startswith(f"{ctx.public_hostname}:")]


def test_backend_and_auth_database_uris_survive_odd_passwords(private_setup, tmp_path, monkeypatch):
    ctx = cr.SETUP_CONTEXTS["private"]
    data = cr.secret_data(cr.one(private_setup, "Secret", chart_values.TRACKING_SERVICE))
    backend = make_url(data["backend-store-uri"])
    assert (backend.drivername, backend.host, backend.port, backend.database) == (
        "mysql+pymysql",
        chart_values.MYSQL_FULLNAME,
        3306,
        "mlflow",
    )
    assert backend.password == ctx.mysql_password
    # The server reads basic_auth.ini exactly like this (configparser with interpolation).
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(data["basic_auth.ini"])
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    from mlflow.server.auth.config import read_auth_config

    auth = read_auth_config()
    auth_url = make_url(auth.database_uri)
    assert (auth_url.host, auth_url.database, auth_url.password) == (
        chart_values.MYSQL_FULLNAME,
        "mlflow_auth",
        ctx.mysql_password,
    )
    assert auth.admin_username == ctx.admin_username
    assert auth.default_permission == "READ"
    parser = configparser.ConfigParser()
    parser.read_string(data["basic_auth.ini"])
    assert "admin_password" not in parser["mlflow"]  # it comes from MLFLOW_AUTH_ADMIN_PASSWORD


def test_schema_migration_runs_before_the_server(private_setup):
    pod = tracking_deployment(private_setup)["spec"]["template"]["spec"]
    migrate = pod["initContainers"][0]
    assert migrate["name"] == "migrate"
    assert migrate["command"] == ["python", "/app/migrate.py"]
    assert migrate["image"] == server_container(private_setup)["image"]
    env = {e["name"]: e for e in migrate["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["key"] == "backend-store-uri"
    # It also gives a database without this stack's admin password (new, or kept from another stack)
    # the stack's one: the server never needs an old stack's secret.
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"]["value"] == cr.SETUP_CONTEXTS["private"].admin_username
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "admin-password"
    strategy = tracking_deployment(private_setup)["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


@pytest.mark.parametrize("name", ["private", "private-own-run-password"])
def test_run_jobs_log_in_as_a_non_admin_user(setup_renders, name):
    ctx = cr.SETUP_CONTEXTS[name]
    objects = setup_renders[name]
    run_secret = cr.secret_data(cr.one(objects, "Secret", chart_values.RUN_CREDENTIALS_SECRET))
    assert run_secret == {"username": chart_values.RUN_USERNAME, "password": ctx.effective_run_password()}
    assert run_secret["username"] != ctx.admin_username and run_secret["password"] != ctx.admin_password
    if ctx.run_password:
        assert run_secret["password"] == ctx.run_password
    # The init container creates that user (migrate.py) with the same password, from the tracking
    # Secret in its own namespace (a Secret cannot be read across namespaces).
    migrate = tracking_deployment(objects)["spec"]["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e for e in migrate["env"]}
    assert env["MLFLOW_RUN_USERNAME"]["value"] == chart_values.RUN_USERNAME
    ref = env["MLFLOW_RUN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == chart_values.TRACKING_SERVICE
    assert cr.secret_data(cr.one(objects, "Secret", ref["name"]))[ref["key"]] == run_secret["password"]


def test_without_a_run_password_runs_use_the_admin(helm_bin, tmp_dir):
    values = setup_values(cr.SETUP_CONTEXTS["private"])
    values["tracking"]["auth"]["runPassword"] = ""
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)
    run_secret = cr.secret_data(cr.one(objects, "Secret", chart_values.RUN_CREDENTIALS_SECRET))
    assert run_secret["username"] == values["tracking"]["auth"]["adminUsername"]
    migrate = tracking_deployment(objects)["spec"]["template"]["spec"]["initContainers"][0]
    assert not {e["name"] for e in migrate["env"]} & {"MLFLOW_RUN_USERNAME", "MLFLOW_RUN_PASSWORD"}


def test_files_the_pod_runs_are_in_the_image(private_setup):
    """Every /app/<file> the Deployment or helm test runs exists and the Dockerfile copies it."""
    dockerfile = (IMAGE_DIR / "Dockerfile").read_text()
    referenced = set()
    for _, pod in cr.pod_specs(private_setup):
        for c in cr.containers(pod):
            words = [*c.get("command", []), *c.get("args", [])]
            words += c.get("readinessProbe", {}).get("exec", {}).get("command", [])
            referenced |= {w for w in words if w.startswith("/app/")}
    # The server, its init container and probe, the job runner, the helm test, and the backup and gc CronJobs.
    assert referenced == {
        "/app/serve.py",
        "/app/jobs.py",
        "/app/migrate.py",
        "/app/ready.py",
        "/app/backup.py",
        "/app/collect_garbage.py",
    }
    copy_line = next(line for line in dockerfile.splitlines() if line.startswith("COPY serve.py"))
    for path in referenced:
        assert (IMAGE_DIR / Path(path).name).is_file()
        assert Path(path).name in copy_line


def test_tracking_identity_and_service_accounts(private_setup):
    ctx = cr.SETUP_CONTEXTS["private"]
    sa = cr.one(private_setup, "ServiceAccount", ctx.tracking_service_account)
    assert (
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == ctx.tracking_identity_client_id
    )
    deployment = tracking_deployment(private_setup)
    assert deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == ctx.tracking_service_account
    run_sa = cr.one(private_setup, "ServiceAccount", ctx.run_service_account)
    assert run_sa["automountServiceAccountToken"] is False
    # The backup Jobs' own account, with the backup identity (tests/test_charts_maintenance.py).
    backup_sa = cr.one(private_setup, "ServiceAccount", ctx.backup_service_account)
    assert backup_sa["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": ctx.backup_identity_client_id
    }
    assert {a["metadata"]["name"] for a in cr.of_kind(private_setup, "ServiceAccount")} == {
        ctx.tracking_service_account,
        ctx.backup_service_account,
        ctx.run_service_account,
    }


@pytest.mark.parametrize("name", list(cr.SETUP_CONTEXTS))
def test_disruption_budgets_never_block_a_node_drain(setup_renders, name):
    """A budget that allows no eviction blocks every node drain and AKS upgrade. Each rendered budget
    leaves at least one pod of what it selects evictable; with one replica the tracking server gets no
    budget (it is evicted and rescheduled); single-replica MySQL has none and shuts down in bounded time."""
    objects = setup_renders[name]
    ctx = cr.SETUP_CONTEXTS[name]
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    budgets = cr.of_kind(objects, "PodDisruptionBudget")

    def selected_by(pdb: dict) -> list[dict]:
        selector = pdb["spec"]["selector"]["matchLabels"]
        return [w for w in workloads if labels_match(selector, w["spec"]["template"]["metadata"]["labels"])]

    for pdb in budgets:
        assert selected_by(pdb), f"{pdb['metadata']['name']} selects nothing"
        replicas = sum(w["spec"]["replicas"] for w in selected_by(pdb))
        assert replicas - pdb["spec"]["minAvailable"] >= 1, pdb["metadata"]["name"]
    tracking = tracking_deployment(objects)
    assert tracking["spec"]["replicas"] == ctx.tracking_replicas
    protected = {w["metadata"]["name"] for pdb in budgets for w in selected_by(pdb)}
    assert protected == ({tracking["metadata"]["name"]} if ctx.tracking_replicas > 1 else set())
    if ctx.flexible_server:  # no MySQL in the cluster
        assert cr.of_kind(objects, "StatefulSet") == []
        return
    mysql = cr.one(objects, "StatefulSet", chart_values.MYSQL_FULLNAME)["spec"]["template"]["spec"]
    assert 10 <= mysql["terminationGracePeriodSeconds"] <= 120


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def _from_secret(item: dict) -> tuple[str, str]:
    ref = item["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


@pytest.mark.parametrize("version", [1, 2])
def test_the_stacks_keys_reach_the_server_and_its_migration(helm_bin, tmp_dir, version):
    """MLflow's gateway-key passphrase and webhook key come from the tracking Secret into both the init
    container (which re-wraps stored keys, kek.py) and the server; the previous passphrase of a rotation
    only into the init container. Without them MLflow falls back to its public default passphrase and a
    per-process webhook key."""
    ctx = cr.setup_context()
    previous = "previous kek passphrase, 32 characters or more" if version > 1 else ""
    ctx = SetupContext(**{**ctx.__dict__, "kek_version": version, "previous_kek_passphrase": previous})
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(ctx), tmp_dir)
    secret = cr.one(objects, "Secret", chart_values.TRACKING_SERVICE)
    data = cr.secret_data(secret)
    assert data["kek-passphrase"] == ctx.kek_passphrase
    assert data["webhook-key"] == ctx.webhook_key
    assert data.get("previous-kek-passphrase", "") == previous
    pod = tracking_deployment(objects)["spec"]["template"]["spec"]
    migrate = next(c for c in pod["initContainers"] if c["name"] == "migrate")
    for container in (migrate, server_container(objects)):
        env = _env(container)
        assert _from_secret(env["MLFLOW_CRYPTO_KEK_PASSPHRASE"]) == (
            secret["metadata"]["name"],
            "kek-passphrase",
        )
        assert _from_secret(env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]) == (
            secret["metadata"]["name"],
            "webhook-key",
        )
        assert env["MLFLOW_CRYPTO_KEK_VERSION"]["value"] == str(version)
    assert ("MLFLOW_AKS_PREVIOUS_KEK_PASSPHRASE" in _env(migrate)) is (version > 1)
    assert "MLFLOW_AKS_PREVIOUS_KEK_PASSPHRASE" not in _env(server_container(objects))
    if version > 1:
        assert _from_secret(_env(migrate)["MLFLOW_AKS_PREVIOUS_KEK_PASSPHRASE"]) == (
            secret["metadata"]["name"], "previous-kek-passphrase"
        )  # fmt: skip


@pytest.mark.parametrize("telemetry", [False, True])
def test_mlflow_telemetry_is_off_in_every_mlflow_container_unless_opted_in(helm_bin, tmp_dir, telemetry):
    """Every container that runs MLflow (the tracking image: server, migration, maintenance Jobs and
    CronJobs, the helm test; the project image: run Jobs) gets MLFLOW_DISABLE_TELEMETRY unless opted in."""
    ctx = SetupContext(**{**cr.setup_context("public", ("203.0.113.0/24",)).__dict__, "telemetry": telemetry})
    setup = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(ctx), tmp_dir)
    run_ctx = cr.project_context(cr.RUNS["train"], True)
    run = cr.render(
        helm_bin, cr.PROJECT_CHART, run_ctx.run.name,
        project_values(ProjectContext(**{**run_ctx.__dict__, "telemetry": telemetry})), tmp_dir,
    )  # fmt: skip
    checked = 0
    for _, container in cr.every_container([*setup, *run]):
        image = container["image"]
        if not any(name in image for name in ("mlflow-tracking-server", "mlflow-project")):
            continue  # MySQL, Caddy: no MLflow in them
        checked += 1
        value = _env(container).get("MLFLOW_DISABLE_TELEMETRY", {}).get("value")
        assert value == (None if telemetry else "true"), container["name"]
    assert checked >= 8  # server, migration, backup, binlogs, gc, upgrade Jobs, helm test, the run


def test_helm_test_checks_health_and_an_authenticated_call(private_setup):
    pod = cr.one(private_setup, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "/app/ready.py"]
    assert command[command.index("--url") + 1] == chart_values.tracking_url(cr.NAMESPACE)
    # As the run user, with the password from the tracking Secret of its own namespace (the run
    # credentials Secret lives in the runs namespace).
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_USERNAME"]["value"] == chart_values.RUN_USERNAME
    ref = env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (chart_values.TRACKING_SERVICE, "run-password")
    assert "serviceAccountName" not in pod["spec"]  # not the runs' account, which is elsewhere


# --- MySQL and its NetworkPolicy ------------------------------------------------------------------


def test_mysql_statefulset_storage_and_credentials(private_setup):
    ctx = cr.SETUP_CONTEXTS["private"]
    sts = cr.one(private_setup, "StatefulSet", chart_values.MYSQL_FULLNAME)
    secret = cr.secret_data(cr.one(private_setup, "Secret", chart_values.MYSQL_FULLNAME))
    # Read as files (tests/test_database_limits.py follows each *_FILE to this Secret).
    assert (secret["root-password"], secret["password"]) == (ctx.mysql_root_password, ctx.mysql_password)
    assert sts["spec"]["template"]["spec"]["containers"][0]["env"]
    service = cr.one(private_setup, "Service", chart_values.MYSQL_FULLNAME)
    assert service["spec"]["type"] == "ClusterIP"
    initdb = cr.one(private_setup, "ConfigMap", f"{chart_values.MYSQL_FULLNAME}-initdb")
    assert "CREATE DATABASE IF NOT EXISTS `mlflow_auth`" in next(iter(initdb["data"].values()))


def azure_disk_volumes(objects: list[dict]) -> list[dict]:
    return [
        pv
        for pv in cr.of_kind(objects, "PersistentVolume")
        if pv["spec"]["csi"]["driver"] == "disk.csi.azure.com"
    ]


@pytest.mark.parametrize("name", [n for n, c in cr.SETUP_CONTEXTS.items() if c.mysql_existing_claim])
def test_mysql_mounts_the_existing_claim_and_the_release_owns_no_data_volume(setup_renders, name):
    """A Helm rollback or uninstall deletes what the release rendered: neither MySQL's claim nor its
    volume is among it, so a failed install cannot leave them Terminating, and the StatefulSet has no
    claim template that could provision an empty disk in their place."""
    ctx = cr.SETUP_CONTEXTS[name]
    objects = setup_renders[name]
    sts = cr.one(objects, "StatefulSet", chart_values.MYSQL_FULLNAME)
    assert sts["spec"]["replicas"] == 1
    assert "volumeClaimTemplates" not in sts["spec"]
    pod = sts["spec"]["template"]["spec"]
    [data] = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert data["persistentVolumeClaim"] == {"claimName": ctx.mysql_existing_claim}
    assert {"name": data["name"], "mountPath": "/var/lib/mysql"} in pod["containers"][0]["volumeMounts"]
    assert azure_disk_volumes(objects) == []
    assert [c for c in cr.of_kind(objects, "PersistentVolumeClaim") if "mysql" in c["metadata"]["name"]] == []


def test_without_a_claim_mysql_provisions_its_disk_dynamically(setup_renders, helm_bin, tmp_dir):
    assert not cr.SETUP_CONTEXTS["private-dynamic-disk"].mysql_existing_claim
    objects = setup_renders["private-dynamic-disk"]
    assert azure_disk_volumes(objects) == []
    sts = cr.one(objects, "StatefulSet", chart_values.MYSQL_FULLNAME)
    [template] = sts["spec"]["volumeClaimTemplates"]
    assert template["spec"]["storageClassName"] == "managed-csi"
    mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": template["metadata"]["name"], "mountPath": "/var/lib/mysql"} in mounts
    # The subchart on its own, with its defaults: no PersistentVolume at all.
    values = {"auth": {"rootPassword": "r" * 16, "password": "p" * 16}}
    alone = cr.render(helm_bin, cr.MYSQL_CHART, "db", values, tmp_dir)
    assert cr.of_kind(alone, "PersistentVolume") == [] and cr.of_kind(alone, "StatefulSet")


def cronjob_pod_labels(objects: list[dict], task: str) -> dict:
    [cronjob] = [
        o
        for o in cr.of_kind(objects, "CronJob")
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == task
    ]
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]


def test_networkpolicy_admits_only_the_tracking_server_and_maintenance_to_mysql(
    private_setup, project_renders
):
    policy = cr.one(private_setup, "NetworkPolicy", chart_values.MYSQL_FULLNAME)
    mysql_labels = cr.one(private_setup, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    tracking_labels = tracking_deployment(private_setup)["spec"]["template"]["metadata"]["labels"]
    assert labels_match(policy["spec"]["podSelector"]["matchLabels"], mysql_labels)
    assert not labels_match(policy["spec"]["podSelector"]["matchLabels"], tracking_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]  # egress: tests/test_database_limits.py
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 3306}]
    # No namespaceSelector / ipBlock: this namespace's pods only, the server and the backup and gc Jobs.
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])
    admitted = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    for labels in (
        tracking_labels,
        cronjob_pod_labels(private_setup, "backup"),
        cronjob_pod_labels(private_setup, "gc"),
    ):
        assert any(labels_match(selector, labels) for selector in admitted), labels
    others = [
        o["spec"]["template"]["metadata"]["labels"]
        for r in project_renders.values()
        for o in cr.of_kind(r, "Job")
    ]
    others.append(cr.one(private_setup, "Pod")["metadata"]["labels"])
    assert others and not any(labels_match(selector, labels) for selector in admitted for labels in others)


def _pod_labels(obj: dict) -> dict:
    if obj["kind"] == "Pod":
        return obj["metadata"]["labels"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict, labels: dict) -> bool:
    """A label selector's matchLabels and its `In`/`NotIn` matchExpressions (the operators the charts use)."""
    expressions = selector.get("matchExpressions", [])
    assert all(e["operator"] in ("In", "NotIn") for e in expressions), expressions
    return labels_match(selector.get("matchLabels", {}), labels) and all(
        (labels.get(e["key"]) in e["values"]) == (e["operator"] == "In") for e in expressions
    )


def policies_for(objects: list[dict], obj: dict) -> list[dict]:
    """The NetworkPolicies of `obj`'s namespace that select its pods."""
    namespace = obj["metadata"].get("namespace")
    return [
        p
        for p in cr.of_kind(objects, "NetworkPolicy")
        if p["metadata"].get("namespace") == namespace and selects(p["spec"]["podSelector"], _pod_labels(obj))
    ]


def rules(policies: list[dict], direction: str) -> list[dict] | None:
    """The union of `direction` ("ingress"/"egress") rules, or None when no policy isolates that way."""
    isolating = [p for p in policies if direction.capitalize() in p["spec"]["policyTypes"]]
    if not isolating:
        return None
    return [rule for p in isolating for rule in p["spec"].get(direction, [])]


def test_every_pod_has_a_networkpolicy_and_clients_accept_nothing(setup_renders, project_renders):
    release_egress = [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        },
        {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": cr.SETUP_RELEASE}}}]},
    ]
    blocked = ["169.254.169.254/32", "168.63.129.16/32"]
    for name, objects in setup_renders.items():
        ctx = cr.SETUP_CONTEXTS[name]
        server = ctx.flexible_server
        for obj, pod in cr.pod_specs(objects):
            where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
            policies = policies_for(objects, obj)
            ingress = rules(policies, "ingress")
            # Every pod of the platform: no IMDS, no Azure host address (issue 10.4), else open. With a
            # flexible server, its subnet is out too, except on 3306 for the tracking and maintenance pods.
            expected_egress = [
                *release_egress,
                {
                    "to": [
                        {
                            "ipBlock": {
                                "cidr": "0.0.0.0/0",
                                "except": blocked + ([server.network_cidr] if server else []),
                            }
                        }
                    ]
                },
            ]
            component = _pod_labels(obj)["app.kubernetes.io/component"]
            if server and component in ("tracking", "jobs", "maintenance"):
                expected_egress.append(
                    {
                        "to": [{"ipBlock": {"cidr": server.network_cidr}}],
                        "ports": [{"protocol": "TCP", "port": 3306}],
                    }
                )
            if component == "database":  # MySQL connects to nothing: DNS only (issue 18.7)
                expected_egress = release_egress[:1]
            assert rules(policies, "egress") == expected_egress, where
            if obj["kind"] in ("CronJob", "Job", "Pod") or component == "jobs":
                # Maintenance Jobs, the helm test pod, the job runner: clients only.
                assert ingress == [], where
            elif obj["kind"] == "StatefulSet":  # MySQL: the tracking and maintenance pods, 3306
                assert [r["ports"] for r in ingress] == [[{"protocol": "TCP", "port": 3306}]], where
            elif obj["kind"] == "Deployment":  # the tracking server
                ports = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
                expected = [
                    # Its plain HTTP port from pods in the cluster only (no ipBlock: nothing outside).
                    {
                        "from": [{"namespaceSelector": {}}],
                        "ports": [{"protocol": "TCP", "port": ports["http"]}],
                    }
                ]
                if "tls" in [c["name"] for c in pod["containers"]]:
                    expected += [
                        # HTTPS from the allowed ranges; the terminator's HTTP (challenge, redirect) from all.
                        {
                            "from": [{"ipBlock": {"cidr": cidr}} for cidr in ctx.source_ranges],
                            "ports": [{"protocol": "TCP", "port": ports["tls-https"]}],
                        },
                        {"ports": [{"protocol": "TCP", "port": ports["tls-http"]}]},
                    ]
                expected.append(
                    {  # metrics from kube-system only
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/metadata.name",
                                            "operator": "In",
                                            "values": ["kube-system"],
                                        }
                                    ]
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": ports["metrics"]}],
                    }
                )
                assert ingress == expected, where
            else:
                raise AssertionError(f"unexpected workload {where}")
    for objects in project_renders.values():
        for obj, _ in cr.pod_specs(objects):
            # The run chart's own policy: nothing connects to a run (its egress: mlflow_setup's policy
            # for run pods, tests/test_runs_isolation.py).
            assert rules(policies_for(objects, obj), "ingress") == []


def test_metrics_are_served_on_their_own_port_that_no_service_exposes(setup_renders):
    for name, objects in setup_renders.items():
        pod = tracking_deployment(objects)["spec"]["template"]
        container = server_container(objects)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MLFLOW_AKS_METRICS_PORT"] == str(ports["metrics"]) and ports["metrics"] != ports["http"]
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
        assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
        for service in cr.of_kind(objects, "Service"):
            exposed = {p.get("targetPort") for p in service["spec"]["ports"]} | {
                p["port"] for p in service["spec"]["ports"]
            }
            assert not exposed & {"metrics", ports["metrics"]}, (name, service["metadata"]["name"])


# --- exposure --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(cr.SETUP_CONTEXTS))
def test_exposure_follows_config(setup_renders, name):
    ctx = cr.SETUP_CONTEXTS[name]
    objects = setup_renders[name]
    # In-cluster clients always have the plain HTTP ClusterIP Service, never a load balancer.
    service = cr.one(objects, "Service", chart_values.TRACKING_SERVICE)
    assert service["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in service["spec"]["ports"]] == [chart_values.TRACKING_SERVICE_PORT]
    balancers = [s for s in cr.of_kind(objects, "Service") if s["spec"]["type"] == "LoadBalancer"]
    if ctx.exposure == "private":
        assert balancers == []
        return
    by_port = {s["spec"]["ports"][0]["port"]: s for s in balancers}
    assert sorted(by_port) == [80, 443] and all(len(s["spec"]["ports"]) == 1 for s in balancers)
    https, http = by_port[443], by_port[80]
    # HTTPS admits the configured ranges only; port 80 (ACME HTTP-01 and the redirect) admits everyone.
    assert https["spec"]["loadBalancerSourceRanges"] == list(ctx.source_ranges)
    assert "loadBalancerSourceRanges" not in http["spec"]
    assert https["spec"]["ports"][0]["targetPort"] == "tls-https"
    assert http["spec"]["ports"][0]["targetPort"] == "tls-http"
    for balancer in balancers:
        # Both share the one static IP Pulumi owns (and its DNS name); client addresses are kept.
        annotations = balancer["metadata"]["annotations"]
        assert annotations["service.beta.kubernetes.io/azure-pip-name"] == cr.PUBLIC_IP_NAME
        assert annotations["service.beta.kubernetes.io/azure-load-balancer-resource-group"] == (
            cr.PUBLIC_IP_RESOURCE_GROUP
        )
        assert "service.beta.kubernetes.io/azure-dns-label-name" not in annotations
        assert balancer["spec"]["externalTrafficPolicy"] == "Local"
        # Nothing public reaches the server's own port.
        assert balancer["spec"]["ports"][0]["targetPort"] != "http"


# --- project volume --------------------------------------------------------------------------------


def test_project_volume_is_static_azure_files_rwx_retain(private_setup):
    ctx = cr.SETUP_CONTEXTS["private"]
    pvc = cr.one(private_setup, "PersistentVolumeClaim", chart_values.PROJECTS_CLAIM)
    pv = cr.one(private_setup, "PersistentVolume", pvc["spec"]["volumeName"])
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"] == pvc["spec"]["accessModes"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["storageClassName"] == "" == pvc["spec"]["storageClassName"]
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    csi = pv["spec"]["csi"]
    assert csi["driver"] == "file.csi.azure.com"
    assert csi["volumeAttributes"]["shareName"] == ctx.projects_share
    secret = cr.secret_data(cr.one(private_setup, "Secret", csi["nodeStageSecretRef"]["name"]))
    # The project files account, never the artifacts account (which takes no key at all).
    assert secret == {
        "azurestorageaccountname": ctx.projects_account,
        "azurestorageaccountkey": ctx.projects_account_key,
    }
    assert ctx.projects_account != ctx.storage_account
    assert csi["volumeHandle"].split("#")[:3] == [
        ctx.projects_resource_group,
        ctx.projects_account,
        ctx.projects_share,
    ]


# --- secrets never leak ----------------------------------------------------------------------------


def strings_in(value) -> list[str]:
    """Every string leaf (and key) of a rendered object."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *strings_in(v))]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return [str(value)]


def test_no_secret_value_outside_secrets(setup_renders, project_renders):
    for name, objects in setup_renders.items():
        secrets = cr.secret_strings(cr.SETUP_CONTEXTS[name])
        in_secrets = [v for o in cr.of_kind(objects, "Secret") for v in cr.secret_data(o).values()]
        assert any(cr.SETUP_CONTEXTS[name].mysql_password in v for v in in_secrets)  # the check sees a leak
        others = [o for o in objects if o["kind"] != "Secret"] + [
            o for r in project_renders.values() for o in r
        ]
        for obj in others:
            leaked = [s for s in secrets for leaf in strings_in(obj) if s in leaf]
            assert not leaked, f"{obj['kind']}/{obj['metadata']['name']} contains a secret"


# --- run Jobs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("run", "pool"), PROJECT_CASES)
def test_job_runs_its_configured_run(project_renders, private_setup, run, pool):
    spec = cr.RUNS[run]
    job = cr.one(project_renders[(run, pool)], "Job")
    assert job["metadata"]["name"] == f"{spec.name}-mlflow-project"
    assert len(job["metadata"]["name"]) <= 63
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    expected = [
        "mlflow",
        "run",
        "/projects/mlflow_project",
        "-e",
        spec.entry_point,
        "--env-manager",
        "local",
        "--experiment-name",
        spec.experiment,
    ]
    for key in sorted(spec.parameters):
        expected += ["-P", f"{key}={chart_values.parameter_value(spec.parameters[key])}"]
    assert container["command"] == expected, shlex.join(container["command"])
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == chart_values.tracking_url(cr.NAMESPACE)
    for name, key in (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password")):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert key in cr.secret_data(cr.one(private_setup, "Secret", ref["name"])) and ref["key"] == key
    # `mlflow run` tags mlflow.user with getpass.getuser() (LOGNAME first): the user the run logs in as.
    assert env["LOGNAME"]["valueFrom"] == env["MLFLOW_TRACKING_USERNAME"]["valueFrom"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/projects")
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert (
        volume["persistentVolumeClaim"]["claimName"]
        == cr.one(private_setup, "PersistentVolumeClaim")["metadata"]["name"]
    )
    assert (
        pod["serviceAccountName"] == cr.one(private_setup, "ServiceAccount", "mlflow-run")["metadata"]["name"]
    )
    assert job["spec"]["backoffLimit"] >= 0 and job["spec"]["activeDeadlineSeconds"] > 0
    assert pod["restartPolicy"] == "Never"
    if pool:
        assert pod["nodeSelector"] == dict([cr.JOBS_POOL_LABEL])
        assert pod["tolerations"] == [
            {"key": "mlflow-aks/pool", "operator": "Equal", "value": "jobs", "effect": "NoSchedule"}
        ]
    else:
        assert "nodeSelector" not in pod and "tolerations" not in pod


def test_job_name_longer_than_63_characters_is_refused(helm_bin, tmp_dir):
    ctx = cr.project_context(cr.RUNS["train"], False)
    result = cr.template(helm_bin, cr.PROJECT_CHART, "r" * 49, project_values(ctx), tmp_dir)
    assert result.returncode != 0 and "longer than 63" in result.stderr


# --- schemas reject bad values --------------------------------------------------------------------


def _setup_values_with(change) -> dict:
    values = setup_values(cr.SETUP_CONTEXTS["private"])
    change(values)
    return values


SETUP_REJECTIONS = {
    "public without ranges": (
        lambda v: v["exposure"].update(type="public", loadBalancerSourceRanges=[]),
        "loadBalancerSourceRanges",
    ),
    "public open to the internet": (
        lambda v: v["exposure"].update(type="public", loadBalancerSourceRanges=["0.0.0.0/0"]),
        "loadBalancerSourceRanges",
    ),
    "unknown exposure": (lambda v: v["exposure"].update(type="internet"), "exposure.type"),
    "unknown top-level key": (lambda v: v.update(replicas=3), "replicas"),
    "unknown nested key": (lambda v: v["tracking"].update(backendStoreUri="sqlite://"), "backendStoreUri"),
    "image by tag": (lambda v: v["tracking"]["image"].update(digest="latest"), "tracking.image.digest"),
    "short admin password": (lambda v: v["tracking"]["auth"].update(adminPassword="short"), "adminPassword"),
    "short run password": (lambda v: v["tracking"]["auth"].update(runPassword="short"), "runPassword"),
    "no mysql password": (lambda v: v["mysql"]["auth"].update(password=""), "password"),
    "no workload identity": (
        lambda v: v["tracking"]["serviceAccount"].update(workloadIdentityClientId=""),
        "workloadIdentityClientId",
    ),
    "short gateway-key passphrase": (
        lambda v: v["tracking"]["encryption"].update(kekPassphrase="short"),
        "kekPassphrase",
    ),
    "no gateway-key passphrase": (
        lambda v: v["tracking"]["encryption"].update(kekPassphrase=""),
        "kekPassphrase",
    ),
    "webhook key that is no Fernet key": (
        lambda v: v["tracking"]["encryption"].update(webhookKey="not-a-key"),
        "webhookKey",
    ),
    "no storage key": (lambda v: v["project"]["volume"].update(storageAccountKey=""), "storageAccountKey"),
    "claim name that is no Kubernetes name": (
        lambda v: v["mysql"]["persistence"].update(existingClaim="MySQL data"),
        "existingClaim",
    ),
    "a disk the chart would bind itself": (
        lambda v: v["mysql"]["persistence"].update(azureDisk={"diskURI": cr.MYSQL_DISK_ID}),
        "azureDisk",
    ),
}


@pytest.mark.parametrize("case", list(SETUP_REJECTIONS))
def test_setup_schema_rejects(helm_bin, tmp_dir, case):
    change, field = SETUP_REJECTIONS[case]
    result = cr.template(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, _setup_values_with(change), tmp_dir)
    assert result.returncode != 0, f"{case} was accepted"
    assert "schema" in result.stderr and field in result.stderr, result.stderr


def _project_values_with(change) -> dict:
    values = project_values(cr.project_context(cr.RUNS["train"], True))
    change(values)
    return values


PROJECT_REJECTIONS = {
    "unknown key": (lambda v: v["run"].update(command="rm -rf /"), "command"),
    "no experiment": (lambda v: v["run"].update(experiment=""), "experiment"),
    "numeric parameter": (lambda v: v["run"]["parameters"].update(seed=3), "seed"),
    "bad parameter name": (lambda v: v["run"]["parameters"].update({"a b": "1"}), "parameters"),
    "project outside /projects": (lambda v: v["run"].update(project="../etc"), "project"),
    "jobs pool without selector": (lambda v: v["jobsPool"].update(nodeSelector={}), "nodeSelector"),
    "image by tag": (lambda v: v["image"].update(digest="v1"), "digest"),
}


@pytest.mark.parametrize("case", list(PROJECT_REJECTIONS))
def test_project_schema_rejects(helm_bin, tmp_dir, case):
    change, field = PROJECT_REJECTIONS[case]
    result = cr.template(helm_bin, cr.PROJECT_CHART, "run", _project_values_with(change), tmp_dir)
    assert result.returncode != 0, f"{case} was accepted"
    assert "schema" in result.stderr and field in result.stderr, result.stderr


# --- chart_values itself ---------------------------------------------------------------------------


def test_values_templates_keep_hostile_strings_intact():
    hostile = "x\"y'z: {{ .Values }}\n- item # not a comment %s \\ \u00e9"
    ctx = cr.setup_context()
    ctx = SetupContext(**{**ctx.__dict__, "admin_password": hostile, "projects_account_key": hostile})
    values = setup_values(ctx)
    assert values["tracking"]["auth"]["adminPassword"] == hostile
    assert values["project"]["volume"]["storageAccountKey"] == hostile
    run = Run("r1", "train", hostile, {"experiment_name": hostile})
    pv = project_values(cr.project_context(run, False))
    assert pv["run"]["experiment"] == hostile and pv["run"]["parameters"] == {"experiment_name": hostile}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exposure": "public"}, "source range"),
        ({"exposure": "internet"}, "exposure"),
        ({"tracking_image": f"otheracr.azurecr.io/mlflow-tracking-server@sha256:{'1' * 64}"}, "registry"),
        ({"tracking_image": f"{cr.ACR}/mlflow-tracking-server:latest"}, "sha256"),
    ],
)
def test_setup_values_refuses_bad_contexts(change, message):
    ctx = SetupContext(**{**cr.setup_context().__dict__, **change})
    with pytest.raises(ValueError, match=message):
        setup_values(ctx)


def test_project_values_refuse_a_pool_without_taint_and_odd_parameters():
    ctx = cr.project_context(cr.RUNS["train"], True)
    with pytest.raises(ValueError, match="taint"):
        project_values(ProjectContext(**{**ctx.__dict__, "jobs_pool_taint": None}))
    with pytest.raises(TypeError, match="parameter"):
        project_values(cr.with_run(ctx, parameters={"x": [1, 2]}))
    assert chart_values.parameter_value(True) == "true" and chart_values.parameter_value(0.25) == "0.25"


# --- chart hygiene ---------------------------------------------------------------------------------


def undocumented_values(values_file: Path) -> list[str]:
    """Leaf keys of values.yaml with no `# --` comment above them or above one of their parents."""
    key_line = re.compile(r"^(\s*)([A-Za-z0-9_]+):(.*)$")
    entries = []  # (indent, key, has own `# --`, has an inline value)
    comment: list[str] = []
    for line in values_file.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        match = key_line.match(line)
        if match:
            documented = any(c.startswith("# --") for c in comment)
            entries.append((len(match[1]), match[2], documented, bool(match[3].strip())))
        if stripped and not stripped.startswith("- "):
            comment = []
    missing, stack = [], []  # stack of (indent, key, documented)
    for i, (indent, key, documented, inline) in enumerate(entries):
        while stack and stack[-1][0] >= indent:
            stack.pop()
        covered = documented or any(d for _, _, d in stack)
        has_children = i + 1 < len(entries) and entries[i + 1][0] > indent and not inline
        if not has_children and not covered:
            missing.append(".".join([*(k for _, k, _ in stack), key]))
        stack.append((indent, key, documented))
    return missing


@pytest.mark.parametrize("chart", [cr.SETUP_CHART, cr.PROJECT_CHART, cr.MYSQL_CHART], ids=lambda p: p.name)
def test_every_value_is_documented(chart):
    assert undocumented_values(chart / "values.yaml") == []
    schema = json.loads((chart / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False  # strict: an unknown key is an error, not ignored
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"])


def test_mysql_dependency_resolves_offline(helm_bin):
    """The subchart is vendored (a symlink to charts/mysql) and Chart.lock matches Chart.yaml."""
    chart = yaml.safe_load((cr.SETUP_CHART / "Chart.yaml").read_text())
    lock = yaml.safe_load((cr.SETUP_CHART / "Chart.lock").read_text())
    strip = [{k: d[k] for k in ("name", "version", "repository")} for d in chart["dependencies"]]
    assert (
        strip
        == lock["dependencies"]
        == [{"name": "mysql", "version": "0.1.0", "repository": "file://../mysql"}]
    )
    assert (cr.SETUP_CHART / "charts" / "mysql").resolve() == cr.MYSQL_CHART
    done = subprocess.run(
        [helm_bin, "dependency", "list", str(cr.SETUP_CHART)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    [row] = [line.split() for line in done.stdout.splitlines() if line.startswith("mysql")]
    assert (
        row[1] == yaml.safe_load((cr.MYSQL_CHART / "Chart.yaml").read_text())["version"]
        and row[-1] == "unpacked"
    )


def test_external_database_instead_of_the_bundled_mysql(helm_bin, tmp_dir, tmp_path, monkeypatch):
    """The shape the local stack renders: mysql.enabled false, externalDatabase.* (MariaDB on loopback)."""
    values = setup_values(cr.SETUP_CONTEXTS["private"])
    values["mysql"] = {"enabled": False}
    values["externalDatabase"] = {"host": "127.0.0.1", "port": 13306, "user": "ml", "password": "p@ss:w/rd%",
                                  "database": "trk", "authDatabase": "trk_auth"}  # fmt: skip
    assert cr.lint(helm_bin, cr.SETUP_CHART, values, tmp_dir).returncode == 0
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)
    assert not cr.of_kind(objects, "StatefulSet")
    policies = [p["metadata"]["name"] for p in cr.of_kind(objects, "NetworkPolicy")]
    tracking = chart_values.TRACKING_SERVICE
    assert policies == [
        f"{chart_values.FULLNAME}-jobs",
        f"{chart_values.FULLNAME}-runs",
        f"{chart_values.FULLNAME}-runs-default-deny",
        tracking,
        f"{tracking}-test",
        f"{chart_values.FULLNAME}-maintenance",
        f"{chart_values.FULLNAME}-egress",
    ]
    data = cr.secret_data(cr.one(objects, "Secret", chart_values.TRACKING_SERVICE))
    url = make_url(data["backend-store-uri"])
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "127.0.0.1", 13306, "ml", "p@ss:w/rd%", "trk")  # fmt: skip
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(data["basic_auth.ini"])
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    from mlflow.server.auth.config import read_auth_config

    auth_url = make_url(read_auth_config().database_uri)
    assert (auth_url.host, auth_url.password, auth_url.database) == ("127.0.0.1", "p@ss:w/rd%", "trk_auth")
