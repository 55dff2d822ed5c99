"""Policy gate: `checkov --framework kubernetes` over every manifest the charts render for the example
contexts (one checkov run per session: it is slow to start). Skips come from tools/checkov/skips.yaml
only, each with a reason. (`--framework helm` would need helm on checkov's PATH and otherwise reports
"no runners" and exits 0 - a false pass - so the charts are rendered here and scanned as Kubernetes.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from components.chart_values import project_values, setup_values
from tests import chart_render as cr

CHECKOV = cr.REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
SKIPS_FILE = cr.REPO_ROOT / "tools" / "checkov" / "skips.yaml"


def load_skips() -> dict[str, str]:
    skips = yaml.safe_load(SKIPS_FILE.read_text()) or {}
    assert isinstance(skips, dict)
    return skips


@pytest.fixture(scope="session")
def manifests(helm_bin, tmp_path_factory) -> tuple[Path, set[str]]:
    """Every rendered manifest in one directory; also the workloads, as checkov names them."""
    out = tmp_path_factory.mktemp("manifests")
    scratch = tmp_path_factory.mktemp("values")
    workloads = set()
    renders = {
        f"setup-{name}": (cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(ctx))
        for name, ctx in cr.SETUP_CONTEXTS.items()
    }
    for run_name, run in cr.RUNS.items():
        for pool in (False, True):
            ctx = cr.project_context(run, pool)
            renders[f"project-{run_name}-{'pool' if pool else 'nopool'}"] = (
                cr.PROJECT_CHART,
                run.name,
                project_values(ctx),
            )
    for name, (chart, release, values) in renders.items():
        result = cr.template(helm_bin, chart, release, values, scratch)
        assert result.returncode == 0, result.stderr
        for obj in filter(None, yaml.safe_load_all(result.stdout)):
            if obj["kind"] in ("Deployment", "StatefulSet", "Job", "Pod"):
                workloads.add(f"{obj['kind']}.{obj['metadata']['namespace']}.{obj['metadata']['name']}")
        (out / f"{name}.yaml").write_text(result.stdout)
    return out, workloads


@pytest.fixture(scope="session")
def checkov_report(manifests) -> tuple[int, dict, str]:
    if not CHECKOV.is_file():
        pytest.fail(f"{CHECKOV} missing: run scripts/bootstrap (it installs tools/checkov/requirements.txt)")
    directory, _ = manifests
    argv = [
        str(CHECKOV),
        "--framework",
        "kubernetes",
        "--directory",
        str(directory),
        "--output",
        "json",
        "--compact",
        "--skip-download",
        "--skip-check",
        ",".join(load_skips()),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    report = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, report, done.stderr


def test_every_skip_has_a_one_line_reason():
    skips = load_skips()
    assert skips, "an empty skip file would be dropped rather than kept"
    for check_id, reason in skips.items():
        assert check_id.startswith(("CKV_K8S_", "CKV2_K8S_")), check_id
        assert isinstance(reason, str) and len(reason) > 20 and "\n" not in reason, check_id


def test_checkov_passes_on_rendered_manifests(checkov_report, manifests):
    returncode, report, stderr = checkov_report
    assert report, f"checkov produced no report (exit {returncode}): {stderr[-2000:]}"
    assert report["check_type"] == "kubernetes"
    summary = report["summary"]
    failed = [
        f"{f['check_id']} {f['check_name']} on {f['resource']} ({f['file_path']})"
        for f in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert returncode == 0, stderr[-2000:]
    assert summary["parsing_errors"] == 0
    _, workloads = manifests
    scanned = {r["resource"] for r in report["results"]["passed_checks"]}
    assert workloads and workloads <= scanned  # every workload was checked, none silently dropped
    assert summary["passed"] > 50 * len(cr.SETUP_CONTEXTS)
