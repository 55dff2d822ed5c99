"""MLflow's server-side jobs as charts/mlflow_setup lays them out (issue 19, items 1 and 4), and the two
files that run them: images/tracking-server/jobs.py (the runner) and serve.py's change 12.

The guarantees rest on MLflow 3.17's `executor` engine (mlflow/server/jobs/_executor_runner.py): the queue
is the tracking database's `jobs` table, a job is claimed by one conditional update, and a runner's start
puts back to PENDING the jobs an earlier runner left RUNNING. So: every serving pod accepts jobs with the
executor engine and never runs a runner; exactly one runner pod exists (1 replica, Recreate); it shares
the database and the internal gateway token with the servers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

from components import chart_values
from components.chart_values import setup_values
from local.chart import deep_merge
from tests import chart_render as cr
from tests.image_modules import load

IMAGE_DIR = cr.REPO_ROOT / "images" / "tracking-server"
JOBS = f"{chart_values.FULLNAME}-jobs"


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("charts-jobs")


def _render(helm_bin: str, tmp_dir: Path, overlay: dict | None = None, ctx: str = "private") -> list[dict]:
    values = deep_merge(setup_values(cr.SETUP_CONTEXTS[ctx]), overlay or {})
    return cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)


@pytest.fixture(scope="module")
def default(helm_bin, tmp_dir) -> list[dict]:
    return _render(helm_bin, tmp_dir)


@pytest.fixture(scope="module")
def jobs_off(helm_bin, tmp_dir) -> list[dict]:
    return _render(helm_bin, tmp_dir, {"jobs": {"enabled": False}})


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _server(objects: list[dict]) -> dict:
    pod = cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "mlflow")


def _runner(objects: list[dict]) -> tuple[dict, dict]:
    deployment = cr.one(objects, "Deployment", JOBS)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def _secret_key(env: dict[str, dict], name: str) -> tuple[str, str]:
    ref = env[name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_one_runner_at_a_time_and_servers_only_accept_jobs(default):
    deployment, runner = _runner(default)
    # One runner: its start recovers the RUNNING jobs of any earlier one, right only once that one is gone.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert runner["command"] == ["python", "/app/jobs.py"]
    server, runner_env = _env(_server(default)), _env(runner)
    for env in (server, runner_env):
        assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "true"
        # The queue in the shared database, not Huey's file in one pod.
        assert env["MLFLOW_SERVER_JOB_EXECUTION_ENGINE"]["value"] == "executor"
        assert _secret_key(env, "MLFLOW_BACKEND_STORE_URI") == (
            chart_values.TRACKING_SERVICE,
            "backend-store-uri",
        )
    # serve.py change 12: no runner beside any serving pod.
    assert server["MLFLOW_AKS_JOB_RUNNER"]["value"] == "separate"
    # Every server accepts the token the runner presents, from one Secret key; it is the runner's password.
    token = _secret_key(server, "_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN")
    assert token == _secret_key(runner_env, "_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN")
    assert (
        token
        == _secret_key(runner_env, "MLFLOW_TRACKING_PASSWORD")
        == (chart_values.TRACKING_SERVICE, "gateway-token")
    )
    assert runner_env["MLFLOW_TRACKING_USERNAME"]["value"] == cr.SETUP_CONTEXTS["private"].admin_username
    # Judges reach the gateway through the tracking Service.
    service = cr.one(default, "Service", chart_values.TRACKING_SERVICE)
    assert runner_env["MLFLOW_GATEWAY_URI"]["value"] == (
        f"http://{chart_values.TRACKING_SERVICE}.{cr.NAMESPACE}.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    )


def test_the_gateway_token_is_secret_derived_and_changes_with_the_flask_key(helm_bin, tmp_dir, default):
    data = cr.secret_data(cr.one(default, "Secret", chart_values.TRACKING_SERVICE))
    flask_key = cr.SETUP_CONTEXTS["private"].flask_secret_key
    assert (
        data["gateway-token"] == hashlib.sha256(f"mlflow-aks gateway token\n{flask_key}".encode()).hexdigest()
    )
    other = _render(
        helm_bin, tmp_dir, {"tracking": {"auth": {"flaskSecretKey": "another-flask-key-0123456789"}}}
    )
    assert (
        cr.secret_data(cr.one(other, "Secret", chart_values.TRACKING_SERVICE))["gateway-token"]
        != data["gateway-token"]
    )
    # Only in the Secret: no other object carries it.
    for obj in default:
        if obj["kind"] != "Secret":
            assert data["gateway-token"] not in str(obj)


def test_the_runner_has_the_servers_identity_and_keys(default):
    _, runner = _runner(default)
    deployment = cr.one(default, "Deployment", JOBS)
    server_pod = cr.one(default, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]
    assert (
        deployment["spec"]["template"]["spec"]["serviceAccountName"]
        == server_pod["spec"]["serviceAccountName"]
    )
    assert deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    server, env = _env(_server(default)), _env(runner)
    for name in ("MLFLOW_CRYPTO_KEK_PASSPHRASE", "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"):
        assert _secret_key(env, name) == _secret_key(server, name)
    assert env["MLFLOW_DISABLE_TELEMETRY"]["value"] == "true"
    # Sized from the measurement in values.yaml; its scratch volume is requested.
    assert runner["resources"]["requests"]["memory"] == "512Mi"
    assert runner["resources"]["limits"]["memory"] == "2Gi"


def test_mysql_admits_the_runner(default):
    _runner(default)  # exists
    labels = cr.one(default, "Deployment", JOBS)["spec"]["template"]["metadata"]["labels"]
    policy = cr.one(default, "NetworkPolicy", chart_values.MYSQL_FULLNAME)
    [rule] = policy["spec"]["ingress"]
    assert any(
        all(labels.get(k) == v for k, v in peer["podSelector"]["matchLabels"].items())
        for peer in rule["from"]
    )


def test_jobs_off_leaves_the_old_footprint(jobs_off, default):
    assert not [d for d in cr.of_kind(jobs_off, "Deployment") if d["metadata"]["name"] == JOBS]
    assert JOBS not in [p["metadata"]["name"] for p in cr.of_kind(jobs_off, "NetworkPolicy")]
    env = _env(_server(jobs_off))
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert not {
        "MLFLOW_SERVER_JOB_EXECUTION_ENGINE",
        "MLFLOW_AKS_JOB_RUNNER",
        "_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN",
    } & set(env)
    assert "gateway-token" not in cr.secret_data(cr.one(jobs_off, "Secret", chart_values.TRACKING_SERVICE))

    def max_connections(objects):
        options = cr.one(objects, "ConfigMap", f"{chart_values.MYSQL_FULLNAME}-options")["data"][
            "connections.cnf"
        ]
        return int(options.split("max_connections")[1].split("=")[1].split()[0])

    # The runner's processes are counted only when it exists (tests/test_database_limits.py checks the sum).
    assert max_connections(default) > max_connections(jobs_off)


@pytest.mark.parametrize("cidrs", [["10.30.4.0/28"], ["10.30.4.0/28", "20.50.60.64/26"]])
def test_providers_at_configured_addresses_are_reachable_from_gateway_and_judges(helm_bin, tmp_dir, cidrs):
    objects = _render(helm_bin, tmp_dir, {"llm": {"providerCidrs": cidrs, "allowPrivateAddresses": True}})
    policy = cr.one(objects, "NetworkPolicy", f"{chart_values.FULLNAME}-llm-providers")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": c}} for c in cidrs], "ports": [{"protocol": "TCP", "port": 443}]}
    ]
    selector = policy["spec"]["podSelector"]
    for name in (chart_values.TRACKING_SERVICE, JOBS):
        labels = cr.one(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selector["matchLabels"].items())
        [expression] = selector["matchExpressions"]
        assert expression["operator"] == "In" and labels[expression["key"]] in expression["values"]
        pod = cr.one(objects, "Deployment", name)["spec"]["template"]["spec"]
        env = _env(next(c for c in pod["containers"] if c["name"] in ("mlflow", "jobs")))
        assert env["MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS"]["value"] == "true"


def test_no_provider_ranges_no_extra_policy_and_mlflows_private_address_guard_stays(default):
    assert f"{chart_values.FULLNAME}-llm-providers" not in [
        p["metadata"]["name"] for p in cr.of_kind(default, "NetworkPolicy")
    ]
    assert "MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS" not in _env(_server(default))
    assert "MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS" not in _env(_runner(default)[1])


# --- jobs.py and serve.py ---------------------------------------------------------------------------


def _module(name: str):
    sys.path.insert(0, str(IMAGE_DIR))
    try:
        spec = importlib.util.spec_from_file_location(f"_test_{name}", IMAGE_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(IMAGE_DIR))


CHART_ENV = {
    "MLFLOW_BACKEND_STORE_URI": "mysql+pymysql://u:p@db/mlflow",
    "MLFLOW_GATEWAY_URI": "http://tracking:5000",
    "MLFLOW_SERVER_JOB_EXECUTION_ENGINE": "executor",
}


def test_runner_env_is_what_mlflow_server_gives_its_runner():
    from mlflow.server.constants import (
        BACKEND_STORE_URI_ENV_VAR,
        HUEY_STORAGE_PATH_ENV_VAR,
        MLFLOW_SERVER_UP_TIME,
    )

    jobs = _module("jobs")
    env = jobs.runner_env(CHART_ENV, now_ms=1234, pid=42, huey_dir="/tmp/huey")
    assert (
        env[BACKEND_STORE_URI_ENV_VAR]
        == env["MLFLOW_BACKEND_STORE_URI"]
        == CHART_ENV["MLFLOW_BACKEND_STORE_URI"]
    )
    # Recovery is bounded by this runner's start: jobs submitted after it are never reset.
    assert env[MLFLOW_SERVER_UP_TIME] == "1234"
    assert env["MLFLOW_SERVER_PID"] == "42" and env[HUEY_STORAGE_PATH_ENV_VAR] == "/tmp/huey"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MLFLOW_SERVER_JOB_EXECUTION_ENGINE": "huey"}, "only 'executor'"),
        ({"MLFLOW_BACKEND_STORE_URI": ""}, "MLFLOW_BACKEND_STORE_URI not set"),
        ({"MLFLOW_GATEWAY_URI": ""}, "MLFLOW_GATEWAY_URI not set"),
    ],
)
def test_runner_refuses_an_engine_or_environment_that_breaks_the_layout(change, message):
    jobs = _module("jobs")
    with pytest.raises(ValueError, match=message):
        jobs.runner_env({**CHART_ENV, **change}, now_ms=1, pid=1, huey_dir="/tmp/h")


def test_probe_follows_the_scheduler_loop(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    jobs = _module("jobs")
    assert jobs.probe(30) == 1  # never ticked

    class Scheduler:
        ticks = 0

        def tick(self):
            Scheduler.ticks += 1
            return 0

    jobs.beat_on_every_tick(Scheduler)
    Scheduler().tick()
    assert Scheduler.ticks == 1 and jobs.probe(30) == 0
    assert jobs.probe(30, now=time.time() + 31) == 1  # a loop that stopped a while ago


def test_serving_pods_start_no_runner_and_keep_the_charts_token(monkeypatch):
    """serve.py (12): `mlflow server` with jobs on would start a runner beside the server and make a token
    of its own; with MLFLOW_AKS_JOB_RUNNER=separate neither happens, and uvicorn stays in this process."""
    import mlflow.server
    import mlflow.server.jobs.utils as job_utils

    serve = _module("serve")
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    monkeypatch.setenv(serve.JOB_RUNNER_ENV, "separate")
    monkeypatch.setenv(serve.GATEWAY_TOKEN_ENV, "the-charts-token")
    launched = []
    monkeypatch.setattr(job_utils, "_launch_job_execution_runner", lambda *a: launched.append(a))
    monkeypatch.setattr(mlflow.server, "_exec_cmd", lambda *a, **k: pytest.fail("uvicorn as a child"))
    ran = {}
    monkeypatch.setattr(serve, "_patch_uvicorn_supervisor", lambda workers: None)
    monkeypatch.setattr(serve, "_patch_uvicorn_worker", lambda: None)
    monkeypatch.setattr(
        serve, "_uvicorn", lambda argv: ran.update(argv=argv, token=os.environ[serve.GATEWAY_TOKEN_ENV]) or 0
    )
    serve._patch_mlflow_server(1)
    # What mlflow server does next (mlflow/server/__init__.py, _run_server): its own token, then the runner.
    mlflow.server._exec_cmd(["python", "-m", "uvicorn", "app"], extra_env={serve.GATEWAY_TOKEN_ENV: "random"})
    job_utils._launch_job_execution_runner({}, 1)
    assert ran == {"argv": ["app"], "token": "the-charts-token"}
    assert launched == []


def test_runner_waits_for_the_servers_schema_migration(tmp_path):
    """An empty database (first install) or an older schema (an MLflow upgrade) is migrated by the tracking
    pods' init container: the runner waits instead of letting MLflow's store create or use it."""
    import sqlalchemy
    from mlflow.store.db.utils import _get_latest_schema_revision

    jobs = _module("jobs")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert jobs.schema_is_current(uri)[0] is False  # empty
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(sqlalchemy.text("INSERT INTO alembic_version VALUES ('0584bdc529eb')"))
    current, state = jobs.schema_is_current(uri)
    assert current is False and "0584bdc529eb" in state  # older
    with engine.begin() as conn:
        head = {"v": _get_latest_schema_revision()}
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = :v"), head)
    assert jobs.schema_is_current(uri)[0] is True
    engine.dispose()


def test_extra_env_reaches_the_runner_only(helm_bin, tmp_dir):
    key = {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-keys", "key": "openai"}}}
    objects = _render(helm_bin, tmp_dir, {"jobs": {"extraEnv": [key]}})
    assert _env(_runner(objects)[1])["OPENAI_API_KEY"] == key
    assert "OPENAI_API_KEY" not in _env(_server(objects))


def test_a_runner_stops_when_its_lock_or_the_schema_goes(tmp_path, monkeypatch):
    """Checked every few seconds while it runs: a lost lock, or a database restored or being migrated
    under it, ends the runner (MLflow's stores would otherwise create or upgrade tables themselves)."""
    import sqlalchemy
    from mlflow.store.db.utils import _get_latest_schema_revision

    jobs = _module("jobs")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        head = {"v": _get_latest_schema_revision()}
        conn.execute(sqlalchemy.text("INSERT INTO alembic_version VALUES (:v)"), head)
    held = {"lock": True}
    monkeypatch.setattr(jobs, "still_holds_leader_lock", lambda conn: held["lock"])
    assert jobs.reason_to_stop(None, uri) is None
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DROP TABLE alembic_version"))  # e.g. dropped for a restore
    assert "the tracking database changed" in jobs.reason_to_stop(None, uri)
    held["lock"] = False
    assert "lost the mlflow_aks_job_runner lock" in jobs.reason_to_stop(None, uri)
    engine.dispose()


def test_the_runners_jobs_reach_the_servers_artifacts_destination(default):
    """Issue detection's report: each job's process resolves a run's `mlflow-artifacts:` location to the
    serving pods' `--artifacts-destination` (serve.py change 16, through job_entry.py), with the identity
    the runner already shares with them (test_the_runner_has_the_servers_identity_and_keys)."""
    from mlflow.server.constants import ARTIFACTS_DESTINATION_ENV_VAR, SERVE_ARTIFACTS_ENV_VAR

    args = _server(default)["args"]
    destination = args[args.index("--artifacts-destination") + 1]
    _, runner = _runner(default)
    env = _env(runner)
    assert env[ARTIFACTS_DESTINATION_ENV_VAR]["value"] == destination
    assert env[SERVE_ARTIFACTS_ENV_VAR]["value"] == "true"


def test_each_job_process_starts_through_job_entry(monkeypatch):
    """jobs.py points MLflow's launcher at job_entry.py and puts its directory on the jobs' PYTHONPATH."""
    import mlflow.server.jobs.utils as job_utils

    jobs = _module("jobs")
    monkeypatch.setattr(job_utils, "_JOB_ENTRY_MODULE", job_utils._JOB_ENTRY_MODULE)
    environ = {"PYTHONPATH": "/elsewhere"}
    jobs.run_jobs_through_entry(job_utils, environ)
    assert job_utils._JOB_ENTRY_MODULE == jobs.JOB_ENTRY_MODULE == "job_entry"
    assert environ["PYTHONPATH"].split(os.pathsep) == [str(IMAGE_DIR), "/elsewhere"]
    assert (IMAGE_DIR / "job_entry.py").is_file()


def test_job_entry_installs_change_16_then_runs_mlflows_entry(monkeypatch):
    """job_entry.py: serve.py's resolver is MLflow's for `mlflow-artifacts:` when MLflow's job entry runs."""
    import runpy

    from mlflow.store.artifact import artifact_repository_registry

    registry = artifact_repository_registry._artifact_repository_registry._registry
    monkeypatch.setitem(registry, "mlflow-artifacts", registry["mlflow-artifacts"])
    entry = load(monkeypatch, "job_entry")  # with serve.py importable beside it, as in /app
    ran = []

    def run_module(name, **kwargs):
        ran.append((name, kwargs, registry["mlflow-artifacts"]))

    monkeypatch.setattr(runpy, "run_module", run_module)
    entry.main()
    [(name, kwargs, resolver)] = ran
    assert name == "mlflow.server.jobs._job_subproc_entry" and kwargs["run_name"] == "__main__"
    assert resolver is sys.modules["serve"].in_process_artifact_repository
