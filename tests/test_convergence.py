"""Every later `pulumi up` converges: same config, same inputs; a changed chart upgrades its releases.

Each snapshot runs the whole program in a fresh Python process (tests/program_snapshot.py) so that hash
randomisation (PYTHONHASHSEED), directory listing order and the checkout's location can differ between
two runs, as they do between two `pulumi up`s on two machines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = REPO_ROOT / "tests" / "program_snapshot.py"
# What the program reads from a checkout.
PROGRAM_FILES = ("__main__.py", "settings.py", "Pulumi.yaml")
PROGRAM_DIRS = ("components", "charts", "templates", "mlflow_project", "images", "alerts")
RELEASE = "kubernetes:helm.sh/v3:Release"
CONFIG = {
    "runs": [
        {"name": "train-demo", "entryPoint": "train", "experiment": "demo", "parameters": {"C": 0.5}},
        {
            "name": "evaluate-demo",
            "entryPoint": "evaluate",
            "parameters": {"experiment_name": "demo"},
            "after": ["train-demo"],
        },
    ],
    "systemNodeAutoscale": True,
}
SETUP = {f"{RELEASE}::mlflow-setup"}
RUNS = {f"{RELEASE}::mlflow-run-train-demo", f"{RELEASE}::mlflow-run-evaluate-demo"}


def snapshot(repo: Path, *, hash_seed: int, reverse_listings: bool = False) -> dict:
    argv = [sys.executable, str(SNAPSHOT), str(repo), json.dumps(CONFIG)]
    if reverse_listings:
        argv.append("--reverse-listings")
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def copy_checkout(destination: Path) -> Path:
    destination.mkdir()
    for name in PROGRAM_FILES:
        shutil.copy2(REPO_ROOT / name, destination / name)
    for name in PROGRAM_DIRS:
        shutil.copytree(
            REPO_ROOT / name,
            destination / name,
            symlinks=True,  # charts/mlflow_setup/charts/mysql stays a link to the subchart
            ignore=shutil.ignore_patterns("__pycache__", "*.tgz"),
        )
    return destination


def changed(before: dict, after: dict) -> dict[str, set[str]]:
    """Resource -> the top-level inputs (and `options`) that differ between two snapshots."""
    assert before["resources"].keys() == after["resources"].keys()
    differences = {}
    for key, old in before["resources"].items():
        new = after["resources"][key]
        inputs = {
            k
            for k in old["inputs"].keys() | new["inputs"].keys()
            if old["inputs"].get(k) != new["inputs"].get(k)
        }
        if old["options"] != new["options"] or old["provider"] != new["provider"]:
            inputs.add("options")
        if inputs:
            differences[key] = inputs
    return differences


@pytest.fixture(scope="module")
def baseline() -> dict:
    return snapshot(REPO_ROOT, hash_seed=1)


def test_two_runs_with_the_same_config_declare_identical_inputs(baseline):
    """Another hash seed and every directory listed in reverse order: not one input or option moves."""
    again = snapshot(REPO_ROOT, hash_seed=2, reverse_listings=True)
    assert changed(baseline, again) == {}
    assert again == baseline


def test_another_checkout_of_the_same_commit_declares_identical_inputs(baseline, tmp_path):
    """No absolute path, timestamp or machine detail in any input: a fresh clone elsewhere is no change."""
    copy = copy_checkout(tmp_path / "elsewhere")
    assert snapshot(copy, hash_seed=3) == baseline


CHART_EDITS = {
    # file under charts/ -> the releases whose inputs must change
    "charts/mlflow_setup/templates/tracking/service.yaml": SETUP,
    "charts/mlflow_setup/templates/NOTES.txt": SETUP,
    "charts/mysql/templates/statefulset.yaml": SETUP,  # the subchart, through its symlink
    "charts/mlflow_project/templates/job.yaml": RUNS,
}


@pytest.mark.parametrize("path", list(CHART_EDITS))
def test_a_changed_chart_file_upgrades_exactly_the_releases_using_it(baseline, tmp_path, path):
    """A template-only fix (same chart version) changes the values of the releases of that chart, and
    only their `chartDigest`: `pulumi up` upgrades those releases (runs are replaced) and nothing else."""
    copy = copy_checkout(tmp_path / "edited")
    edited = copy / path
    edited.write_text(edited.read_text() + "\n{{- /* a template-only fix */}}\n")
    after = snapshot(copy, hash_seed=4)
    assert changed(baseline, after) == {key: {"values"} for key in CHART_EDITS[path]}
    for key in CHART_EDITS[path]:
        old, new = baseline["resources"][key]["inputs"]["values"], after["resources"][key]["inputs"]["values"]
        assert old["chartDigest"] != new["chartDigest"]
        assert {**old, "chartDigest": None} == {**new, "chartDigest": None}


def test_a_new_file_in_a_chart_upgrades_its_release(baseline, tmp_path):
    copy = copy_checkout(tmp_path / "added")
    (copy / "charts/mlflow_setup/templates/tracking/extra.yaml").write_text("{{- /* nothing yet */}}\n")
    assert changed(baseline, snapshot(copy, hash_seed=5)) == {key: {"values"} for key in SETUP}
