"""Fixtures shared by every test module. Area-specific helpers live beside their tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


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
