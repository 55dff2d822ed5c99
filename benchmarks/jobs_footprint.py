"""What server-side jobs cost (issue 19, item 1): the serving pod with `jobs.enabled` off and on, and the
job runner's own memory and CPU.

    .venv/bin/python -m benchmarks.jobs_footprint            # -> benchmarks/results/jobs.md
    .venv/bin/python -m benchmarks.jobs_footprint --smoke    # seconds: proves it runs, figures meaningless

For each setting, a local stack as the chart renders it (`jobs.enabled` false, then true: the tracking
server, and with jobs on the jobs Deployment's runner beside it), then: the server's whole process tree
memory (PSS) after start, `log_metric` from 1 and 8 clients (throughput, p50/p95), its memory after the load;
with jobs on, the runner's tree memory and CPU over the same time (idle: no job submitted; a judge job
adds one process while it runs, measured by tests/e2e/test_jobs_e2e.py's runs, see docs/genai.md).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import log, new_stack, write_report
from benchmarks.loadgen import basic_auth_header, new_session, run_op
from benchmarks.procs import tree_cpu_seconds, tree_memory_mib
from benchmarks.workload import Workload

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "jobs.md"
CLIENTS = (1, 8)


async def _load(stack, duration: float) -> dict:
    user, password = stack.admin_credentials()
    headers = basic_auth_header(user, password)
    workload = Workload("jobs", max(CLIENTS), "", 0)
    async with new_session(stack.tracking_uri, headers) as session:
        await workload.setup(session)
    results = {}
    for clients in CLIENTS:
        result = await run_op(
            "log_metric", stack.tracking_uri, headers, workload.log_metric, clients, duration, 50000
        )
        assert result.ok and not result.errors, f"log_metric failed: {result.errors} errors"
        results[clients] = result
    return results


def measure(enabled: bool, duration: float) -> dict:
    workdir, stack = new_stack("mlflow-aks-jobs-bench-", values={"jobs": {"enabled": enabled}})
    try:
        stack.start()
        time.sleep(5)  # the runner's start (imports, periodic consumer) is done
        server = stack._proc("server").pid
        runner = stack._proc("jobs").pid if enabled else None
        row: dict = {"server_start_mib": tree_memory_mib(server)[0]}
        runner_cpu = tree_cpu_seconds(runner) if runner else 0.0
        started = time.monotonic()
        row["ops"] = asyncio.run(_load(stack, duration))
        row["server_after_mib"], row["server_procs"], row["measure"] = tree_memory_mib(server)
        if runner:
            row["runner_mib"], row["runner_procs"], _ = tree_memory_mib(runner)
            row["runner_cpu_share"] = (tree_cpu_seconds(runner) - runner_cpu) / (time.monotonic() - started)
        return row
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _ratio_row(name: str, off: float, on: float) -> str:
    return f"| {name} | {off:.0f} | {on:.0f} | {on / off:.2f}x |"


def report(off: dict, on: dict, duration: float) -> str:
    lines = [
        "# Server-side jobs: footprint",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m benchmarks.jobs_footprint`: "
        f"{duration:g} s of `log_metric` per client count, on {platform.machine()} with 2 cores shared with "
        f"other work; memory is {on['measure']} summed over a process tree.",
        "",
        "| measure | jobs off | jobs on | on / off |",
        "|---|---|---|---|",
        _ratio_row("serving pod memory after start (MiB)", off["server_start_mib"], on["server_start_mib"]),
        _ratio_row("serving pod memory after load (MiB)", off["server_after_mib"], on["server_after_mib"]),
    ]
    for clients in CLIENTS:
        a, b = off["ops"][clients], on["ops"][clients]
        lines.append(
            f"| log_metric, {clients} client(s): req/s | {a.throughput:.1f} | {b.throughput:.1f} "
            f"| {b.throughput / a.throughput:.2f}x |"
        )
        lines.append(
            f"| log_metric, {clients} client(s): p50 / p95 (ms) | {a.p50:.1f} / {a.p95:.1f} "
            f"| {b.p50:.1f} / {b.p95:.1f} | |"
        )
    lines += [
        f"| job runner memory, idle (MiB, {on['runner_procs']} processes) | - | {on['runner_mib']:.0f} | |",
        f"| job runner CPU, idle (share of a core) | - | {on['runner_cpu_share']:.3f} | |",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    duration = args.duration or (0.3 if args.smoke else 10.0)
    log("jobs off")
    off = measure(False, duration)
    log("jobs on")
    on = measure(True, duration)
    write_report(args.output, report(off, on, duration))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
