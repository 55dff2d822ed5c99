"""The tracking-server benchmark's smoke mode: it runs end to end and prints its table.

Nothing here asserts a timing figure (issue 5: no regression guard that lies); the benchmark's
numbers only count from a full run (`python -m benchmarks.tracking_server`, see docs/performance.md).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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


@dataclass(frozen=True)
class Benchmark:
    module: str
    args: tuple[str, ...]
    workdir: str  # the stack's directory, in the run's scratch directory
    timeout: float


class SmokeResult(NamedTuple):
    done: subprocess.CompletedProcess
    leftovers: list[str]  # processes still mentioning the run's scratch directory once it ended
    written: str | None  # the report file it wrote


BENCHMARKS = {
    "tracking_server": Benchmark("benchmarks.tracking_server", ("--smoke", "--sign-in"), "stack", 900),
    "artifacts": Benchmark("benchmarks.artifacts", ("--smoke",), "work", 600),
    "scale": Benchmark("benchmarks.scale", ("--smoke", "--sign-in"), "work", 600),
}
# The benchmark each test checks: the fixture starts those of the tests selected.
BENCHMARK_OF = {
    "test_benchmark_smoke_runs_and_prints_its_table": "tracking_server",
    "test_artifact_benchmark_smoke_runs_both_paths_and_prints_its_table": "artifacts",
    "test_scale_benchmark_smoke_measures_both_servers": "scale",
}


class SmokeRun:
    """`python -m <benchmark> --smoke` in a scratch directory of its own (stack, report, output)."""

    def __init__(self, name: str, repo_root: Path, env: dict[str, str]):
        self.benchmark = BENCHMARKS[name]
        # Not pytest's tmp_path: MariaDB runs as user `mysql`, who cannot enter /tmp/pytest-of-root (0700).
        self.scratch = Path(tempfile.mkdtemp(prefix=f"mlflow-aks-bench-{name}-"))
        os.chmod(self.scratch, 0o755)  # noqa: S103 (the stack's secrets inside are 0600)
        self.report_file = self.scratch / f"{name}.md"
        argv = [
            sys.executable, "-m", self.benchmark.module, *self.benchmark.args,
            "--output", str(self.report_file), "--workdir", str(self.scratch / self.benchmark.workdir),
        ]  # fmt: skip
        # Output to files, not pipes: a run must never block on a pipe while the test waits on another.
        with open(self.scratch / "stdout", "w") as stdout, open(self.scratch / "stderr", "w") as stderr:
            self.process = subprocess.Popen(argv, cwd=repo_root, env=env, stdout=stdout, stderr=stderr)
        self.started = time.monotonic()
        self.result: SmokeResult | None = None

    def finish(self) -> SmokeResult:
        """Wait for the run, within its timeout counted from its start; then its scratch directory goes."""
        if self.result is not None:
            return self.result
        try:
            try:
                self.process.wait(
                    timeout=max(0.1, self.benchmark.timeout - (time.monotonic() - self.started))
                )
            except BaseException:  # timed out or interrupted: killed, as subprocess.run(timeout=…) does
                self.process.kill()
                self.process.wait()
                raise
            done = subprocess.CompletedProcess(
                self.process.args,
                self.process.returncode,
                (self.scratch / "stdout").read_text(),
                (self.scratch / "stderr").read_text(),
            )
            leftovers = _processes_mentioning(str(self.scratch))
            written = self.report_file.read_text() if self.report_file.exists() else None
            self.result = SmokeResult(done, leftovers, written)
            return self.result
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def smoke_runs(request, repo_root: Path, helm_bin: str) -> Iterator[dict[str, SmokeRun]]:
    """The selected tests' smoke runs, all started at once: each spends most of its time waiting for
    its own stack and servers to start, so together they take little more than the longest alone."""
    missing = missing_prerequisites(repo_root)
    if missing:
        # Not a skip: CI installs all of these (scripts/bootstrap); missing ones mean set-up was not run.
        pytest.fail("missing prerequisites: " + "; ".join(missing))
    env = {**os.environ, "PATH": f"{Path(helm_bin).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    selected = {
        BENCHMARK_OF[item.originalname] for item in request.session.items if item.module is request.module
    }
    runs: dict[str, SmokeRun] = {}
    try:
        for name in sorted(selected):
            runs[name] = SmokeRun(name, repo_root, env)
        yield runs
    finally:
        for run in runs.values():
            with contextlib.suppress(Exception):
                run.finish()


def test_benchmark_smoke_runs_and_prints_its_table(smoke_runs):
    done, leftovers, written = smoke_runs["tracking_server"].finish()
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


def test_artifact_benchmark_smoke_runs_both_paths_and_prints_its_table(smoke_runs):
    """`python -m benchmarks.artifacts --smoke`: a small file and a few files, through the server and
    straight to Azurite, byte-identical after the round trip; no figure is asserted."""
    done, leftovers, written = smoke_runs["artifacts"].finish()
    assert done.returncode == 0, done.stderr[-4000:]
    assert not leftovers, f"processes left behind: {leftovers}"
    report = done.stdout
    assert "smoke: tiny sizes" in report
    rows = re.findall(
        r"^\| (one file of 8 MiB|20 small files) \|.*\| (yes|NO) \| [0-9]+ \| [0-9]+ \|$", report, re.M
    )
    assert rows == [("one file of 8 MiB", "yes"), ("20 small files", "yes")], report
    assert written == report.rstrip("\n") + "\n"


def test_scale_benchmark_smoke_measures_both_servers(smoke_runs):
    """`python -m benchmarks.scale --smoke --sign-in`: a few seeded runs and a short metric history, queried
    through MLflow's defaults, the chart's server and its single sign-on mode; no figure is asserted."""
    done, leftovers, written = smoke_runs["scale"].finish()
    assert done.returncode == 0, done.stderr[-4000:]
    assert not leftovers, f"processes left behind: {leftovers}"
    report = done.stdout
    assert "smoke: tiny sizes" in report and "Long metric: 500 points" in report
    # Every measure, for both servers, with its ratio; the targets and the statements per write.
    from benchmarks.scale import MEASURES

    for _, title in MEASURES:
        assert re.search(
            rf"^\| 20 \| {re.escape(title)} \| [0-9]+ / [0-9]+ \| [0-9]+ / [0-9]+ \| [0-9.]+x \|$",
            report,
            re.M,
        )
    assert re.search(
        r"^\| 20 \| experiment page ≥ 5x baseline \(p95\) \| [0-9.]+x \| (yes|\*\*no\*\*) \|$", report, re.M
    )
    for variant in ("baseline", "project"):
        for request in ("log_metric", "log_batch"):
            assert re.search(rf"^\| 20 \| {variant} \| {request} \|( -?[0-9.]+ \|){{6}}$", report, re.M)
    # The server's CPU time per page load, for each server; --sign-in: the page's measures again on the
    # single sign-on server, beside both basic-auth servers.
    assert re.search(r"^\| 20 \| [0-9]+ \| [0-9]+ \| [0-9]+ \|$", report, re.M)
    for title in ("experiment page (UI calls)", "experiment page, filtered", "runs/search alone"):
        assert re.search(
            rf"^\| 20 \| {re.escape(title)} \|( [0-9]+ / [0-9]+ \|){{3}} [0-9.]+x \|$", report, re.M
        )
    assert written == report.rstrip("\n") + "\n"
