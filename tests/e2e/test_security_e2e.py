"""Basic-auth and host checks of the live tracking server, as the chart configures them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import pytest

API = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def http(stack):
    with httpx.Client(base_url=stack.tracking_uri, timeout=30) as session:
        yield session


def test_admin_credentials_are_accepted(http, stack) -> None:
    # The positive control for the 401s below: the same request with the right password works.
    response = http.get(API, auth=stack.admin_credentials())
    assert response.status_code == 200, response.text
    assert "experiments" in response.json()


def test_no_credentials_is_401(http) -> None:
    response = http.get(API)
    assert response.status_code == 401
    assert response.headers.get("www-authenticate", "").lower().startswith("basic")


def test_wrong_password_is_401(http, stack) -> None:
    user, password = stack.admin_credentials()
    response = http.get(API, auth=(user, password + "-wrong"))
    assert response.status_code == 401


def test_unknown_user_is_401(http, stack) -> None:
    _, password = stack.admin_credentials()
    response = http.get(API, auth=("no-such-user", password))
    assert response.status_code == 401


@pytest.mark.parametrize("host", ["evil.example.com", "mlflow.attacker.test:80"])
def test_host_header_outside_allowed_hosts_is_refused(http, stack, host: str) -> None:
    response = http.get(API, auth=stack.admin_credentials(), headers={"Host": host})
    assert response.status_code == 403, (response.status_code, response.text[:200])
    # The same request with an allowed Host passes, so the 403 is the host check, not auth.
    allowed = http.get(
        API, auth=stack.admin_credentials(), headers={"Host": f"localhost:{stack.config.server_port}"}
    )
    assert allowed.status_code == 200


def test_server_listens_on_loopback_only(stack) -> None:
    listening = _listening_addresses(stack.server_pids())
    assert listening, "no listening socket found for the server's processes"
    assert all(address.startswith("127.0.0.1:") for address in listening), listening


def _listening_addresses(pids: list[int]) -> set[str]:
    """host:port of every TCP socket in LISTEN state owned by `pids` (from /proc, no ss/netstat)."""
    import os

    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            if len(hex_ip) == 8:
                ip = ".".join(str(int(hex_ip[i : i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                ip = "ipv6:" + hex_ip
            found.add(f"{ip}:{int(hex_port, 16)}")
    return found


def test_project_runs_log_in_as_the_non_admin_run_user(http, stack, project_runs) -> None:
    """run_project uses the chart's run Secret: the init container's non-admin user, not the admin."""
    user, password = stack.run_credentials()
    admin = stack.admin_credentials()
    assert user != admin[0]
    described = http.get("/api/2.0/mlflow/users/get", params={"username": user}, auth=admin)
    assert described.status_code == 200, described.text
    assert described.json()["user"]["is_admin"] is False
    # The run user reads what its runs wrote, and cannot administer users.
    run = http.get(
        "/api/2.0/mlflow/runs/get", params={"run_id": project_runs.train_run_id}, auth=(user, password)
    )
    assert run.status_code == 200
    create = http.post(
        "/api/2.0/mlflow/users/create",
        json={"username": "intruder", "password": "x" * 16},
        auth=(user, password),
    )
    assert create.status_code == 403


READY = "/_mlflow_aks/ready"


def _platform_token(stack) -> str:
    """The token ready.py sends, from serve.py itself (images/tracking-server, as the probe imports it)."""
    spec = importlib.util.spec_from_file_location(
        "serve", Path(__file__).parents[2] / "images/tracking-server/serve.py"
    )
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    return serve.readiness_token(stack.secrets["flask_secret_key"])


def test_readiness_survives_a_changed_admin_password(http, stack) -> None:
    """Changing the admin password through the API (good practice) leaves the pods ready: the probe uses
    the platform's identity, not a password a person may change. Before, the next probe failed with 401."""
    user, password = stack.admin_credentials()
    new_password = password + "-Changed-9"
    changed = http.patch(
        "/api/2.0/mlflow/users/update-password",
        json={"username": user, "password": new_password, "current_password": password},
        auth=(user, password),
    )
    assert changed.status_code == 200, changed.text
    try:
        assert http.get(API, auth=(user, password)).status_code == 401, "the old password still works"
        assert http.get(API, auth=(user, new_password)).status_code == 200
        probe = stack.readiness()
        assert probe.returncode == 0, probe.stderr
    finally:
        restored = http.patch(
            "/api/2.0/mlflow/users/update-password",
            json={"username": user, "password": password, "current_password": new_password},
            auth=(user, new_password),
        )
        assert restored.status_code == 200, restored.text


@pytest.mark.parametrize("credentials", ["none", "wrong token", "admin password"])
def test_readiness_endpoint_answers_only_the_platform(http, stack, credentials: str) -> None:
    headers = {"wrong token": {"x-mlflow-aks-readiness": "0" * 64}}.get(credentials, {})
    auth = stack.admin_credentials() if credentials == "admin password" else None
    refused = http.get(READY, headers=headers, auth=auth)
    assert refused.status_code == 404, refused.text
    assert "checks" not in refused.text
    answered = http.get(READY, headers={"x-mlflow-aks-readiness": _platform_token(stack)})
    assert answered.status_code == 200, answered.text
    assert answered.json() == {
        "ready": True,
        "checks": {"tracking database": "ok", "user store": "ok", "artifact store": "ok"},
    }
