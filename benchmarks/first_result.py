"""Time to a first result on the local stack, as the README has a newcomer do it:

    .venv/bin/python -m benchmarks.first_result              # 3 rounds, ~90 s
    .venv/bin/python -m benchmarks.first_result --rounds 1   # one round

(writes benchmarks/results/first-result.md).

Each round, in a new working directory on free ports, runs the README's commands one after the other and
times each with the wall clock, as a person waiting at the terminal sees it:

1. `python -m local up` (MariaDB initialised, Azurite, schema migration, the server until ready);
2. `python -m local run-project --experiment demo -e train -P n_samples=5000 -P C=0.5`;
3. `python -m local run-project --experiment demo -e evaluate` (the latest train run);

then `down --purge`. "Warm machine" means what a second try on the same machine finds: packages
installed, files in the page cache; the first round warms them and is reported apart. The report gives
each round and the median of the warm ones, against issue 12's target of 30 s for the three steps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import log, write_report
from benchmarks.tracking_server import REPO_ROOT, machine_info
from local import free_ports

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "first-result.md"
TARGET_SECONDS = 30.0
STEPS = ("up", "train", "evaluate")


def _timed(argv: list[str], log) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv[2:])} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    log(f"{' '.join(argv[3:5])}: {elapsed:.1f}s")
    return elapsed


def one_round(log) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="mlflow-aks-first-"))
    os.chmod(base, 0o755)  # noqa: S103 - MariaDB (user mysql) enters it; the secrets inside are 0600
    local = [sys.executable, "-m", "local", "--workdir", str(base / "stack")]
    server, mysql, azurite = free_ports(3)
    try:
        times = {
            "up": _timed(
                [
                    *local,
                    "up",
                    "--server-port",
                    str(server),
                    "--mysql-port",
                    str(mysql),
                    "--azurite-port",
                    str(azurite),
                ],
                log,
            ),
            "train": _timed(
                [
                    *local,
                    "run-project",
                    "--experiment",
                    "demo",
                    "-e",
                    "train",
                    "-P",
                    "n_samples=5000",
                    "-P",
                    "C=0.5",
                ],
                log,
            ),
            "evaluate": _timed([*local, "run-project", "--experiment", "demo", "-e", "evaluate"], log),
        }
    finally:
        subprocess.run([*local, "down", "--purge"], cwd=REPO_ROOT, capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
    times["total"] = sum(times[s] for s in STEPS)
    return times


def render(rounds: list[dict[str, float]], machine: dict[str, str]) -> str:
    lines = [
        "# Time to a first result on the local stack (README: up, train, evaluate)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: "
        + "; ".join(f"{k} {v}" for k, v in machine.items())
        + f". Load average before: {Path('/proc/loadavg').read_text().split()[:3]}.",
        "",
        "| round | up (s) | train (s) | evaluate (s) | total (s) |",
        "|---|---|---|---|---|",
    ]
    for index, r in enumerate(rounds, 1):
        label = f"{index} (cold)" if index == 1 and len(rounds) > 1 else str(index)
        lines.append(
            f"| {label} | {r['up']:.1f} | {r['train']:.1f} | {r['evaluate']:.1f} | {r['total']:.1f} |"
        )
    warm = rounds[1:] or rounds
    median = {k: statistics.median(r[k] for r in warm) for k in (*STEPS, "total")}
    lines.append(
        f"| **median, warm** | {median['up']:.1f} | {median['train']:.1f} | {median['evaluate']:.1f} "
        f"| **{median['total']:.1f}** |"
    )
    verdict = "met" if median["total"] <= TARGET_SECONDS else "NOT met"
    lines += [
        "",
        f"Target of issue 12: up + train + evaluate ≤ {TARGET_SECONDS:.0f} s on a warm machine: "
        f"{median['total']:.1f} s, {verdict}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.first_result", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--output", type=Path, help=f"report (default {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})"
    )
    args = parser.parse_args(argv)

    rounds = [one_round(log) for _ in range(args.rounds)]
    report = render(rounds, machine_info())
    output = args.output or DEFAULT_OUTPUT
    write_report(output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
