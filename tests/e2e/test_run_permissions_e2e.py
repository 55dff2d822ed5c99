"""Authorisation of run writes on the live server, as the chart configures it.

serve.py remembers which experiment each run belongs to, so that MLflow's basic-auth check of a run
write does not load the whole run on every request. These tests prove the cache changes nothing a
user can do: a non-admin user's writes to a run are allowed or denied by its *current* permission on
the run's experiment, on the first request and on every repeated one, across grants and revocations.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

LOG_METRIC = "/api/2.0/mlflow/runs/log-metric"
GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"
REPEAT = 4  # more than once: the first request fills the cache, the others are answered from it


@pytest.fixture(scope="module")
def http(stack):
    with httpx.Client(base_url=stack.tracking_uri, timeout=30) as session:
        yield session


def _create_run(http: httpx.Client, auth: tuple[str, str], experiment: str) -> tuple[str, str]:
    created = http.post("/api/2.0/mlflow/experiments/create", json={"name": experiment}, auth=auth)
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    run = http.post(
        "/api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment_id, "start_time": int(time.time() * 1000)},
        auth=auth,
    )
    assert run.status_code == 200, run.text
    return experiment_id, run.json()["run"]["info"]["run_id"]


def _log_metric(http: httpx.Client, auth: tuple[str, str], run_id: str, step: int) -> int:
    response = http.post(
        LOG_METRIC,
        json={"run_id": run_id, "key": "m", "value": float(step), "timestamp": 0, "step": step},
        auth=auth,
    )
    return response.status_code


def _stored_steps(http: httpx.Client, auth: tuple[str, str], run_id: str) -> set[int]:
    history = http.get(
        "/api/2.0/mlflow/metrics/get-history", params={"run_id": run_id, "metric_key": "m"}, auth=auth
    )
    assert history.status_code == 200, history.text
    return {int(m["step"]) for m in history.json().get("metrics", [])}


def test_run_writes_follow_the_current_experiment_permission(http, stack) -> None:
    admin = stack.admin_credentials()
    runner = stack.run_credentials()
    experiment_id, run_id = _create_run(http, admin, f"perm-admin-{uuid.uuid4().hex[:8]}")

    # The run user may read the admin's experiment (default READ) but not write to its run.
    assert [_log_metric(http, runner, run_id, step) for step in range(REPEAT)] == [403] * REPEAT

    grant = {"username": runner[0], "resource_type": "experiment", "resource_id": experiment_id}
    granted = http.post(GRANT, json={**grant, "permission": "EDIT"}, auth=admin)
    assert granted.status_code == 200, granted.text
    assert [_log_metric(http, runner, run_id, step) for step in range(10, 10 + REPEAT)] == [200] * REPEAT

    revoked = http.post(REVOKE, json=grant, auth=admin)
    assert revoked.status_code == 200, revoked.text
    assert [_log_metric(http, runner, run_id, step) for step in range(20, 20 + REPEAT)] == [403] * REPEAT

    # Exactly the writes that were allowed are stored.
    assert _stored_steps(http, admin, run_id) == set(range(10, 10 + REPEAT))


def test_run_user_writes_its_own_runs_but_not_a_neighbours(http, stack) -> None:
    admin = stack.admin_credentials()
    runner = stack.run_credentials()
    _, own_run = _create_run(http, runner, f"perm-runner-{uuid.uuid4().hex[:8]}")
    _, admin_run = _create_run(http, admin, f"perm-admin-{uuid.uuid4().hex[:8]}")

    # Interleaved, so a cached answer for one run can never be served for the other.
    statuses = [
        (_log_metric(http, runner, own_run, step), _log_metric(http, runner, admin_run, step))
        for step in range(REPEAT)
    ]
    assert statuses == [(200, 403)] * REPEAT
    assert _stored_steps(http, runner, own_run) == set(range(REPEAT))
    assert _stored_steps(http, admin, admin_run) == set()


def test_unknown_run_is_refused_every_time(http, stack) -> None:
    runner = stack.run_credentials()
    missing = uuid.uuid4().hex
    statuses = {_log_metric(http, runner, missing, step) for step in range(REPEAT)}
    # MLflow answers a permission check on a run that does not exist with 404 (or 403): never 200.
    assert statuses and 200 not in statuses, statuses
