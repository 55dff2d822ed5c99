"""The tracking-server benchmark's smoke mode: it runs end to end and prints its table.

Nothing here asserts a timing figure (issue 5: no regression guard that lies); the benchmark's
numbers only count from a full run (`python -m benchmarks.tracking_server`, see docs/performance.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from local import missing_prerequisites


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def test_benchmark_smoke_runs_and_prints_its_table(repo_root: Path, helm_bin: str):
    missing = missing_prerequisites(repo_root)
    if missing:
        # Not a skip: CI installs all of these (scripts/bootstrap); missing ones mean set-up was not run.
        pytest.fail("missing prerequisites: " + "; ".join(missing))
    # Not pytest's tmp_path: MariaDB runs as user `mysql`, who cannot enter /tmp/pytest-of-root (0700).
    scratch = Path(tempfile.mkdtemp(prefix="mlflow-aks-bench-smoke-"))
    os.chmod(scratch, 0o755)  # noqa: S103 (the stack's secrets inside are 0600)
    report_file = scratch / "smoke.md"
    env = {**os.environ, "PATH": f"{Path(helm_bin).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.tracking_server",
                "--smoke",
                "--sign-in",
                "--output",
                str(report_file),
                "--workdir",
                str(scratch / "stack"),
            ],
            cwd=repo_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        leftovers = _processes_mentioning(str(scratch))
        written = report_file.read_text() if report_file.exists() else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not leftovers, f"processes left behind: {leftovers}"
    report = done.stdout
    assert "Smoke run" in report
    assert "| measure | clients | baseline | project | project / baseline |" in report
    for title in ("log_metric", "log_batch (100 metrics)", "search_runs", "artifact upload 1 MiB"):
        for clients in (1, 8):
            row = rf"^\| {re.escape(title)}[^|]*: throughput \(req/s\) \| {clients} \| [0-9.]+ \| [0-9.]+ \|"
            assert re.search(row, report, re.M), f"no throughput row for {title} x{clients}"
    for label in ("server memory, whole process tree", "server processes", "start to ready (s)"):
        assert f"| {label}" in report
    # Every request of the smoke run succeeded, against both servers.
    assert "Failed requests: none." in report
    # And against the single sign-on server, signed in with a run Job's ServiceAccount token (issue 13).
    assert re.search(r"^\| throughput \(req/s\) \| [0-9.]+ \| [0-9.]+ \| \*\*[0-9.]+x\*\* \|$", report, re.M)
    assert "sign-in 1 client log_metric ≥ 10x baseline" in report
    assert "Failed requests (sign-in): none." in report
    assert written == report.rstrip("\n") + "\n"


def test_artifact_benchmark_smoke_runs_both_paths_and_prints_its_table(repo_root: Path, helm_bin: str):
    """`python -m benchmarks.artifacts --smoke`: a small file and a few files, through the server and
    straight to Azurite, byte-identical after the round trip; no figure is asserted."""
    scratch = Path(tempfile.mkdtemp(prefix="mlflow-aks-bench-artifacts-"))
    os.chmod(scratch, 0o755)  # noqa: S103 (the stack's secrets inside are 0600)
    report_file = scratch / "artifacts.md"
    env = {**os.environ, "PATH": f"{Path(helm_bin).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.artifacts", "--smoke", "--output", str(report_file),
             "--workdir", str(scratch / "work")],
            cwd=repo_root, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        leftovers = _processes_mentioning(str(scratch))
        written = report_file.read_text() if report_file.exists() else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not leftovers, f"processes left behind: {leftovers}"
    report = done.stdout
    assert "smoke: tiny sizes" in report
    rows = re.findall(
        r"^\| (one file of 8 MiB|20 small files) \|.*\| (yes|NO) \| [0-9]+ \| [0-9]+ \|$", report, re.M
    )
    assert rows == [("one file of 8 MiB", "yes"), ("20 small files", "yes")], report
    assert written == report.rstrip("\n") + "\n"


def test_scale_benchmark_smoke_measures_both_servers(repo_root: Path, helm_bin: str):
    """`python -m benchmarks.scale --smoke`: a few seeded runs and a short metric history, queried through
    MLflow's defaults and the chart's server; no figure is asserted."""
    scratch = Path(tempfile.mkdtemp(prefix="mlflow-aks-bench-scale-"))
    os.chmod(scratch, 0o755)  # noqa: S103 (the stack's secrets inside are 0600)
    report_file = scratch / "scale.md"
    env = {**os.environ, "PATH": f"{Path(helm_bin).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.scale", "--smoke", "--output", str(report_file),
             "--workdir", str(scratch / "work")],
            cwd=repo_root, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        leftovers = _processes_mentioning(str(scratch))
        written = report_file.read_text() if report_file.exists() else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not leftovers, f"processes left behind: {leftovers}"
    report = done.stdout
    assert "smoke: tiny sizes" in report and "Long metric: 500 points" in report
    assert re.search(
        r"^\| 20 \| [0-9]+ \| [0-9]+ / [0-9]+ \| [0-9]+ / [0-9]+ \| [0-9]+ / [0-9]+ \| [0-9]+ / [0-9]+ \|$",
        report,
        re.M,
    )
    assert written == report.rstrip("\n") + "\n"
