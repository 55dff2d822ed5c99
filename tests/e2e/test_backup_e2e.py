"""Backups, restores, schema upgrades and garbage collection on the real local stack (MariaDB + Azurite).

`LocalStack.backup()`, `.restore()` and `.collect_garbage()` run the chart's own backup and gc CronJob
containers (`helm template`, then their command and environment as local processes), and the server's
start runs the chart's migrate init container, which backs up before migrating. These tests use a stack
of their own: they drop and restore its databases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pymysql
import pytest
from azure.storage.blob import BlobServiceClient

from local import LocalStack, StackConfig, StackError, free_ports
from local import mariadb as local_mariadb

REPO_ROOT = Path(__file__).resolve().parents[2]
MLFLOW2_PYTHON = REPO_ROOT / ".venv-mlflow2" / "bin" / "python"


def _new_stack(helm_bin: str, workdir: Path, **values) -> LocalStack:
    server, mysql, azurite = free_ports(3)
    return LocalStack(
        StackConfig(
            workdir=workdir / "stack", server_port=server, mysql_port=mysql, azurite_port=azurite,
            storage_account="backupacct", helm=helm_bin, values=values,
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: MariaDB runs as user `mysql`, who cannot enter /tmp/pytest-of-root (0700).
    directory = Path(tempfile.mkdtemp(prefix="mlflow-aks-backup-"))
    os.chmod(directory, 0o755)  # noqa: S103 (secrets inside are 0600)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(helm_bin: str, workdir: Path) -> Iterator[LocalStack]:
    local_stack = _new_stack(helm_bin, workdir / "main", gc={"olderThan": "0s"})
    try:
        local_stack.start()
        yield local_stack
    finally:
        local_stack.stop()


@pytest.fixture
def admin(stack: LocalStack) -> Iterator[None]:
    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    os.environ.update(stack.client_env())
    import mlflow

    mlflow.set_tracking_uri(stack.tracking_uri)
    yield
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _sql(stack: LocalStack, statements: str) -> None:
    local_mariadb.sql(local_mariadb.MariaDBPaths(stack.workdir / "mariadb"), statements)


def _count(stack: LocalStack, query: str, *args) -> int:
    with pymysql.connect(**stack.database_settings()) as conn, conn.cursor() as cursor:
        cursor.execute(query, args)
        return cursor.fetchone()[0]


def _drop_databases(stack: LocalStack, *, recreate: bool = True) -> None:
    c = stack.config
    _sql(stack, f"DROP DATABASE `{c.database}`; DROP DATABASE `{c.auth_database}`;")
    if recreate:
        _sql(stack, f"CREATE DATABASE `{c.database}`; CREATE DATABASE `{c.auth_database}`;")


def _schemas(stack: LocalStack) -> set[str]:
    with pymysql.connect(**{**stack.database_settings(), "database": None}) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT schema_name FROM information_schema.schemata")
        return {row[0] for row in cursor.fetchall()}


@contextlib.contextmanager
def _restore_connection_killed(stack: LocalStack) -> Iterator[None]:
    """The restore's database connection dies while it prepares its staging database: a leftover staging
    database (as an interrupted restore leaves) is held locked, so dropping it waits; then that waiting
    connection is killed, as a crashed database server or a killed Job would end it."""
    staging = f"{stack.config.database}_restore"
    holder = pymysql.connect(**{**stack.database_settings(), "database": None}, autocommit=True)
    try:
        with holder.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{staging}`")
            cursor.execute(f"CREATE TABLE IF NOT EXISTS `{staging}`.held (id INT)")
            cursor.execute(f"LOCK TABLES `{staging}`.held WRITE")

        def kill_the_waiting_restore() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with holder.cursor() as cursor:
                    cursor.execute(
                        "SELECT id FROM information_schema.processlist WHERE info LIKE %s",
                        (f"DROP DATABASE IF EXISTS `{staging}`%",),
                    )
                    waiting = [row[0] for row in cursor.fetchall()]
                    if waiting:
                        for thread_id in waiting:
                            cursor.execute(f"KILL {int(thread_id)}")
                        return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_the_waiting_restore)
        killer.start()
        yield
        killer.join()
    finally:
        holder.close()


def test_the_bad_day_drill_brings_everything_back_even_after_a_failed_restore(stack, admin, tmp_path):
    """Log runs, a model, users. Back up. Drop both databases under the running server. A restore that fails
    half-way changes nothing and says what to do next; `restore latest` then brings everything back. Then
    one table dropped: restore brings it back too."""
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient
    from sklearn.linear_model import LogisticRegression

    client = MlflowClient(stack.tracking_uri)
    experiment_id = client.create_experiment(f"history-{uuid.uuid4().hex[:6]}")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({"C": "0.5", "odd": "x'y\\z\n,(),("})
        for step in range(50):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1]))
        mlflow.sklearn.log_model(model, name="model", registered_model_name="restored-model")
        # A trace too (in the run's experiment): MLflow's spans table has a generated column, whose value
        # a restore must not insert.
        with mlflow.start_span("retrieve") as span:
            span.set_inputs({"query": "restore"})
    mlflow.flush_trace_async_logging()
    auth = stack.admin_credentials()
    with httpx.Client(base_url=stack.tracking_uri, auth=auth, timeout=30) as http:
        assert (
            http.post(
                "/api/2.0/mlflow/users/create", json={"username": "bob", "password": "Bob-pass-123"}
            ).status_code
            == 200
        )
        grant = {"username": "bob", "resource_type": "experiment", "resource_id": experiment_id}
        granted = http.post("/api/3.0/mlflow/users/permissions/grant", json={**grant, "permission": "EDIT"})
        assert granted.status_code == 200, granted.text
    runs_logged = _count(stack, "SELECT COUNT(*) FROM runs")

    taken = stack.backup()
    assert taken["name"].endswith("-manual.sql.gz") and int(taken["runs"]) == runs_logged

    # The disaster: both databases dropped while the server runs.
    _drop_databases(stack, recreate=False)
    assert {stack.config.database, stack.config.auth_database}.isdisjoint(_schemas(stack))

    # A first attempt fails half-way: nothing changes, it says so, and names the way out.
    with _restore_connection_killed(stack), pytest.raises(StackError) as failed:
        stack.restore("latest")
    message = str(failed.value)
    assert "the databases are as they were before" in message, message
    assert f"the database '{stack.config.database}' does not exist" in message, message
    assert "python -m local restore" in message, message
    assert {stack.config.database, stack.config.auth_database}.isdisjoint(_schemas(stack))
    # The databases held nothing: no empty "pre-restore" copy was written, and `latest` is still the team's.
    assert [b["name"] for b in stack.backups()][-1] == taken["name"]

    restored = stack.restore("latest")
    assert restored["restored"] == taken["name"] and restored["safety_backup"] is None
    assert restored["runs"] == runs_logged
    assert set(restored["created"]) == {stack.config.database, stack.config.auth_database}
    assert not {f"{stack.config.database}_restore", f"{stack.config.database}_replaced"} & _schemas(stack)
    _assert_everything_back(stack, client, run.info.run_id, experiment_id, auth)

    # One table lost: restore brings it back, keeping a copy of what it replaced. `latest` is now the backup
    # of the data the first restore put in place.
    _sql(stack, f"DROP TABLE `{stack.config.database}`.`metrics`")
    first = restored
    restored = stack.restore("latest")
    assert restored["restored"] == first["post_restore_backup"]
    assert restored["safety_backup"].endswith("-pre-restore.sql.gz")
    kinds = {b["name"]: b["kind"] for b in stack.backups()}
    assert kinds[restored["safety_backup"]] == "pre-restore" and kinds[taken["name"]] == "manual"
    # The restored data is backed up before the server serves it (where a restore to a later time starts).
    assert kinds[restored["post_restore_backup"]] == "post-restore"
    _assert_everything_back(stack, client, run.info.run_id, experiment_id, auth)


def _assert_everything_back(stack: LocalStack, client, run_id: str, experiment_id: str, auth) -> None:
    import mlflow
    import numpy as np

    run_back = client.get_run(run_id)
    assert run_back.data.params == {"C": "0.5", "odd": "x'y\\z\n,(),("}
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0 / (s + 1) for s in range(50)]
    loaded = mlflow.pyfunc.load_model("models:/restored-model/1")
    assert list(loaded.predict(np.array([[0.0], [3.0]]))) == [0, 1]
    assert client.get_experiment("0").name == "Default"  # id 0 kept (no auto-increment renumbering)
    spans = [span for trace in client.search_traces(locations=[experiment_id]) for span in trace.data.spans]
    assert [(span.name, span.inputs) for span in spans if span.name == "retrieve"] == [
        ("retrieve", {"query": "restore"})
    ]
    # MLflow's guard on its secrets table (a trigger) is part of the backup and comes back with it.
    triggers = (
        "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = %s AND trigger_name = %s"
    )
    assert _count(stack, triggers, stack.config.database, "prevent_secrets_aad_mutation") == 1
    with httpx.Client(base_url=stack.tracking_uri, timeout=30) as http:
        assert (
            http.get(
                "/api/2.0/mlflow/experiments/search?max_results=1", auth=("bob", "Bob-pass-123")
            ).status_code
            == 200
        )
        permission = http.get(
            "/api/3.0/mlflow/users/permissions/get",
            params={"username": "bob", "resource_type": "experiment", "resource_id": experiment_id},
            auth=auth,
        )
        assert permission.json()["permission"] == "EDIT"


def test_an_empty_backup_replaces_runs_only_when_forced(stack, admin):
    """After a loss, a server started on new empty databases and the schedule backed them up: `latest` is
    that empty backup. Restoring it is refused, naming the older backup that holds the runs; replacing
    databases that hold runs with an empty backup needs --force."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.tracking_uri)
    client.create_run(client.create_experiment(f"kept-{uuid.uuid4().hex[:6]}"))
    team = stack.backup()
    stack.stop_server()
    _drop_databases(stack)
    stack.start_server()  # a fresh schema: no runs
    empty = stack.backup("scheduled")
    assert empty["runs"] == "0"
    with pytest.raises(StackError, match=f"holds no runs, but {re.escape(team['name'])} holds"):
        stack.restore("latest")
    assert stack.restore(team["name"])["runs"] == int(team["runs"])
    with pytest.raises(StackError, match="holds no runs, and the tracking database holds"):
        stack.restore(empty["name"])
    assert _count(stack, "SELECT COUNT(*) FROM runs") == int(team["runs"])
    assert stack.restore(empty["name"], force=True)["runs"] == 0
    assert _count(stack, "SELECT COUNT(*) FROM runs") == 0


def test_a_backup_taken_while_clients_log_restores_to_a_consistent_state(stack, admin):
    """One snapshot: each log_batch (100 metrics, one transaction) is in the backup whole or not at all."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.tracking_uri)
    experiment_id = client.create_experiment(f"busy-{uuid.uuid4().hex[:6]}")
    runs = [client.create_run(experiment_id).info.run_id for _ in range(3)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def log(run_id: str) -> None:
        try:
            batch = 0
            while not stop.is_set():
                client.log_batch(run_id, metrics=[Metric(f"m{i:03d}", batch, 0, batch) for i in range(100)])
                batch += 1
        except BaseException as error:
            errors.append(error)

    writers = [threading.Thread(target=log, args=(r,)) for r in runs]
    for writer in writers:
        writer.start()
    time.sleep(2)
    taken = stack.backup()
    time.sleep(1)
    stop.set()
    for writer in writers:
        writer.join()
    assert not errors
    stack.restore(taken["name"])
    for run_id in runs:
        per_key = {}
        with pymysql.connect(**stack.database_settings()) as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT `key`, COUNT(*) FROM metrics WHERE run_uuid = %s GROUP BY `key`", (run_id,)
            )
            per_key = dict(cursor.fetchall())
        assert len(per_key) == 100, "every metric key of the batches is there"
        assert len(set(per_key.values())) == 1, (
            f"a half-written batch in run {run_id}: {set(per_key.values())}"
        )


def test_a_truncated_or_corrupt_backup_is_refused_before_the_database_is_touched(stack, admin):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.tracking_uri)
    marker = client.create_experiment(f"still-here-{uuid.uuid4().hex[:6]}")
    taken = stack.backup()
    container = BlobServiceClient.from_connection_string(stack.azure_connection_string).get_container_client(
        stack.config.backups_container
    )
    blob = container.get_blob_client(f"databases/{taken['name']}")
    original = blob.download_blob().readall()
    # What was recorded when it was taken: the metadata of the marker blob beside it.
    record = container.get_blob_client(f"databases/{taken['name']}.complete")
    metadata = record.get_blob_properties().metadata
    assert metadata["sha256"] == hashlib.sha256(original).hexdigest()
    experiments_before = _count(stack, "SELECT COUNT(*) FROM experiments")
    for damaged, why in (
        (original[: len(original) // 2], "truncated"),
        (original[:100] + bytes([original[100] ^ 0xFF]) + original[101:], "corrupt"),
    ):
        blob.upload_blob(damaged, overwrite=True)
        with pytest.raises(StackError, match=why):
            stack.restore(taken["name"])
        assert _count(stack, "SELECT COUNT(*) FROM experiments") == experiments_before
        assert client.get_experiment(marker).name.startswith("still-here-")
    # A backup whose gzip is whole but whose end marker is missing (cut at a line) is refused too.
    text = gzip.decompress(original).decode()
    cut = gzip.compress(text[: text.rindex("-- end ")].encode())
    recorded = {**metadata, "sha256": hashlib.sha256(cut).hexdigest(), "bytes": str(len(cut))}
    blob.upload_blob(cut, overwrite=True)
    record.set_blob_metadata(recorded)
    with pytest.raises(StackError, match="no end marker"):
        stack.restore(taken["name"])
    assert client.get_experiment(marker).name.startswith("still-here-")


def test_gc_deletes_a_deleted_runs_artifacts_and_keeps_everyone_elses(stack, admin, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.tracking_uri)
    experiment_id = client.create_experiment(f"gc-{uuid.uuid4().hex[:6]}")
    deleted, kept = (client.create_run(experiment_id).info.run_id for _ in range(2))
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(os.urandom(4096))
    for run_id in (deleted, kept):
        client.log_artifact(run_id, str(artifact))
    client.delete_run(deleted)
    container = BlobServiceClient.from_connection_string(stack.azure_connection_string).get_container_client(
        stack.config.container
    )

    def blobs_of(run_id: str) -> list[str]:
        return [
            b.name
            for b in container.list_blobs(name_starts_with=f"{stack.config.artifacts_path}/")
            if f"/{run_id}/" in b.name
        ]

    assert blobs_of(deleted) and blobs_of(kept)
    output = stack.collect_garbage()  # the chart's gc CronJob, with gc.olderThan 0s here
    assert f"Run with ID {deleted} has been permanently deleted" in output
    assert blobs_of(deleted) == []
    assert blobs_of(kept)
    assert _count(stack, "SELECT COUNT(*) FROM runs WHERE run_uuid = %s", deleted) == 0
    assert client.get_run(kept).info.lifecycle_stage == "active"


LEGACY_SCRIPT = """
import sys
from mlflow.entities import Metric, Param
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
import mlflow
store = SqlAlchemyStore(sys.argv[1], "mlflow-artifacts:/")
experiment = store.create_experiment("legacy")
for index in range(5):
    run = store.create_run(experiment, "old-user", 1700000000000 + index, [], f"legacy-{index}")
    store.log_batch(run.info.run_id, [Metric("acc", index / 10, 1700000000000, step) for step in range(3)],
                    [Param("index", str(index))], [])
print(mlflow.__version__)
"""


def test_an_mlflow_2_database_upgrade_is_refused_without_a_backup_rolled_back_when_it_fails_then_completes(
    helm_bin, workdir
):
    """The upgrade of a database made by MLflow 2.0.0 (its oldest 2.x release), served by the old version,
    on its bad days and its good one:

    1. the backup before the migration fails (its container is gone): the migration is refused, the
       server does not start, the schema is untouched;
    2. the backup is taken (the pre-migration Job) and the schema migrated, then the new server fails (a
       failure injected after the migration). As Helm's atomic rollback does, the old version's
       pre-rollback hook runs with the old image (MLflow 2.0.0 with this repository's /app scripts): it
       restores the pre-migration backup, and the old server serves every run again on its own schema;
    3. the upgrade again, without the failure: backed up, then migrated, every run, param and metric there.
    """
    assert MLFLOW2_PYTHON.exists(), "scripts/bootstrap installs MLflow 2.0.0 into .venv-mlflow2"
    legacy = _new_stack(helm_bin, workdir / "upgrade")
    old_server = None
    try:
        legacy.start()
        legacy.stop_server()
        _drop_databases(legacy)
        db = legacy.database_settings()
        uri = f"mysql+pymysql://{db['user']}:{db['password']}@{db['host']}:{db['port']}/{db['database']}"
        made = subprocess.run(
            [str(MLFLOW2_PYTHON), "-c", LEGACY_SCRIPT, uri], capture_output=True, text=True, check=False
        )
        assert made.returncode == 0, made.stderr[-3000:]
        assert made.stdout.strip().splitlines()[-1] == "2.0.0"
        old_revision = _one(legacy, "SELECT version_num FROM alembic_version")

        # 1. No backup, no migration.
        blobs = BlobServiceClient.from_connection_string(legacy.azure_connection_string)
        blobs.delete_container(legacy.config.backups_container)
        with pytest.raises(StackError, match="refusing to migrate: the backup before it failed"):
            legacy.start_server(timeout=120)
        assert _one(legacy, "SELECT COUNT(*) FROM runs") == 5
        assert _one(legacy, "SELECT version_num FROM alembic_version") == old_revision, "not migrated"
        blobs.create_container(legacy.config.backups_container)

        # 2. Migrated after the backup, then the new server fails (an argument it refuses): rolled back.
        spec = legacy.server_spec()
        broken = dataclasses.replace(
            spec, main=dataclasses.replace(spec.main, argv=[*spec.main.argv, "--no-such"])
        )
        with pytest.raises(StackError):
            legacy.start_server(broken, timeout=60)
        assert _one(legacy, "SELECT version_num FROM alembic_version") != old_revision, "it did migrate"
        [pre_migration] = legacy.backups()
        assert pre_migration["kind"] == "pre-migration"
        assert json.loads(pre_migration["metadata"]["schema"])["tracking"] == old_revision
        guard = legacy._task("rollback-guard")
        old_image = {**guard.env, "PATH": f"{MLFLOW2_PYTHON.parent}:{guard.env['PATH']}"}
        rollback = [str(MLFLOW2_PYTHON), *guard.argv[1:]]
        done = subprocess.run(
            rollback, env=old_image, cwd=guard.cwd, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"restoring {pre_migration['name']}" in done.stderr
        assert _one(legacy, "SELECT version_num FROM alembic_version") == old_revision
        # What the failed version wrote is kept; the restored data is backed up before the old server serves.
        assert [b["kind"] for b in legacy.backups()] == ["pre-migration", "pre-restore", "post-restore"]
        again = subprocess.run(
            rollback, env=old_image, cwd=guard.cwd, capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0 and "nothing to restore" in again.stderr  # a rerun changes nothing
        old_server, port = _old_mlflow_server(uri, workdir / "old-artifacts")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            experiment = http.get(
                "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "legacy"}
            ).json()["experiment"]
            runs = http.post(
                "/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment["experiment_id"]]}
            ).json()["runs"]
        assert sorted(r["data"]["params"][0]["value"] for r in runs) == [str(i) for i in range(5)]
        assert all(len(r["data"]["metrics"]) == 1 for r in runs)
        os.killpg(old_server.pid, signal.SIGTERM)
        old_server.wait(timeout=30)

        # 3. The upgrade again: backed up first, then migrated; every run there.
        legacy.start_server()
        log = (legacy.workdir / "server" / "server.log").read_text()
        log = log[log.rindex("--- init container migrate") :]  # this start's, not the earlier ones'
        backup = legacy.backups()[-1]
        assert backup["kind"] == "pre-migration" and backup["name"] != pre_migration["name"]
        assert log.index("backup " + backup["name"]) < log.index("migrating the tracking database")
        assert "backing up before migrating (tracking database: " + old_revision in log  # the Job's log
        from mlflow.tracking import MlflowClient

        os.environ.update(legacy.client_env())
        client = MlflowClient(legacy.tracking_uri)
        [experiment] = [e for e in client.search_experiments() if e.name == "legacy"]
        runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
        assert [r.data.params for r in runs] == [{"index": str(i)} for i in range(5)]
        for index, run in enumerate(runs):
            history = client.get_metric_history(run.info.run_id, "acc")
            assert [(m.step, m.value) for m in history] == [(s, index / 10) for s in range(3)]
    finally:
        if old_server is not None and old_server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(old_server.pid, signal.SIGKILL)
            old_server.wait()
        legacy.stop()


def _old_mlflow_server(uri: str, artifacts: Path) -> tuple[subprocess.Popen, int]:
    """The old version's server (MLflow 2.0.0 had no basic auth) on `uri`, once it answers /health."""
    [port] = free_ports(1)
    server = subprocess.Popen(
        [str(MLFLOW2_PYTHON.parent / "mlflow"), "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--default-artifact-root", str(artifacts)],
        env={**os.environ, "PATH": f"{MLFLOW2_PYTHON.parent}:{os.environ['PATH']}"},  # its gunicorn
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server, port
        assert time.monotonic() < deadline and server.poll() is None, "the old server did not start"
        time.sleep(0.5)


def _one(stack: LocalStack, query: str):
    with pymysql.connect(**stack.database_settings()) as conn, conn.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchone()[0]


def test_a_restore_to_a_time_brings_back_every_metric_before_it_and_nothing_after(stack, admin):
    """Point-in-time recovery: a backup, then metrics logged without pause while the binary logs are shipped
    every `interval` (the chart's binlog CronJob, time compressed). A time T is noted in the middle. After
    the databases are dropped, `restore --to T` brings back every metric acknowledged before T (the logs
    were shipped after T; at most the last interval before the disaster is ever lost), and none sent after."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.tracking_uri)
    run_id = client.create_run(client.create_experiment(f"pitr-{uuid.uuid4().hex[:6]}")).info.run_id
    base = stack.backup()
    assert base["binlog_file"] and base["snapshot_at"]
    interval = 1.5
    logged: list[tuple[int, float, float]] = []  # (step, sent, acknowledged)
    stop = threading.Event()

    def log() -> None:
        step = 0
        while not stop.is_set():
            sent = time.time()
            client.log_metric(run_id, "loss", float(step), step=step)
            logged.append((step, sent, time.time()))
            step += 1

    writer = threading.Thread(target=log)
    writer.start()
    try:
        shipped = []
        deadline = time.monotonic() + 4 * interval
        while time.monotonic() < deadline:
            time.sleep(interval)
            shipped.append(stack.ship_binlogs())
        # T on a whole second (binary log times have one-second resolution).
        target = float(int(time.time()) + 1)
        while time.time() < target + 3 * interval:
            time.sleep(interval)
            shipped.append(stack.ship_binlogs())
    finally:
        stop.set()
        writer.join()
    shipped.append(stack.ship_binlogs())
    assert sum(len(s["shipped"]) for s in shipped) >= 5, shipped
    before = [step for step, _, acknowledged in logged if acknowledged < target]
    after = [step for step, sent, _ in logged if sent >= target]
    assert len(before) > 20 and len(after) > 20, "metrics were logged on both sides of T"

    _drop_databases(stack, recreate=False)
    to = datetime.datetime.fromtimestamp(target, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    restored = stack.restore(to=to)
    assert restored["restored"] == base["name"]
    assert restored["point_in_time"]["to"].startswith(to.rstrip("Z"))
    steps = {int(m.step) for m in client.get_metric_history(run_id, "loss")}
    assert set(before) <= steps, f"acknowledged before T but missing: {sorted(set(before) - steps)[:10]}"
    assert not set(after) & steps, f"sent after T but restored: {sorted(set(after) & steps)[:10]}"
    # The restore is a new starting point: a restore to a time after it starts from its marker (the data it
    # restored, then the logs after it), never replaying through it.
    markers = [m for entry in stack.binlogs().values() for m in entry["restores"]]
    assert max(markers, key=lambda m: m["restored_at"])["restored"] == base["name"]
    for step in range(10_000, 10_005):
        client.log_metric(run_id, "loss", float(step), step=step)
    time.sleep(1.1)
    later = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(1.1)
    client.log_metric(run_id, "loss", 99_999.0, step=99_999)  # after `later`
    stack.ship_binlogs()
    again = stack.restore(to=later)
    assert again["point_in_time"]["from"] > restored["point_in_time"]["to"]  # the marker, not the backup
    steps = {int(m.step) for m in client.get_metric_history(run_id, "loss")}
    assert set(before) | set(range(10_000, 10_005)) <= steps and 99_999 not in steps
    assert not set(after) & steps
