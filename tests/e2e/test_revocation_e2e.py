"""Revocations on one replica hold on every replica within 5 seconds: two server processes, one database.

A second tracking server, the chart's own command and environment on another port, shares the stack's
MariaDB, Azurite and basic-auth database, as two pods of the Deployment do. A user's login is cached on
the second server (MLflow's 60 s credential cache), then the first server removes their admin flag or
deletes them. The second server must refuse them within 5 s, as serve.py's user-change log makes it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from local import free_port
from local.procs import spawn, stop, wait_until

# Reading another user's record is for admins only (MLflow: a user may read only themselves).
ADMIN_ONLY = "/api/2.0/mlflow/users/get?username=admin"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
DEADLINE = 5.0


@pytest.fixture(scope="module")
def second_server(stack) -> Iterator[str]:
    spec = stack.server_spec().main
    port = free_port()
    argv = list(spec.argv)
    argv[argv.index("--port") + 1] = str(port)
    env = {**spec.env, "MLFLOW_AKS_METRICS_PORT": str(free_port())}
    proc = spawn(
        "second-server", argv, env=env, log=stack.workdir / "server" / "second-server.log", cwd=spec.cwd
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            "the second server",
            lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200,
            timeout=120,
            proc=proc,
        )
        yield url
    finally:
        stop(proc)


def _admin_user(http_first: httpx.Client) -> tuple[str, str]:
    name, password = f"carol-{uuid.uuid4().hex[:6]}", f"Carol-{uuid.uuid4().hex}"
    assert (
        http_first.post(
            "/api/2.0/mlflow/users/create", json={"username": name, "password": password}
        ).status_code
        == 200
    )
    assert (
        http_first.patch(
            "/api/2.0/mlflow/users/update-admin", json={"username": name, "is_admin": True}
        ).status_code
        == 200
    )
    return name, password


def _until(check, deadline: float = DEADLINE) -> float:
    """Seconds until `check()` holds; fails after twice the deadline (so a miss shows how far off)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > 2 * deadline:
            pytest.fail(f"still not effective after {2 * deadline:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.parametrize("change", ["admin flag removed", "user deleted"])
def test_a_revocation_on_one_server_holds_on_the_other_within_5_seconds(stack, second_server, change):
    with httpx.Client(base_url=stack.tracking_uri, auth=stack.admin_credentials(), timeout=30) as first, \
            httpx.Client(base_url=second_server, timeout=30) as second:  # fmt: skip
        user = _admin_user(first)
        # The second server verifies and caches the login, and grants the admin-only call.
        for _ in range(3):
            assert second.get(ADMIN_ONLY, auth=user).status_code == 200
        if change == "admin flag removed":
            answer = first.patch(
                "/api/2.0/mlflow/users/update-admin", json={"username": user[0], "is_admin": False}
            )
            effective = _until(lambda: second.get(ADMIN_ONLY, auth=user).status_code == 403)
            assert second.get(SEARCH, auth=user).status_code == 200, "still a user, no longer an admin"
        else:
            answer = first.request("DELETE", "/api/2.0/mlflow/users/delete", json={"username": user[0]})
            effective = _until(lambda: second.get(SEARCH, auth=user).status_code == 401)
        assert answer.status_code == 200, answer.text
        assert effective <= DEADLINE, f"{change}: effective on the other server after {effective:.1f}s"


def test_unchanged_users_stay_cached(stack, second_server):
    """Only the changed user is dropped: the others' logins are not re-verified (no extra hashing)."""
    with httpx.Client(base_url=stack.tracking_uri, auth=stack.admin_credentials(), timeout=30) as first, \
            httpx.Client(base_url=second_server, timeout=30) as second:  # fmt: skip
        bystander, changed = _admin_user(first), _admin_user(first)
        time.sleep(2.5)  # the second server has read the log of these users' creation (every second)
        for user in (bystander, changed):
            assert second.get(SEARCH, auth=user).status_code == 200
        # Change the bystander's password directly in the database, behind MLflow's back: only a cached
        # login still accepts the old one. Then change the other user through the API.
        import mlflow.server.auth.sqlalchemy_store as auth_store

        store = auth_store.SqlAlchemyStore()
        settings = stack.database_settings()
        credentials = f"{settings['user']}:{settings['password']}"
        store.init_db(
            f"mysql+pymysql://{credentials}@127.0.0.1:{settings['port']}/{stack.config.auth_database}"
        )
        with store.ManagedSessionMaker(read_only=False) as session:
            row = session.query(auth_store.SqlUser).filter_by(username=bystander[0]).one()
            row.password_hash = "scrypt:32768:8:1$x$" + "0" * 128
        store.engine.dispose()
        first.patch("/api/2.0/mlflow/users/update-admin", json={"username": changed[0], "is_admin": False})
        _until(lambda: second.get(ADMIN_ONLY, auth=changed).status_code == 403)
        assert second.get(SEARCH, auth=bystander).status_code == 200, "the bystander's cached login was kept"
