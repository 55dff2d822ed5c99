"""The development venv runs what the images run (issue 21.8): scripts/bootstrap installs it with the
images' locked pins as constraints (scripts/image-pins), so the local stack's tracking server and project
runs use the versions the images install, and the locks agree with each other so one venv can hold both.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOCKS = sorted(REPO.glob("images/*/requirements.lock"))


def _image_pins():
    path = REPO / "scripts" / "image-pins"
    loader = importlib.machinery.SourceFileLoader("image_pins", str(path))
    spec = importlib.util.spec_from_loader("image_pins", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


image_pins = _image_pins()


def _lock(*entries: str) -> str:
    return "".join(f"{entry} \\\n    --hash=sha256:{'0' * 64}\n    # via somebody\n" for entry in entries)


def test_pins_are_every_locks_entries_without_hashes() -> None:
    merged = image_pins.merged(
        {"a.lock": _lock("Foo_Bar==1.0", "six==1.17.0"), "b.lock": _lock("foo-bar==1.0", "uvicorn==0.54.0")}
    )
    assert merged == {"foo-bar": "1.0", "six": "1.17.0", "uvicorn": "0.54.0"}


def test_two_locks_pinning_a_package_differently_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"uvicorn is pinned at 0\.54\.0 in a\.lock and at 0\.55\.0 in b\.lock"
    ):
        image_pins.merged({"a.lock": _lock("uvicorn==0.54.0"), "b.lock": _lock("uvicorn==0.55.0")})


def test_the_images_locks_agree_and_print_as_constraints() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "image-pins"), *map(str, LOCKS)],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = dict(line.split("==") for line in done.stdout.splitlines())
    every = {name: version for lock in LOCKS for name, version in image_pins.pins(lock.read_text()).items()}
    assert printed == every and len(LOCKS) >= 2


def test_bootstrap_installs_the_dev_venv_with_the_image_pins() -> None:
    bootstrap = (REPO / "scripts" / "bootstrap").read_text()
    made = re.search(r'"\$PYTHON" scripts/image-pins images/\*/requirements\.lock > "\$(\w+)"', bootstrap)
    assert made, "scripts/bootstrap must write the images' pins to a constraints file"
    assert f'.venv/bin/python -m pip install -q -r requirements-dev.txt -c "${made.group(1)}"' in bootstrap


def test_the_venv_holds_every_locked_package_at_its_locked_version() -> None:
    """Run with the dev venv's Python: every package of every image lock is installed at the lock's version
    (after a lock changes, rerun scripts/bootstrap)."""
    installed = {image_pins.canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    locked = image_pins.merged({str(lock): lock.read_text() for lock in LOCKS})
    wrong = {
        name: (version, installed.get(name))
        for name, version in locked.items()
        if installed.get(name) != version
    }
    assert not wrong, f"locked vs installed (rerun scripts/bootstrap): {wrong}"
