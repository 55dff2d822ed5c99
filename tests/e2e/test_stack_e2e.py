"""The local stack itself: the running server is the chart's server, and `start` is idempotent."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from local import chart


def _proc_argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")


def _proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if item)


def test_running_server_matches_a_fresh_chart_render(stack, repo_root: Path, helm_bin: str) -> None:
    """The launched argv and env are the rendered container's, plus only Azurite's connection string."""
    objects = chart.render(repo_root, stack.chart_values(), helm=helm_bin)
    deployment = chart.tracking_deployment(objects)
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    pid = stack.status()["server"]["pid"]
    argv = _proc_argv(pid)
    env = _proc_env(pid)

    # argv: the rendered command + args, with only the in-image paths translated.
    rendered = [*container["command"], *container["args"]]
    assert len(argv) == len(rendered)
    for launched, wanted in zip(argv, rendered, strict=True):
        if wanted.startswith("/app/"):
            assert launched == str(repo_root / "images" / "tracking-server" / wanted.removeprefix("/app/"))
        elif wanted == "python":
            assert os.path.basename(launched).startswith("python")
        else:
            assert launched == wanted
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--artifacts-destination") + 1] == stack.artifacts_destination

    # env: exactly the rendered names, plus PATH (the image's), the Azurite connection string and TMPDIR
    # (the local directory of the pod's /tmp volume).
    rendered_names = {e["name"] for e in container["env"]}
    assert set(env) == rendered_names | {"PATH", "AZURE_STORAGE_CONNECTION_STRING", "TMPDIR"}
    secrets = chart.secrets_of(objects)
    for item in container["env"]:
        if "value" in item and not item["value"].startswith("/"):
            assert env[item["name"]] == item["value"], item["name"]
        elif "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            # Compared as a bool so that a failure never prints the secret.
            same = env[item["name"]] == secrets[ref["name"]][ref["key"]]
            assert same, f"{item['name']} differs from its Secret"
    assert env["AZURE_STORAGE_CONNECTION_STRING"] == stack.azure_connection_string
    assert "devstoreaccount1" not in env["AZURE_STORAGE_CONNECTION_STRING"]


def test_secret_volume_files_are_written_0600_and_match_the_render(
    stack, repo_root: Path, helm_bin: str
) -> None:
    objects = chart.render(repo_root, stack.chart_values(), helm=helm_bin)
    spec = chart.server_spec(repo_root, objects, stack.workdir / "server", stack.config.python)
    assert spec.files, "the chart mounts at least the basic-auth config from a Secret"
    env = _proc_env(stack.status()["server"]["pid"])
    for path, content in spec.files.items():
        assert path.read_bytes() == content
        assert (path.stat().st_mode & 0o777) == 0o600, path
        assert path.is_relative_to(stack.workdir)
    # The server reads its auth config from the written file (its env points there).
    assert Path(env["MLFLOW_AUTH_CONFIG_PATH"]) in spec.files


def test_init_containers_migrated_both_databases(stack, db) -> None:
    from tests.e2e.conftest import query

    assert query(db, "SELECT COUNT(*) FROM alembic_version")[0][0] == 1
    auth_db = stack.config.auth_database
    tables = {t for (t,) in query(db, f"SHOW TABLES FROM `{auth_db}`")}
    assert {"users", "experiment_permissions", "registered_model_permissions"} <= tables


def test_mariadb_runs_with_the_charts_connection_limit_and_buffer_pool(stack, db) -> None:
    """The running database accepts as many connections as the chart computes for this server (issue 18.6),
    and keeps as much in memory as the chart's MySQL (issue 20)."""
    from local import chart
    from tests.e2e.conftest import query

    expected = chart.database_options(stack.config.repo_root, stack.chart_values(), stack.config.helm)
    assert query(db, "SELECT @@max_connections")[0][0] == expected.max_connections
    assert query(db, "SELECT @@innodb_buffer_pool_size")[0][0] == expected.buffer_pool_mib * 1024**2


def test_start_again_is_a_no_op(stack) -> None:
    before = stack.status()
    stack.start()
    after = stack.status()
    assert before == after
    assert all(info["running"] for info in after.values()), after


def test_secrets_are_generated_private_and_not_in_state_or_logs(stack) -> None:
    secrets_file = stack.workdir / "secrets.json"
    assert (secrets_file.stat().st_mode & 0o777) == 0o600
    values = [v for v in yaml.safe_load(secrets_file.read_text()).values()]
    assert len(set(values)) == len(values) and all(len(v) >= 32 for v in values)
    public = [stack.workdir / "state.json", stack.workdir / "server" / "server.log"]
    for path in public:
        text = path.read_text(errors="replace")
        for value in values:
            assert value not in text, f"a generated secret appears in {path.name}"
