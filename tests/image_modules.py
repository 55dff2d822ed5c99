"""The tracking-server image's Python modules, imported for one test.

In the image they sit together in /app and import each other as top-level modules (serve.py imports
fast_store and fast_metrics; fast_metrics imports fast_store). A test imports them the same way, from
images/tracking-server on sys.path, but for itself only: `load` first drops every cached copy of an
image module, so the test gets fresh ones (whatever an earlier test imported or patched), and the
test's monkeypatch puts sys.path and sys.modules back as they were afterwards, so no later test sees
this test's copies.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

IMAGE_DIR = Path(__file__).resolve().parent.parent / "images" / "tracking-server"
NAMES = frozenset(path.stem for path in IMAGE_DIR.glob("*.py"))


def load(monkeypatch: pytest.MonkeyPatch, name: str) -> ModuleType:
    """images/tracking-server/<name>.py, imported for the test that owns `monkeypatch`."""
    assert name in NAMES, f"{name}.py is not a module of {IMAGE_DIR}"
    monkeypatch.syspath_prepend(str(IMAGE_DIR))
    for cached in NAMES:
        # setitem records what sys.modules held (a module, or nothing) for the undo; then no copy is left.
        monkeypatch.setitem(sys.modules, cached, None)
        del sys.modules[cached]
    return importlib.import_module(name)


def run_worker_startup(app) -> None:
    """uvicorn's `Server.startup` for `app`, as each serving process runs it (with whatever serve.py's
    `_patch_uvicorn_worker` installed), in an event loop of its own."""
    import asyncio

    import uvicorn

    config = uvicorn.Config(app)
    config.loaded_app = config.app
    loop = asyncio.new_event_loop()  # not asyncio.run: it leaves the main thread with no event loop
    try:
        loop.run_until_complete(uvicorn.Server(config).startup())
    finally:
        loop.close()
