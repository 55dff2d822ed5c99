"""One real local stack for the e2e tests: MariaDB, Azurite and the tracking server as the chart renders it.

The stack runs in a fresh working directory on random free ports. It is package-scoped: stopped as
soon as the last e2e test is done (not at the end of the whole session), whatever happened; the
teardown then checks that none of its processes is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from local import LocalStack, StackConfig, free_ports
from local.procs import Proc

EXPERIMENT = "e2e-train"
# Non-default values, so that the params stored are visibly the ones passed with -P.
TRAIN_PARAMS = {"n_samples": 600, "n_features": 8, "seed": 7, "C": 0.5, "max_iter": 150}


@pytest.fixture(scope="package")
def stack(helm_bin: str) -> Iterator[LocalStack]:
    with own_stack(
        "mlflow-aks-e2e-",
        storage_account="e2eaccount",
        container="e2e-artifacts",
        artifacts_path="mlflow/artifacts",
        helm=helm_bin,
    ) as local_stack:
        yield local_stack


# StackConfig's ports: a stack of its own gets free ones (those of services it does not run stay unused).
PORT_SETTINGS = (
    "server_port", "mysql_port", "azurite_port", "https_port", "http_port", "acme_port",
    "acme_management_port", "oidc_port",
)  # fmt: skip


@contextlib.contextmanager
def own_stack(prefix: str, **config: Any) -> Iterator[LocalStack]:
    """A started stack of a test module's own (other settings than the package's `stack`), in a fresh
    directory, every port a free one unless `config` names it; stopped at the end, and nothing it started
    may be left behind."""
    for name, port in zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)), strict=True):
        config.setdefault(name, port)
    # Not pytest's tmp_path: MariaDB runs as user `mysql`, who cannot enter /tmp/pytest-of-root (0700).
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(workdir, 0o755)  # noqa: S103 (secrets inside are 0600)
    local_stack = LocalStack(StackConfig(workdir=workdir / "stack", **config))

    def procs() -> list[Proc]:
        return [p for n in local_stack.config.services if (p := local_stack._proc(n)) is not None]

    started: list[Proc] = []
    try:
        local_stack.start()
        started = procs()  # tests may stop and start services: these must be gone too
        yield local_stack
    finally:
        recorded = procs()
        local_stack.stop()
        leftovers = [p for p in {*started, *recorded} if p.group_pids()]
        shutil.rmtree(workdir, ignore_errors=True)
        assert not leftovers, f"processes left behind: {leftovers}"


@contextlib.contextmanager
def environ(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """This process's environment with `env` set, and as it was again afterwards (what was unset, unset)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="package")
def client_env(stack: LocalStack) -> Iterator[dict[str, str]]:
    """MLFLOW_TRACKING_* for this session's clients (MlflowClient reads credentials from the environment)."""
    with environ(stack.client_env()) as env:
        yield env


@pytest.fixture(scope="package")
def client(client_env: dict[str, str]):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=client_env["MLFLOW_TRACKING_URI"])


@pytest.fixture
def db(stack: LocalStack) -> Iterator[pymysql.connections.Connection]:
    conn = pymysql.connect(**stack.database_settings(), autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def query(conn: pymysql.connections.Connection, sql: str, *args: object) -> list[tuple]:
    with conn.cursor() as cursor:
        cursor.execute(sql, args)
        return list(cursor.fetchall())


@dataclass(frozen=True)
class ProjectRuns:
    train_run_id: str
    eval_explicit_run_id: str
    eval_latest_run_id: str


@pytest.fixture(scope="package")
def project_runs(stack: LocalStack, client_env: dict[str, str]) -> ProjectRuns:
    """`train`, then `evaluate` with the explicit run id and with the latest, as the run Job runs them."""
    started = time.monotonic()
    train = stack.run_project("train", EXPERIMENT, TRAIN_PARAMS, timeout=300)
    assert train.returncode == 0, train.output[-3000:]
    assert train.run_id, train.output[-3000:]
    # One after the other, as two Jobs would have to: `mlflow run` creates a missing experiment, and
    # two of them racing to create `<exp>_eval` make one fail (RESOURCE_ALREADY_EXISTS).
    explicit = stack.run_project(
        "evaluate", EXPERIMENT + "_eval", {"experiment_name": EXPERIMENT, "run_id": train.run_id}, timeout=300
    )
    latest = stack.run_project("evaluate", EXPERIMENT + "_eval", {"experiment_name": EXPERIMENT}, timeout=300)
    assert explicit.returncode == 0, explicit.output[-3000:]
    assert latest.returncode == 0, latest.output[-3000:]
    print(f"train + 2 evaluate runs: {time.monotonic() - started:.1f}s")
    return ProjectRuns(train.run_id, explicit.run_id, latest.run_id)
