"""The local stack's pieces without starting services: chart translation, prerequisites, processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local import LocalStack, StackConfig, StackError, chart, mariadb
from local import stack as stack_module
from local.procs import Proc, spawn, stop


@pytest.fixture
def local_stack(tmp_path: Path, helm_bin: str) -> LocalStack:
    return LocalStack(
        StackConfig(
            workdir=tmp_path / "ws", server_port=15555, mysql_port=15556, azurite_port=15557, helm=helm_bin
        )
    )


def test_server_spec_is_the_rendered_container_with_local_paths(
    local_stack: LocalStack, repo_root: Path
) -> None:
    spec = local_stack.server_spec()
    secrets = local_stack.secrets
    # The image's code is the repository's images/tracking-server.
    for process in [*spec.init, spec.main]:
        for arg in process.argv:
            assert not arg.startswith("/app/")
    assert str(repo_root / "images" / "tracking-server" / "serve.py") in spec.main.argv
    # Credentials travel in the environment or Secret files, never on the command line.
    for process in [*spec.init, spec.main]:
        joined = " ".join(process.argv)
        for value in secrets.values():
            assert value not in joined
    # Compared as bools so that a failure never prints a secret.
    admin_ok = spec.main.env["MLFLOW_AUTH_ADMIN_PASSWORD"] == secrets["admin_password"]
    db_ok = secrets["db_password"] in spec.main.env["MLFLOW_BACKEND_STORE_URI"]
    assert admin_ok and db_ok
    assert "127.0.0.1:15556" in spec.main.env["MLFLOW_BACKEND_STORE_URI"]
    # Mounted Secret files and scratch volumes live under the stack's working directory.
    assert spec.files and all(path.is_relative_to(local_stack.workdir) for path in spec.files)
    assert Path(spec.main.env["MLFLOW_AUTH_CONFIG_PATH"]) in spec.files
    # Beyond the render: PATH, Azurite's connection string, and TMPDIR, the local directory of the pod's
    # /tmp volume (in the pod, temporary files land in that volume because it *is* /tmp).
    assert set(spec.main.env) == {
        *spec.rendered_env_names,
        "PATH",
        "AZURE_STORAGE_CONNECTION_STRING",
        "TMPDIR",
    }
    server = chart.tracking_deployment(chart.render(repo_root, local_stack.chart_values()))
    [container] = [c for c in server["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    [tmp] = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert spec.main.env["TMPDIR"] == str(local_stack.workdir / "server" / "volumes" / tmp)
    assert "BlobEndpoint=http://127.0.0.1:15557/" in spec.main.env["AZURE_STORAGE_CONNECTION_STRING"]


def test_readiness_probe_is_translated_to_a_local_command(local_stack: LocalStack, repo_root: Path) -> None:
    probe = local_stack.server_spec().main.probes["readiness"]
    assert "exec" in probe
    assert str(repo_root / "images" / "tracking-server" / "ready.py") in probe["exec"]


def test_values_overrides_reach_the_rendered_server(tmp_path: Path, helm_bin: str) -> None:
    """What the benchmark uses: chart values merged over the local overlay."""
    config = StackConfig(
        workdir=tmp_path / "ws", server_port=15555, helm=helm_bin, values={"tracking": {"workers": 3}}
    )
    argv = LocalStack(config).server_spec().main.argv
    assert argv[argv.index("--workers") + 1] == "3"


def test_run_job_command_is_the_charts(local_stack: LocalStack, repo_root: Path, helm_bin: str) -> None:
    setup = chart.render(repo_root, local_stack.chart_values(), helm=helm_bin)
    objects = chart.render_run(
        repo_root,
        project="mlflow_project",
        entry_point="train",
        experiment="exp",
        parameters={"seed": 3, "n_samples": 100},
        tracking_uri=local_stack.tracking_uri,
        credentials_secret=chart.run_secret_name(setup),
        helm=helm_bin,
    )
    spec, _, files = chart.run_spec(objects, chart.secrets_of(setup), repo_root, local_stack.workdir / "runs")
    assert files == {}  # password auth: no token to write
    assert spec.argv == [
        "mlflow", "run", str(repo_root / "mlflow_project"), "-e", "train", "--env-manager", "local",
        "--experiment-name", "exp", "-P", "n_samples=100", "-P", "seed=3",
    ]  # fmt: skip
    assert spec.env["MLFLOW_TRACKING_URI"] == local_stack.tracking_uri
    # Runs log in as the chart's non-admin run user, never with the admin password.
    user, password = local_stack.run_credentials()
    assert spec.env["MLFLOW_TRACKING_USERNAME"] == user != local_stack.admin_credentials()[0]
    password_ok = spec.env["MLFLOW_TRACKING_PASSWORD"] == password
    assert password_ok and password != local_stack.admin_credentials()[1]
    # `mlflow run --env-manager local` runs `python` from PATH: the stack's own Python comes first.
    assert spec.env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_missing_prerequisites_are_named_in_one_message(local_stack: LocalStack, monkeypatch) -> None:
    monkeypatch.setattr(
        mariadb, "binaries", lambda: {"mariadbd": None, "mariadb-install-db": None, "mariadb": None}
    )
    monkeypatch.setattr(stack_module.azurite, "node_binary", lambda: None)
    with pytest.raises(StackError) as raised:
        local_stack.start()
    message = str(raised.value)
    assert message.startswith("missing prerequisites:")
    assert "mariadb-server" in message and "nodejs" in message
    assert not (local_stack.workdir / "state.json").exists(), "nothing may start when something is missing"


def test_secrets_are_generated_once_and_private(local_stack: LocalStack) -> None:
    first = local_stack.secrets
    assert first == local_stack.secrets
    assert (local_stack.workdir / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert LocalStack(StackConfig(workdir=local_stack.workdir.parent / "other")).secrets != first


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    proc = spawn(
        "tree",
        ["sh", "-c", "sleep 300 & sleep 300 & wait"],
        env={"PATH": "/usr/bin:/bin"},
        log=tmp_path / "tree.log",
    )
    deadline = time.monotonic() + 10
    while len(proc.group_pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(proc.group_pids()) == 3
    stop(proc, timeout=10)
    assert proc.group_pids() == []
    assert not proc.alive()


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        impostor = Proc(name="old", pid=sleeper.pid, start_time=1, log=str(tmp_path / "x.log"))
        assert not impostor.alive()
        assert impostor.group_pids() == []
        stop(impostor, timeout=1)
        assert sleeper.poll() is None, "stop() signalled a process that only shares a recorded PID"
    finally:
        sleeper.send_signal(signal.SIGTERM)
        sleeper.wait()


def test_sign_in_stack_runs_the_charts_gateway_account_and_token(tmp_path: Path, helm_bin: str) -> None:
    """With sign-in, the local server and job runner get what the chart gives the pods: the account the
    server accepts the jobs' gateway token as, the name the runner sends, and one token for both."""
    config = StackConfig(
        workdir=tmp_path / "ws", server_port=15555, sign_in=True, oidc_port=15558, helm=helm_bin
    )
    spec = LocalStack(config).server_spec()
    account = spec.main.env["MLFLOW_AKS_GATEWAY_ACCOUNT"]
    assert account == spec.job_runner.env["MLFLOW_TRACKING_USERNAME"] == "mlflow-jobs"
    token = spec.main.env["_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN"]
    # Compared as bools so that a failure never prints the token.
    same = (
        token
        == spec.job_runner.env["_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN"]
        == spec.job_runner.env["MLFLOW_TRACKING_PASSWORD"]
    )
    assert bool(token) and same
