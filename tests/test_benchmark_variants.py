"""The benchmark's server variants: each differs from the chart's server by exactly what it names.

Pure argument/environment checks (no server is started): the baseline is `mlflow server` with none of
the project's tuning, and every ablation variant undoes one choice and keeps everything else.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from benchmarks.tracking_server import ABLATION, build_variants

PYTHON = "/usr/bin/python3"
SERVE = "/app/serve.py"
ARGS = [
    "--host",
    "127.0.0.1",
    "--port",
    "5000",
    "--workers",
    "1",
    "--serve-artifacts",
    "--app-name",
    "basic-auth",
]


@pytest.fixture
def chart_env(tmp_path: Path) -> dict[str, str]:
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///auth.db\nadmin_username = admin\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    return {
        "PATH": "/usr/bin",
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_BACKEND_STORE_URI": "mysql+pymysql://u:p@h/db",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "16",
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "8",
    }


def variants(chart_env: dict[str, str], names: list[str]) -> dict:
    built = build_variants([PYTHON, SERVE, *ARGS], chart_env, Path("/"), names, [])
    return {v.name: v for v in built}


def test_baseline_is_mlflow_server_without_any_tuning(chart_env):
    base = variants(chart_env, ["baseline"])["baseline"]
    assert base.argv[:4] == [PYTHON, "-m", "mlflow", "server"]
    assert not any(a.startswith("--workers") for a in base.argv)
    assert {"--serve-artifacts", "--app-name", "basic-auth"} <= set(base.argv)
    # Only functional settings: no job-runner switch, no pool sizes, no credential cache.
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION" not in base.env
    assert not any(k.startswith("MLFLOW_SQLALCHEMYSTORE_") for k in base.env)
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(base.auth_ini or "")
    assert not ini.has_option("mlflow", "auth_cache_ttl_seconds")
    assert ini.get("mlflow", "default_permission") == "READ"


def test_project_is_the_chart_server_unchanged(chart_env):
    project = variants(chart_env, ["project"])["project"]
    assert project.argv == [PYTHON, SERVE, *ARGS]
    assert project.env == chart_env
    assert project.auth_ini is None


WITHOUT_WORKERS = [a for i, a in enumerate(ARGS) if a != "--workers" and ARGS[i - 1] != "--workers"]


@pytest.mark.parametrize(
    ("name", "argv", "env_change"),
    [
        ("project:no-request-user", ARGS, {"MLFLOW_AKS_SHARE_REQUEST_USER": "false"}),
        ("project:no-run-experiment-cache", ARGS, {"MLFLOW_AKS_RUN_EXPERIMENT_CACHE_SIZE": "0"}),
        ("project:job-runner-on", ARGS, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}),
        ("project:2-workers", [*WITHOUT_WORKERS, "--workers=2"], {}),
    ],
)
def test_each_ablation_undoes_exactly_one_choice(chart_env, name, argv, env_change):
    assert name in ABLATION
    variant = variants(chart_env, [name])[name]
    assert variant.argv == [PYTHON, SERVE, *argv]
    assert variant.env == {**chart_env, **env_change}
    assert variant.auth_ini is None


def test_unknown_variant_is_refused(chart_env):
    with pytest.raises(SystemExit, match="unknown variant"):
        variants(chart_env, ["project:nonsense"])
