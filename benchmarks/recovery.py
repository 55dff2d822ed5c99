"""Recovery on the bad day: how long a restore takes until the server serves again (RTO), and how much is
lost (RPO), at the size of issue 12's test case.

    .venv/bin/python -m benchmarks.recovery            # ~6 min; writes benchmarks/results/recovery.md
    .venv/bin/python -m benchmarks.recovery --smoke    # tiny sizes: proves it runs (CI)

On the local stack (MariaDB with binary logs, Azurite, the chart's server): one experiment of 10,000 runs
of 20 params and 10 metrics each, plus one run whose metric `loss` has 100,000 points (seeded in bulk
into MLflow's tables, as benchmarks/scale.py does). Then:

1. a backup (`python -m local backup`, the chart's backup CronJob);
2. clients keep logging (`log_batch` of 100 metrics, one client) while the binary logs are shipped
   every `--ship-seconds` (the chart's binlog CronJob, time compressed), and a time T is noted halfway;
3. the disaster: both databases dropped;
4. `restore --to T` (`python -m local restore --to`): the backup, then the shipped logs up to T, until the
   server answers again. Every batch acknowledged before T must be back and none sent after it;
5. `restore latest` of the same backup, for the time a full restore takes without logs to replay.

Each restore's time runs from the command to the server serving again (the local stack's restore ends
with the server ready). On the cluster add scaling the server down and up and the transfers from Azure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import log, new_stack, write_report
from benchmarks.scale import _store, db_size_mib, seed_long_metric, seed_runs
from benchmarks.tracking_server import REPO_ROOT, machine_info
from local import mariadb

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "recovery.md"


def log_batches(client, run_id: str, stop: threading.Event, logged: list) -> None:
    """Batches of 100 metrics, one after the other, each recorded with when it was sent and acknowledged."""
    from mlflow.entities import Metric

    step = 0
    while not stop.is_set():
        sent = time.time()
        client.log_batch(
            run_id, metrics=[Metric(f"k{i:02d}", float(step), int(sent * 1000), step) for i in range(100)]
        )
        logged.append((step, sent, time.time()))
        step += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.recovery", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the benchmark runs")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--history-points", type=int, default=100_000)
    parser.add_argument("--ship-seconds", type=float, default=5.0, help="the shipping interval, compressed")
    parser.add_argument("--window-seconds", type=float, default=60.0, help="how long clients log")
    parser.add_argument(
        "--output", type=Path, help=f"report (default {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})"
    )
    parser.add_argument(
        "--workdir", type=Path, help="stack directory (default: a new temporary one, removed)"
    )
    args = parser.parse_args(argv)
    runs, points = (20, 500) if args.smoke else (args.runs, args.history_points)
    ship, window = (1.0, 4.0) if args.smoke else (args.ship_seconds, args.window_seconds)
    output = args.output or (
        DEFAULT_OUTPUT.with_name("recovery-smoke.md.tmp") if args.smoke else DEFAULT_OUTPUT
    )

    workdir, stack = new_stack("mlflow-aks-recovery-", args.workdir)
    started = time.monotonic()
    try:
        log(f"starting the local stack under {workdir}")
        stack.start()
        store = _store(stack)
        experiment_id = store.create_experiment(f"recovery-{int(time.time())}")
        log(f"seeding {runs:,} runs and one metric of {points:,} points")
        db = stack.database_settings()
        seed_long_metric(store, db, experiment_id, points)
        artifact_root = store.get_experiment(experiment_id).artifact_location.rsplit("/", 1)[0]
        seed_runs(db, experiment_id, artifact_root, 0, runs, 1, random.Random(12))  # noqa: S311 - test data
        size = db_size_mib(stack)
        log("backup")
        begun = time.perf_counter()
        taken = stack.backup()
        backup_s = time.perf_counter() - begun

        from mlflow.tracking import MlflowClient

        os.environ.update(stack.client_env())
        client = MlflowClient(stack.tracking_uri)
        run_id = client.create_run(experiment_id).info.run_id
        logged: list[tuple[int, float, float]] = []
        stop = threading.Event()
        writer = threading.Thread(target=log_batches, args=(client, run_id, stop, logged))
        log(f"logging for {window:.0f} s, shipping the binary logs every {ship:.0f} s")
        writer.start()
        shipped_logs = 0
        target = None
        try:
            end = time.time() + window
            while time.time() < end:
                time.sleep(ship)
                shipped_logs += len(stack.ship_binlogs()["shipped"])
                if target is None and time.time() >= end - window / 2:
                    target = float(int(time.time()) + 1)  # T, on a whole second
        finally:
            stop.set()
            writer.join()
        shipped_logs += len(stack.ship_binlogs()["shipped"])
        assert target is not None
        log_bytes = sum(
            path.stat().st_size for path in (stack.workdir / "mariadb" / "data").glob("binlog.[0-9]*")
        )

        log("the disaster: both databases dropped")
        c = stack.config
        mariadb.sql(
            mariadb.MariaDBPaths(stack.workdir / "mariadb"),
            f"DROP DATABASE `{c.database}`; DROP DATABASE `{c.auth_database}`;",
        )
        to = datetime.datetime.fromtimestamp(target, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        log(f"restore --to {to}")
        begun = time.perf_counter()
        point = stack.restore(to=to)
        point_s = time.perf_counter() - begun
        steps = {int(m.step) for m in client.get_metric_history(run_id, "k00")}
        before = {step for step, _, acked in logged if acked < target}
        after = {step for step, sent, _ in logged if sent >= target}
        if not before <= steps or steps & after:
            raise SystemExit(
                f"recovery: wrong data after restore --to: {len(before - steps)} acknowledged batches "
                f"missing, {len(steps & after)} later ones present"
            )
        log("restore latest (the same backup, nothing to replay)")
        begun = time.perf_counter()
        full = stack.restore(taken["name"])
        full_s = time.perf_counter() - begun
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.monotonic() - started
    report = (
        "\n".join(
            [
                "# Recovery: RTO and RPO",
                "",
                f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.0f} s"
                + (" (smoke: tiny sizes, figures mean nothing)" if args.smoke else "")
                + ". Machine: "
                + "; ".join(f"{k} {v}" for k, v in machine_info().items())
                + ".",
                "",
                f"Data: {runs:,} runs of 20 params and 10 metrics, one metric of {points:,} points: "
                f"{size:.0f} MiB in MariaDB; the backup {int(taken['bytes']) / 2**20:.1f} MiB (gzip), taken "
                f"in {backup_s:.1f} s.",
                "",
                f"Then {len(logged):,} batches of 100 metrics logged over {window:.0f} s, binary logs "
                f"shipped every {ship:.0f} s ({shipped_logs} logs, {log_bytes / 2**20:.1f} MiB written in "
                "all); T halfway.",
                "",
                "| restore | over | until the server serves again (s) | what comes back |",
                "|---|---|---|---|",
                f"| `restore --to T` (backup + binary logs up to T) | dropped databases (nothing to keep) "
                f"| {point_s:.1f} | every one of the {len(before):,} batches acknowledged before T, none of "
                f"the {len(after):,} sent after |",
                f"| `restore latest` (the backup alone) | the databases just restored (a safety backup "
                f"first) | {full_s:.1f} | {full['runs']:,} runs, {full['rows']:,} rows |",
                "",
                "RPO: what was written after the last shipped log; the shipping interval "
                "(`binlogShipMinutes`, 5 minutes by default) bounds it. Here every batch acknowledged before "
                "T was shipped in time.",
                f"Point-in-time restore details: {point.get('point_in_time')}",
            ]
        )
        + "\n"
    )
    write_report(output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
