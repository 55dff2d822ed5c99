"""Faults on the live stack: the server killed mid-logging, MariaDB restarted, Azurite down.

Each test puts the stack back as it found it (in `finally`), so later tests start from a healthy stack.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from tests.e2e.conftest import query

# A client that fails fast instead of retrying for minutes: the tests count what succeeded.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@pytest.fixture
def fail_fast_client(client_env, monkeypatch) -> MlflowClient:
    for key, value in FAIL_FAST.items():
        monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=client_env["MLFLOW_TRACKING_URI"])


def _wait_for(what: str, check, timeout: float = 90.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # noqa: S110 (polling through an outage)
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_kill_9_server_while_logging_keeps_every_acknowledged_metric(stack, fail_fast_client, db) -> None:
    client = fail_fast_client
    experiment_id = client.create_experiment("e2e-fault-kill")
    run_id = client.create_run(experiment_id).info.run_id
    acknowledged: list[int] = []
    failed: list[int] = []
    stop_logging = threading.Event()

    def log_loop() -> None:
        step = 0
        while not stop_logging.is_set():
            try:
                client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
                acknowledged.append(step)
            except Exception:
                failed.append(step)
                time.sleep(0.1)
            step += 1

    logger = threading.Thread(target=log_loop, daemon=True)
    logger.start()
    try:
        _wait_for("20 acknowledged metrics", lambda: len(acknowledged) >= 20, timeout=60)
        old_pids = stack.server_pids()
        stack.kill_server(signal.SIGKILL)
        assert not any(pid in stack.server_pids() for pid in old_pids)
        _wait_for("a failed call while the server is down", lambda: len(failed) >= 1, timeout=30)
        stack.start_server()
        before = len(acknowledged)
        _wait_for("10 more acknowledged metrics", lambda: len(acknowledged) >= before + 10, timeout=60)
    finally:
        stop_logging.set()
        logger.join(timeout=30)
        if not stack.status()["server"]["running"]:
            stack.start_server()

    stored_api = {m.step for m in client.get_metric_history(run_id, "loss")}
    stored_db = {
        s for (s,) in query(db, "SELECT step FROM metrics WHERE run_uuid = %s AND `key` = 'loss'", run_id)
    }
    assert failed, "the kill did not interrupt the logging loop"
    assert set(acknowledged) <= stored_db, sorted(set(acknowledged) - stored_db)
    assert set(acknowledged) <= stored_api


def test_mariadb_restart_under_running_server(stack, client, fail_fast_client) -> None:
    server_pid = stack.status()["server"]["pid"]
    experiment_id = client.create_experiment("e2e-fault-mariadb")
    stack.restart_mariadb()
    # The server's connection pool held connections to the old mariadbd; it must recover by itself.
    run_id = None

    def create_run() -> bool:
        nonlocal run_id
        run_id = fail_fast_client.create_run(experiment_id).info.run_id
        return True

    _wait_for("the server to serve again after the MariaDB restart", create_run, timeout=60)
    fail_fast_client.log_metric(run_id, "after_restart", 1.0)
    assert fail_fast_client.get_run(run_id).data.metrics == {"after_restart": 1.0}
    assert stack.status()["server"]["pid"] == server_pid, "the server was restarted"


def test_readiness_probe_follows_the_artifact_store(stack) -> None:
    """The chart's readiness probe checks the artifact store through the server; /health does not."""
    main = stack.server_spec().main
    liveness = main.probes["liveness"]
    assert stack.readiness(main).returncode == 0
    stack.stop_azurite()
    try:
        assert stack.http_probe(liveness), (
            "/health should still say OK: it does not look at the artifact store"
        )
        down = stack.readiness(main)
        assert down.returncode != 0
        assert "artifact store" in down.stderr, down.stderr
        assert "tracking database" not in down.stderr, down.stderr
    finally:
        stack.start_azurite()
    _wait_for("readiness with Azurite back", lambda: stack.readiness(main).returncode == 0, timeout=60)


def test_readiness_probe_follows_the_database(stack) -> None:
    main = stack.server_spec().main
    stack.stop_mariadb()
    try:
        down = stack.readiness(main)
        assert down.returncode != 0
        assert "tracking database" in down.stderr, down.stderr
    finally:
        stack.restart_mariadb()
    _wait_for("readiness with MariaDB back", lambda: stack.readiness(main).returncode == 0, timeout=60)


def test_azurite_down_during_log_model_leaves_no_finished_run_without_model(
    stack, fail_fast_client, monkeypatch
) -> None:
    from sklearn.linear_model import LogisticRegression

    client = fail_fast_client
    # The server keeps retrying the blob upload for about a minute (the Azure SDK's policy); the
    # client gives up first, which is the error a user sees.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    mlflow.set_tracking_uri(stack.tracking_uri)
    experiment_id = client.create_experiment("e2e-fault-azurite")
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])

    t0 = time.monotonic()
    stack.stop_azurite()
    failed_run_id = None
    try:
        # Any client-side error is the point: the upload through the proxy cannot succeed.
        with pytest.raises(Exception) as raised, mlflow.start_run(experiment_id=experiment_id) as run:
            failed_run_id = run.info.run_id
            # Explicit requirements: skip MLflow's slow requirement inference (a subprocess).
            mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
        assert failed_run_id is not None
        print(f"log_model with Azurite down raised {type(raised.value).__name__}: {str(raised.value)[:200]}")
    finally:
        t1 = time.monotonic()
        stack.start_azurite()
    t2 = time.monotonic()

    # The same logging with Azurite back succeeds: a FINISHED run with its model.
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    ok_run_id = run.info.run_id
    print(f"timing: failing log_model {t1 - t0:.1f}s, Azurite start {t2 - t1:.1f}s")

    assert client.get_run(failed_run_id).info.status == "FAILED"
    runs = client.search_runs([experiment_id])
    assert {r.info.run_id for r in runs} == {failed_run_id, ok_run_id}
    for finished in (r for r in runs if r.info.status == "FINISHED"):
        [model] = client.search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{finished.info.run_id}'"
        )
        assert model.status == LoggedModelStatus.READY
        files = mlflow.artifacts.list_artifacts(artifact_uri=model.artifact_location)
        assert "MLmodel" in {Path(f.path).name for f in files}
    # The model whose upload failed is not READY (MLflow marks it FAILED), so nothing serves it.
    failed_models = client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{failed_run_id}'"
    )
    assert all(m.status != LoggedModelStatus.READY for m in failed_models)
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{stack.tracking_uri}/health").status_code == 200
