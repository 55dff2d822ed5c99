"""Entry point of the job-runner container: `python /app/jobs.py` (the chart's `jobs` Deployment).

MLflow's server-side jobs (LLM judges started from the UI, online trace and session scoring, prompt
optimization, issue detection, UI-started GenAI evaluation) run here, in one pod of their own, never in
the serving pods. Why (read against MLflow 3.17's mlflow/server/jobs):

- `mlflow server` with MLFLOW_SERVER_ENABLE_JOB_EXECUTION starts a job runner beside *every* server.
  Its default engine (Huey) queues each job in a SQLite file under a per-process temporary directory,
  so a job submitted to one pod could only run in that pod, and is lost with it; with N replicas the
  periodic tasks (the online-scoring scheduler, trace archival) would run N times a minute.
- The `executor` engine (MLFLOW_SERVER_JOB_EXECUTION_ENGINE=executor) keeps the queue in the tracking
  database (`jobs` table): a serving pod only inserts a PENDING row, and a runner claims it with a
  conditional update (claim_job), so no job is taken twice. But its recovery at start resets every
  RUNNING job created before the runner started (_recover_orphaned_executor_jobs; lease-based recovery
  of a live peer's jobs is "a follow-up" there), and the periodic tasks still run on a local Huey. So
  exactly one runner may live at a time. The Deployment has one replica and the Recreate strategy, but
  Kubernetes waits for the old pod only on an upgrade: a deleted or evicted pod (a node drain) is
  replaced at once, while the old one may still be terminating
  (https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#recreate-deployment). So the
  runner also takes a MySQL named lock (GET_LOCK) on a connection of its own before it starts, and only
  then takes its start time: a second runner waits until the first one's connection is gone, which MySQL
  sees when its process ends (https://dev.mysql.com/doc/refman/8.4/en/locking-functions.html). A runner
  that loses the lock (its connection broke) exits at once; SIGTERM ends it at once too (as PID 1 it
  would otherwise ignore it until the kill after the grace period), and MLflow's job processes end
  within a second of their runner (utils._exit_when_orphaned).

Together: a job is a database row from the moment it is submitted (not lost when any pod dies); one
runner claims it (never run twice at once); a runner that dies leaves it RUNNING, and the next runner
puts it back to PENDING and runs it again, or its terminal state stays (never stuck); periodic tasks run
in this one pod (once per cluster). The serving pods keep their process layout (serve.py change 12).

The probes (`python /app/jobs.py --probe <seconds>`) ask whether the runner's scheduler loop has
ticked (it does once a second, whether or not there is work) within that many seconds: a wedged loop
gets the pod restarted, which is the recovery above.

This file only prepares what `mlflow server` would have given its runner (the backend store, the
start time that bounds recovery, the periodic tasks' Huey directory, the gateway's address and the
internal token it accepts from jobs) and then runs MLflow's own executor runner in this process.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Mapping

EXECUTOR_ENGINE = "executor"
# Touched after every tick of MLflow's scheduler loop; on the pod's scratch volume.
HEARTBEAT_FILE = "mlflow-aks-jobs-heartbeat"
# The lock only one runner holds (see above), and how often its holder checks it still does.
LEADER_LOCK = "mlflow_aks_job_runner"
LOCK_CHECK_SECONDS = 5.0
LOCK_WAIT_SECONDS = 10
# What each job's process runs (job_entry.py): serve.py's change 16, then MLflow's own job entry.
JOB_ENTRY_MODULE = "job_entry"


def take_leader_lock(uri: str):
    """A connection holding LEADER_LOCK, waited for as long as another runner holds it (None when the
    database has no named locks: SQLite, one host only)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    conn = engine.connect()
    if engine.dialect.name != "mysql":  # MariaDB reports "mysql" too
        conn.close()
        return None
    query = sqlalchemy.text("SELECT GET_LOCK(:name, :timeout)")
    while conn.execute(query, {"name": LEADER_LOCK, "timeout": LOCK_WAIT_SECONDS}).scalar() != 1:
        print(f"jobs.py: waiting for the {LEADER_LOCK} lock (another job runner holds it)", file=sys.stderr)
    print(f"jobs.py: holding the {LEADER_LOCK} lock", file=sys.stderr)
    return conn


def still_holds_leader_lock(conn) -> bool:
    import sqlalchemy

    try:
        query = sqlalchemy.text("SELECT IS_USED_LOCK(:name) = CONNECTION_ID()")
        return conn.execute(query, {"name": LEADER_LOCK}).scalar() == 1
    except sqlalchemy.exc.SQLAlchemyError:
        return False


_HEAD_REVISION: str | None = None


def schema_is_current(uri: str) -> tuple[bool, str]:
    """Whether the tracking database has MLflow's latest schema, and what was found. The tracking pods'
    init container (migrate.py) migrates it; the runner must neither create the tables of an empty database
    (MLflow's store would, racing that migration) nor work on an older schema."""
    import sqlalchemy
    from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version

    global _HEAD_REVISION
    _HEAD_REVISION = _HEAD_REVISION or _get_latest_schema_revision()  # parses MLflow's migration scripts
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        found, head = _get_schema_version(engine), _HEAD_REVISION
    except sqlalchemy.exc.SQLAlchemyError as error:
        return False, f"database not reachable ({type(error).__name__})"
    finally:
        engine.dispose()
    return found == head, f"schema {found}, MLflow's {head}"


def wait_for_schema(uri: str, interval: float = 3.0) -> None:
    while True:
        current, state = schema_is_current(uri)
        if current:
            return
        print(f"jobs.py: waiting for the tracking server's schema migration ({state})", file=sys.stderr)
        time.sleep(interval)


def reason_to_stop(conn, uri: str) -> str | None:
    """Why this runner must exit now, or None: the lock is lost (another runner may take it and recover
    this one's jobs), or the tracking database's schema is no longer MLflow's latest (a restore or a
    migration under way: MLflow's stores would create or upgrade tables behind migrate.py's back). The
    next start waits for both."""
    if not still_holds_leader_lock(conn):
        return f"lost the {LEADER_LOCK} lock"
    current, state = schema_is_current(uri)
    return None if current else f"the tracking database changed ({state})"


def watch_leader_lock(conn, uri: str, interval: float = LOCK_CHECK_SECONDS) -> None:
    import threading

    def watch() -> None:
        while (reason := reason_to_stop(conn, uri)) is None:
            time.sleep(interval)
        print(f"jobs.py: {reason}; exiting", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=watch, name="leader-lock-watch", daemon=True).start()


def exit_on_sigterm() -> None:
    import signal

    def stop(signum, frame):
        print("jobs.py: stopping (SIGTERM)", file=sys.stderr, flush=True)
        os._exit(143)

    signal.signal(signal.SIGTERM, stop)


def heartbeat_path() -> str:
    return os.path.join(tempfile.gettempdir(), HEARTBEAT_FILE)


def probe(max_age_seconds: float, *, now: float | None = None) -> int:
    """0 when the scheduler loop ticked within `max_age_seconds`, else 1 (the exec probe's status)."""
    try:
        age = (time.time() if now is None else now) - os.stat(heartbeat_path()).st_mtime
    except FileNotFoundError:
        print("jobs.py: the job runner has not ticked yet", file=sys.stderr)
        return 1
    if age > max_age_seconds:
        print(f"jobs.py: the job runner last ticked {age:.0f}s ago", file=sys.stderr)
        return 1
    return 0


def beat_on_every_tick(scheduler_class: type) -> None:
    """Touch the heartbeat after each tick of MLflow's `_JobScheduler` that returns (a raising tick,
    which MLflow logs and retries, does not count)."""
    original = scheduler_class.tick
    path = heartbeat_path()

    def tick(self):
        scheduled = original(self)
        with open(path, "a"):
            os.utime(path)
        return scheduled

    scheduler_class.tick = tick


# Required from the chart: the database (a secret), where judges reach the AI Gateway (the tracking
# Service), and the engine. The internal gateway token is required too unless sign-in is oidc.
REQUIRED_ENV = ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_GATEWAY_URI", "MLFLOW_SERVER_JOB_EXECUTION_ENGINE")


def runner_env(environ: Mapping[str, str], *, now_ms: int, pid: int, huey_dir: str) -> dict[str, str]:
    """The environment MLflow's runner reads, as `mlflow server` would set it (mlflow/server/__init__.py,
    _run_server, and jobs/utils.py, _launch_job_runner); raises ValueError when the chart's is incomplete."""
    from mlflow.server.constants import (
        BACKEND_STORE_URI_ENV_VAR,
        HUEY_STORAGE_PATH_ENV_VAR,
        MLFLOW_SERVER_UP_TIME,
    )

    missing = [name for name in REQUIRED_ENV if not environ.get(name)]
    if missing:
        raise ValueError(f"jobs.py: {', '.join(missing)} not set")
    engine = environ["MLFLOW_SERVER_JOB_EXECUTION_ENGINE"].strip().lower()
    if engine != EXECUTOR_ENGINE:
        # Huey's queue is a file in one pod: jobs submitted to the serving pods would never arrive here.
        raise ValueError(
            f"jobs.py: MLFLOW_SERVER_JOB_EXECUTION_ENGINE is {engine!r}; only {EXECUTOR_ENGINE!r} keeps the "
            "queue in the database that every pod shares"
        )
    backend = environ["MLFLOW_BACKEND_STORE_URI"]
    return {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true",
        BACKEND_STORE_URI_ENV_VAR: backend,
        # The periodic tasks build their store from this one (utils.initialize_periodic_tasks_tracking_store).
        "MLFLOW_BACKEND_STORE_URI": backend,
        # Jobs created before this instant and left RUNNING by a previous runner are put back to PENDING.
        MLFLOW_SERVER_UP_TIME: str(now_ms),
        # The runner stops when this PID dies (`mlflow server`'s); here it is the runner itself.
        "MLFLOW_SERVER_PID": str(pid),
        # The periodic tasks' Huey queue and locks: local to this one pod, on its scratch volume.
        HUEY_STORAGE_PATH_ENV_VAR: huey_dir,
        # As `mlflow server` sets it for its runner; jobs themselves get the database (executor context).
        "MLFLOW_TRACKING_URI": environ["MLFLOW_GATEWAY_URI"],
    }


def run_jobs_through_entry(job_utils, environ: dict[str, str]) -> None:
    """Each job's process starts as `python -m job_entry` (beside this file), which installs serve.py's
    change 16 before MLflow's own entry: MLflow reads `_JOB_ENTRY_MODULE` when it launches a job."""
    here = os.path.dirname(os.path.abspath(__file__))
    job_utils._JOB_ENTRY_MODULE = JOB_ENTRY_MODULE
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, environ.get("PYTHONPATH", "")) if p)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--probe"]:
        return probe(float(argv[1]))
    from importlib.metadata import version

    from serve import mlflow_version_problem

    if problem := mlflow_version_problem(version("mlflow")):
        print(problem, file=sys.stderr)
        return 2
    exit_on_sigterm()
    huey_dir = tempfile.mkdtemp(prefix="mlflow-huey-")
    try:
        runner_env(os.environ, now_ms=0, pid=os.getpid(), huey_dir=huey_dir)  # complete before waiting
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    wait_for_schema(os.environ["MLFLOW_BACKEND_STORE_URI"])
    lock = take_leader_lock(os.environ["MLFLOW_BACKEND_STORE_URI"])
    if lock is not None:
        watch_leader_lock(lock, os.environ["MLFLOW_BACKEND_STORE_URI"])
    # The start time after the lock: every job created before it and still RUNNING is a previous runner's.
    env = runner_env(os.environ, now_ms=int(time.time() * 1000), pid=os.getpid(), huey_dir=huey_dir)
    os.environ.update(env)

    import mlflow.server.jobs.utils as job_utils
    from mlflow.server.jobs.executor_registry import validate_executor_config
    from mlflow.server.jobs.utils import _check_requirements

    run_jobs_through_entry(job_utils, os.environ)

    _check_requirements(env["MLFLOW_BACKEND_STORE_URI"])
    validate_executor_config()
    from mlflow.server.jobs import _executor_runner

    beat_on_every_tick(_executor_runner._JobScheduler)
    # Returns on a fatal error after signalling this process (SIGTERM); the periodic-tasks consumer's
    # thread is not a daemon, so a healthy runner never gets here.
    _executor_runner.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
