"""Authorisation of run writes on the live server, as the chart configures it.

serve.py remembers which experiment each run belongs to, so that MLflow's basic-auth check of a run
write does not load the whole run on every request. These tests prove the cache changes nothing a
user can do: a non-admin user's writes to a run are allowed or denied by its *current* permission on
the run's experiment, on the first request and on every repeated one, across grants and revocations.

serve.py also answers a Flask request's own lookups of its user (is it an admin? its id) with the
user the request was authenticated as. The account tests prove that changing a user's admin flag or
password, or deleting the user, takes effect on this server at the next request, that looking up
another user reads that user, and that concurrent requests of different users never see each
other's identity.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

LOG_METRIC = "/api/2.0/mlflow/runs/log-metric"
GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"
USERS = "/api/2.0/mlflow/users"
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


def test_account_changes_take_effect_at_the_next_request(http, stack) -> None:
    admin = stack.admin_credentials()
    _, run_id = _create_run(http, admin, f"perm-account-{uuid.uuid4().hex[:8]}")
    user = (f"account-{uuid.uuid4().hex[:8]}", f"first-{uuid.uuid4().hex}")
    created = http.post(f"{USERS}/create", json={"username": user[0], "password": user[1]}, auth=admin)
    assert created.status_code == 200, created.text

    def set_admin(flag: bool) -> None:
        changed = http.patch(
            f"{USERS}/update-admin", json={"username": user[0], "is_admin": flag}, auth=admin
        )
        assert changed.status_code == 200, changed.text

    # Each phase repeats, so the credential cache holds the user before the change.
    assert [_log_metric(http, user, run_id, step) for step in range(REPEAT)] == [403] * REPEAT
    set_admin(True)
    assert [_log_metric(http, user, run_id, step) for step in range(10, 10 + REPEAT)] == [200] * REPEAT
    set_admin(False)
    assert [_log_metric(http, user, run_id, step) for step in range(20, 20 + REPEAT)] == [403] * REPEAT

    new_password = f"second-{uuid.uuid4().hex}"
    changed = http.patch(
        f"{USERS}/update-password", json={"username": user[0], "password": new_password}, auth=admin
    )
    assert changed.status_code == 200, changed.text
    assert _log_metric(http, user, run_id, 30) == 401
    user = (user[0], new_password)
    assert [_log_metric(http, user, run_id, step) for step in range(31, 31 + REPEAT)] == [403] * REPEAT

    # Looking another user up (the admin reads this one) still reads that user, not the requester.
    looked_up = http.get(f"{USERS}/get", params={"username": user[0]}, auth=admin)
    assert looked_up.status_code == 200, looked_up.text
    assert looked_up.json()["user"]["username"] == user[0]
    assert looked_up.json()["user"]["is_admin"] is False

    deleted = http.request("DELETE", f"{USERS}/delete", json={"username": user[0]}, auth=admin)
    assert deleted.status_code == 200, deleted.text
    assert [_log_metric(http, user, run_id, step) for step in range(40, 40 + REPEAT)] == [401] * REPEAT
    # Only the writes made while the user was an admin are stored.
    assert _stored_steps(http, admin, run_id) == set(range(10, 10 + REPEAT))


def test_concurrent_users_never_share_an_identity(stack) -> None:
    """The admin and the run user write the same run at the same time, each on its own connection."""
    admin = stack.admin_credentials()
    runner = stack.run_credentials()
    with httpx.Client(base_url=stack.tracking_uri, timeout=30) as setup:
        _, run_id = _create_run(setup, admin, f"perm-concurrent-{uuid.uuid4().hex[:8]}")
    rounds = 40
    start = threading.Barrier(2)

    def writes(auth: tuple[str, str], first_step: int) -> list[int]:
        with httpx.Client(base_url=stack.tracking_uri, timeout=30) as own:
            start.wait()
            return [_log_metric(own, auth, run_id, first_step + i) for i in range(rounds)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        admin_statuses = pool.submit(writes, admin, 0)
        runner_statuses = pool.submit(writes, runner, 1000)
        assert admin_statuses.result() == [200] * rounds
        assert runner_statuses.result() == [403] * rounds
    with httpx.Client(base_url=stack.tracking_uri, timeout=30) as check:
        assert _stored_steps(check, admin, run_id) == set(range(rounds))


def test_run_project_into_an_experiment_it_may_not_write_says_why(stack, client, capsys) -> None:
    """`python -m local run-project` into the admin's experiment: the run user may read it, not write."""
    import local.__main__ as cli

    experiment = f"perm-cli-{uuid.uuid4().hex[:8]}"
    client.create_experiment(experiment)
    argv = ["--workdir", str(stack.workdir), "run-project", "--experiment", experiment, "-e", "train"]
    assert cli.main([*argv, "-P", "n_samples=200"]) == 1
    printed = capsys.readouterr()
    assert "Permission denied" in printed.out  # what MLflow's client printed of the server's 403
    user = stack.run_credentials()[0]
    assert f"the server refused to let {user!r}, the user runs log in as, write there" in printed.err
    assert f"give {user!r} EDIT on that experiment" in printed.err


def test_chart_history_follows_the_current_experiment_permission(http, stack) -> None:
    """The charts' sampled history of several runs (serve.py reads their experiments in one statement):
    allowed or denied by the user's current permission on every run's experiment; a run that does not
    exist gets MLflow's error."""
    admin, runner = stack.admin_credentials(), stack.run_credentials()
    experiment_id, admin_run = _create_run(http, admin, f"perm-chart-{uuid.uuid4().hex[:8]}")
    _, own_run = _create_run(http, runner, f"perm-chart-own-{uuid.uuid4().hex[:8]}")
    for run_id, auth in ((admin_run, admin), (own_run, runner)):
        assert {_log_metric(http, auth, run_id, step) for step in range(3)} == {200}

    def chart(run_ids: list[str]) -> tuple[int, dict]:
        answer = http.get(
            "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
            params={"run_ids": run_ids, "metric_key": "m", "max_results": 320},
            auth=runner,
        )
        is_json = answer.headers.get("content-type", "").startswith("application/json")
        return answer.status_code, answer.json() if is_json else {}

    status, body = chart([own_run, admin_run])
    assert status == 200 and {m["run_id"] for m in body["metrics"]} == {own_run, admin_run}
    grant = {"username": runner[0], "resource_type": "experiment", "resource_id": experiment_id}
    denied = http.post(GRANT, json={**grant, "permission": "DENY"}, auth=admin)
    assert denied.status_code == 200, denied.text
    assert [chart([own_run, admin_run])[0] for _ in range(REPEAT)] == [403] * REPEAT
    assert chart([own_run])[0] == 200
    revoked = http.post(REVOKE, json=grant, auth=admin)
    assert revoked.status_code == 200, revoked.text
    assert chart([admin_run, own_run])[0] == 200
    status, body = chart([own_run, uuid.uuid4().hex])
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST", body
