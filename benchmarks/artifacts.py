"""Artifact transfer benchmark: files of 1 GiB and 5 GiB and a directory of 2,000 small files, through the
tracking server's proxy (as a run Job logs them) and straight to the blob emulator, side by side.

    .venv/bin/python -m benchmarks.artifacts            # ~6 min; writes benchmarks/results/artifacts.md
    .venv/bin/python -m benchmarks.artifacts --smoke    # ~1 min; proves it runs (CI)

It starts the local stack (MariaDB, Azurite, the chart's tracking server) on free loopback ports in a
new temporary directory. For each size it writes a file of random bytes, then:

- **direct**: uploads it to Azurite with azure-storage-blob's `upload_blob` and downloads it with
  `download_blob().readinto()`, with the SDK's defaults, as a client holding the storage key would;
- **platform**: logs it with MLflow's client as the chart's non-admin run user (`log_artifact`, which
  goes through the server's proxy) and downloads it again (`download_artifacts`);

and reports the throughput of each and their ratio, whether the download is byte-identical, the peak
of the server's process-tree memory over its idle level, and the peak size of its scratch volume
(the pod's /tmp), sampled every 100 ms. It never fails on a figure: it is a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import log, new_stack, write_report
from benchmarks.procs import tree_memory_mib
from benchmarks.tracking_server import REPO_ROOT, machine_info
from local import LocalStack

MIB = 1024 * 1024
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "artifacts.md"
# Issue 12's targets.
MIN_RATIO = 0.5
MAX_MEMORY_OVER_IDLE_MIB = 150


@dataclass
class Transfer:
    what: str
    mib: float
    direct_up_s: float = 0.0
    direct_down_s: float = 0.0
    platform_up_s: float = 0.0
    platform_down_s: float = 0.0
    identical: bool = False
    memory_over_idle_mib: float = 0.0
    scratch_peak_mib: float = 0.0
    notes: list[str] = field(default_factory=list)


class Sampler:
    """Peak memory of the server's process tree and peak size of its scratch volume."""

    def __init__(self, pid: int, scratch: Path):
        self.pid, self.scratch = pid, scratch
        self.idle = tree_memory_mib(pid)[0]
        self.peak, self.scratch_peak = self.idle, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_memory_mib(self.pid)[0])
            size = sum(p.stat().st_size for p in self.scratch.rglob("*") if p.is_file()) / MIB
            self.scratch_peak = max(self.scratch_peak, size)
            time.sleep(0.1)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _sha256_tree(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(8 * MIB):
                digest.update(block)
        found[path.relative_to(root).as_posix()] = digest.hexdigest()
    return found


def _random_file(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))


def _small_files(root: Path, count: int) -> float:
    total = 0
    for index in range(count):
        directory = root / f"part-{index % 20:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        data = os.urandom(1024 + (index * 37) % 7168)
        (directory / f"shard-{index:05d}.bin").write_bytes(data)
        total += len(data)
    return total / MIB


@contextlib.contextmanager
def _run_user(stack: LocalStack) -> Iterator[None]:
    user, password = stack.run_credentials()
    env = {
        "MLFLOW_TRACKING_URI": stack.tracking_uri,
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure(stack: LocalStack, scratch_root: Path, sizes: list[int], files: int, log) -> list[Transfer]:
    from azure.storage.blob import BlobServiceClient
    from mlflow.tracking import MlflowClient

    container = BlobServiceClient.from_connection_string(stack.azure_connection_string).get_container_client(
        stack.config.container
    )
    server_pid = stack._proc("server").pid
    scratch = Path(stack.server_spec().main.env["TMPDIR"])
    results = []
    with _run_user(stack):
        client = MlflowClient(stack.tracking_uri)
        experiment = client.create_experiment(f"artifact-benchmark-{int(time.time())}")
        for mib in [*sizes, None]:
            source = scratch_root / "source"
            down = scratch_root / "down"
            shutil.rmtree(source, ignore_errors=True)
            shutil.rmtree(down, ignore_errors=True)
            source.mkdir()
            if mib is not None:
                _random_file(source / "model.bin", mib)
                result = Transfer(f"one file of {mib} MiB", mib)
            else:
                result = Transfer(f"{files} small files", _small_files(source, files))
            log(f"{result.what}: direct to Azurite")
            blobs = sorted(p for p in source.rglob("*") if p.is_file())

            def direct_up(blobs=blobs, source=source, tag=result.what):
                for path in blobs:
                    with open(path, "rb") as f:
                        name = f"direct/{tag}/{path.relative_to(source).as_posix()}"
                        container.upload_blob(name, f, overwrite=True)

            def direct_down(blobs=blobs, source=source, tag=result.what, down=down):
                for path in blobs:
                    target = down / "direct" / path.relative_to(source)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as f:
                        name = f"direct/{tag}/{path.relative_to(source).as_posix()}"
                        container.download_blob(name).readinto(f)

            result.direct_up_s = _timed(direct_up)
            result.direct_down_s = _timed(direct_down)
            shutil.rmtree(down / "direct")
            log(f"{result.what}: through the tracking server, as the run user")
            run_id = client.create_run(experiment).info.run_id
            with Sampler(server_pid, scratch) as sampler:
                if mib is not None:
                    result.platform_up_s = _timed(
                        lambda s=source, r=run_id: client.log_artifact(r, str(s / "model.bin"))
                    )
                    result.platform_down_s = _timed(
                        lambda r=run_id, d=down: client.download_artifacts(r, "model.bin", str(d))
                    )
                    result.identical = _sha256_tree(source) == _sha256_tree(down)
                else:
                    result.platform_up_s = _timed(
                        lambda s=source, r=run_id: client.log_artifacts(r, str(s), "shards")
                    )
                    result.platform_down_s = _timed(
                        lambda r=run_id, d=down: client.download_artifacts(r, "shards", str(d))
                    )
                    result.identical = _sha256_tree(source) == _sha256_tree(down / "shards")
            result.memory_over_idle_mib = sampler.peak - sampler.idle
            result.scratch_peak_mib = sampler.scratch_peak
            results.append(result)
            shutil.rmtree(source, ignore_errors=True)
            shutil.rmtree(down, ignore_errors=True)
            log(
                f"{result.what}: up {result.platform_up_s:.1f}s (direct {result.direct_up_s:.1f}s), "
                f"down {result.platform_down_s:.1f}s (direct {result.direct_down_s:.1f}s), "
                f"identical {result.identical}, +{result.memory_over_idle_mib:.0f} MiB"
            )
    return results


def render(results: list[Transfer], machine: dict[str, str], elapsed: float, smoke: bool) -> str:
    lines = [
        "# Artifact transfers: through the tracking server vs straight to the blob emulator",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.0f} s"
        + (" (smoke: tiny sizes, figures mean nothing)" if smoke else "")
        + ". Machine: "
        + "; ".join(f"{k} {v}" for k, v in machine.items())
        + ".",
        "",
        "| transfer | MiB | direct up (MiB/s) | platform up (MiB/s) | up ratio | direct down (MiB/s) "
        "| platform down (MiB/s) | down ratio | byte-identical | server memory over idle (MiB) "
        "| scratch peak (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:

        def rate(seconds: float, r=r) -> float:
            return r.mib / seconds if seconds else float("nan")

        up = rate(r.platform_up_s) / rate(r.direct_up_s)
        down = rate(r.platform_down_s) / rate(r.direct_down_s)
        lines.append(
            f"| {r.what} | {r.mib:.0f} | {rate(r.direct_up_s):.1f} | {rate(r.platform_up_s):.1f} "
            f"| **{up:.2f}x** "
            f"| {rate(r.direct_down_s):.1f} | {rate(r.platform_down_s):.1f} | **{down:.2f}x** "
            f"| {'yes' if r.identical else 'NO'} | {r.memory_over_idle_mib:.0f} | {r.scratch_peak_mib:.0f} |"
        )
    lines += ["", "Targets of issue 12 (large files):", ""]
    for r in results:
        if r.what.startswith("one file"):
            up = (r.mib / r.platform_up_s) / (r.mib / r.direct_up_s)
            down = (r.mib / r.platform_down_s) / (r.mib / r.direct_down_s)
            met = (
                min(up, down) >= MIN_RATIO
                and r.memory_over_idle_mib <= MAX_MEMORY_OVER_IDLE_MIB
                and r.identical
                and r.scratch_peak_mib < 1
            )
            lines.append(
                f"- {r.what}: throughput ≥ {MIN_RATIO}x direct (up {up:.2f}x, down {down:.2f}x), memory ≤ "
                f"{MAX_MEMORY_OVER_IDLE_MIB} MiB over idle ({r.memory_over_idle_mib:.0f}), scratch unused "
                f"({r.scratch_peak_mib:.0f} MiB), byte-identical: {'met' if met else 'NOT met'}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.artifacts", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the benchmark runs")
    parser.add_argument("--sizes", default="1024,5120", help="file sizes in MiB, comma-separated")
    parser.add_argument("--files", type=int, default=2000, help="small files in the directory transfer")
    parser.add_argument(
        "--output", type=Path, help=f"report (default {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})"
    )
    parser.add_argument(
        "--workdir", type=Path, help="stack directory (default: a new temporary one, removed)"
    )
    args = parser.parse_args(argv)
    sizes = [8] if args.smoke else [int(s) for s in args.sizes.split(",") if s]
    files = 20 if args.smoke else args.files
    output = args.output or (
        DEFAULT_OUTPUT.with_name("artifacts-smoke.md.tmp") if args.smoke else DEFAULT_OUTPUT
    )

    workdir, stack = new_stack("mlflow-aks-artifacts-", args.workdir)
    started = time.monotonic()
    try:
        log(f"starting the local stack under {workdir}")
        stack.start()
        scratch = workdir / "files"
        scratch.mkdir(exist_ok=True)
        results = measure(stack, scratch, sizes, files, log)
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report = render(results, machine_info(), time.monotonic() - started, args.smoke)
    write_report(output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
