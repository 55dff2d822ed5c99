"""Fixtures shared by every test module. Area-specific helpers live beside their tests."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from types import FunctionType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "images"
# Basic-auth's request tables, where the image's fast paths put their checks.
AUTH_TABLES = ("BEFORE_REQUEST_VALIDATORS", "AFTER_REQUEST_HANDLERS")


def find_helm() -> str | None:
    """helm from PATH, else the one scripts/fetch-helm puts in .tools/bin."""
    found = shutil.which("helm")
    if found:
        return found
    bundled = REPO_ROOT / ".tools" / "bin" / "helm"
    return str(bundled) if bundled.is_file() and os.access(bundled, os.X_OK) else None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def helm_bin() -> str:
    helm = find_helm()
    if helm is None:
        # Not a skip: a missing helm means set-up was not run, and the tests that need it must fail.
        pytest.fail("helm not found on PATH or in .tools/bin: run scripts/bootstrap (or scripts/fetch-helm)")
    return helm


# Modules that run longest (the local stacks, the benchmarks' smoke runs, the images' venvs): they start
# first, so that no worker is left with one of them at the end.
LONGEST_FIRST = ("tests/e2e/", "tests/test_benchmark_smoke.py", "tests/test_images.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The order pytest-xdist hands out modules in (`-n 2 --dist loadscope --no-loadscope-reorder`,
    pyproject.toml): a worker runs a whole module, so its fixtures are set up once and its tests keep their
    order; the longest modules go first. (The e2e package's `stack` starts on each worker that runs a test
    on it. `--dist loadgroup` would keep those on one worker, but pytest-xdist 3.8 groups by a node id
    attribute that pytest 9 no longer reads.)"""
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))  # stable: modules keep their order


def _not_mlflows(value: object) -> bool:
    return callable(value) and not getattr(value, "__module__", "").startswith(("mlflow.", "flask."))


def _from_image(value: object) -> bool:
    """A function written in images/ (its closures included), wherever the test loaded it from."""
    # The type first: the auth module holds Flask proxies, which raise on any attribute outside a request.
    return isinstance(value, FunctionType) and Path(value.__code__.co_filename).is_relative_to(IMAGES_DIR)


def mlflow_patches() -> set[str]:
    """What this process's MLflow holds that is not MLflow's own: the image's fast paths (serve.py changes 14
    and 15) replace views of MLflow's app, methods of its SQL store and, with basic-auth, checks of its auth
    module and its store's grants query, and change 16 an entry of its artifact repository registry; a test
    that installs them must put MLflow's back, or every later test in its worker runs against the patched
    server (or finds them installed already: the patches install once)."""
    found = set()
    server = sys.modules.get("mlflow.server")
    if server is not None:
        found |= {
            f"app.view_functions[{name!r}]"
            for name, view in server.app.view_functions.items()
            if _not_mlflows(view)
        }
    store = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    if store is not None:
        found |= {
            f"SqlAlchemyStore.{name}"
            for name, value in vars(store.SqlAlchemyStore).items()
            if name.startswith("_mlflow_aks") or _not_mlflows(value)
        }
    auth_store = sys.modules.get("mlflow.server.auth.sqlalchemy_store")
    if auth_store is not None:
        found |= {
            f"auth SqlAlchemyStore.{name}"
            for name, value in vars(auth_store.SqlAlchemyStore).items()
            if _from_image(value)
        }
    auth = sys.modules.get("mlflow.server.auth")
    if auth is not None:
        # Not "any callable not MLflow's": the module holds functions of other packages it imported.
        found |= {
            f"auth.{name}"
            for name, value in vars(auth).items()
            if name.startswith("_mlflow_aks") or _from_image(value)
        }
        for table in AUTH_TABLES:
            found |= {
                f"auth.{table}[{route!r}]"
                for route, check in getattr(auth, table).items()
                if _from_image(check)
            }
    hooks = sys.modules.get("mlflow_oidc_auth.hooks.before_request")
    if hooks is not None:
        # The sign-in plugin's checks (serve.py change 14 in sign-in mode): its tables and its run checks.
        found |= {
            f"mlflow_oidc_auth hooks.{name}[{route!r}]"
            for name, table in vars(hooks).items()
            if isinstance(table, dict)
            for route, check in list(table.items())
            if _from_image(check)
        }
    run_checks = sys.modules.get("mlflow_oidc_auth.validators.run")
    if run_checks is not None:
        found |= {
            f"mlflow_oidc_auth validators.run.{name}"
            for name, value in vars(run_checks).items()
            if _from_image(value)
        }
    registry = sys.modules.get("mlflow.store.artifact.artifact_repository_registry")
    if registry is not None:
        # serve.py's change 16 registers its own opener of `mlflow-artifacts:` URIs.
        found |= {
            f"artifact repository registry[{scheme!r}]"
            for scheme, repository in registry._artifact_repository_registry._registry.items()
            if _from_image(repository)
        }
    return found


@pytest.fixture(autouse=True)
def _mlflow_left_as_found():
    """Fails the test that leaves MLflow patched (set up first, so it checks after the test's own fixtures,
    monkeypatch included, have undone their changes), instead of a later test that trusts MLflow's code."""
    before = mlflow_patches()
    yield
    left = mlflow_patches() - before
    if left:
        pytest.fail(f"the test left MLflow patched in this process: {sorted(left)}")


@pytest.fixture
def basic_auth(monkeypatch):
    """MLflow's basic-auth module (loaded, as in a basic-auth server); what the image's fast paths replace in
    it (tests/test_fast_store.py, tests/test_fast_metrics.py) is MLflow's again after the test."""
    import mlflow.server.auth as auth
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    for name in ("validate_can_read_metric_history_bulk", "redact_search_runs_model_links"):
        monkeypatch.setattr(auth, name, getattr(auth, name))
    monkeypatch.setattr(SqlAlchemyStore, "list_grants", SqlAlchemyStore.list_grants)  # its store's query
    for table in AUTH_TABLES:
        monkeypatch.setattr(auth, table, dict(getattr(auth, table)))
    monkeypatch.setattr(auth, "_mlflow_aks_fast_metrics", False, raising=False)  # gone again after the test
    return auth
