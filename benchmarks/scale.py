"""Experiments at scale: how the UI's experiment page and a long metric history cost as an experiment grows.

    .venv/bin/python -m benchmarks.scale            # ~12 min; writes benchmarks/results/scale.md
    .venv/bin/python -m benchmarks.scale --smoke    # tiny sizes: proves it runs (CI)

On the local stack (MariaDB, Azurite, the chart's server), one experiment gets runs of 20 params and 10
metrics each, written with MLflow's own SQL store (what the server writes for `create_run` and
`log_batch`), plus one run whose metric `loss` has 100,000 points. At 1,000 runs and again at 10,000 it
measures, with the server as the chart runs it (`project`) and with MLflow's defaults (`baseline`, the
same variant as benchmarks/tracking_server.py):

- **the experiment page**: `POST /ajax-api/2.0/mlflow/runs/search` as the UI sends it: newest first,
  100 per page, filtered on a param and a metric (`params.p00 = 'a' and metrics.m00 > 0.5`, about 1
  run in 8);
- **the long metric**: `MlflowClient.get_metric_history` of the 100,000 points, all pages;
- the database's size (data and indexes, from information_schema);
- the time to back both databases up and to restore that backup (the recovery time a restore costs).

Requests log in as the chart's non-admin run user. Each query runs 3 unmeasured times, then `--repeat`
times (30; 5 for the long history); the report gives p50 and p95 (nearest rank), the growth from 1,000 to
10,000 runs, and the goal of issue 12: the page query's p95 grows less than 2x.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import log, new_stack, write_report
from benchmarks.tracking_server import REPO_ROOT, build_variants, machine_info, start_variant
from local import LocalStack
from local.procs import stop

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "scale.md"
PARAMS, METRICS = 20, 10
PAGE = {
    "filter": "params.p00 = 'a' and metrics.m00 > 0.5",
    "max_results": 100,
    "order_by": ["attributes.start_time DESC"],
}
GOAL_GROWTH = 2.0


@dataclass
class Point:
    runs: int
    db_mib: float = 0.0
    backup_s: float = 0.0
    backup_mib: float = 0.0
    restore_s: float = 0.0
    page: dict[str, list[float]] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _store(stack: LocalStack):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = stack.database_settings()
    uri = f"mysql+pymysql://{db['user']}:{db['password']}@{db['host']}:{db['port']}/{db['database']}"
    return SqlAlchemyStore(uri, stack.artifacts_destination)


def seed_runs(store, experiment_id: str, start: int, count: int, rng: random.Random) -> None:
    """Runs `start`..`start+count-1`: p00 one of a-d (a filter of 1 in 4), other params unique values."""
    from mlflow.entities import Metric, Param

    base = int(time.time() * 1000)
    for index in range(start, start + count):
        run = store.create_run(experiment_id, "runner", base + index, [], f"run-{index:05d}")
        params = [Param("p00", rng.choice("abcd"))] + [
            Param(f"p{j:02d}", f"{rng.random():.6f}") for j in range(1, PARAMS)
        ]
        metrics = [Metric(f"m{j:02d}", rng.random(), base + index, 0) for j in range(METRICS)]
        store.log_batch(run.info.run_id, metrics, params, [])


def seed_long_metric(store, experiment_id: str, points: int) -> str:
    from mlflow.entities import Metric

    run = store.create_run(experiment_id, "runner", int(time.time() * 1000), [], "long-history")
    base = int(time.time() * 1000)
    for start in range(0, points, 1000):
        batch = [
            Metric("loss", 1.0 / (1 + step), base + step, step)
            for step in range(start, min(points, start + 1000))
        ]
        store.log_batch(run.info.run_id, batch, [], [])
    return run.info.run_id


def db_size_mib(stack: LocalStack) -> float:
    import pymysql

    settings = stack.database_settings()
    with contextlib.closing(pymysql.connect(**settings)) as conn, conn.cursor() as cursor:
        cursor.execute("ANALYZE TABLE runs, params, metrics, latest_metrics, tags")
        cursor.fetchall()
        cursor.execute(
            "SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = %s",
            (settings["database"],),
        )
        return float(cursor.fetchone()[0]) / (1024 * 1024)


def measure(stack: LocalStack, experiment_id: str, long_run: str, repeat: int, history_repeat: int):
    import httpx
    from mlflow.tracking import MlflowClient

    user, password = stack.run_credentials()
    page = []
    with httpx.Client(base_url=stack.tracking_uri, auth=(user, password), timeout=300) as http:
        body = {**PAGE, "experiment_ids": [experiment_id]}
        for attempt in range(3 + repeat):
            started = time.perf_counter()
            answer = http.post("/ajax-api/2.0/mlflow/runs/search", json=body)
            elapsed = time.perf_counter() - started
            if answer.status_code != 200 or len(answer.json().get("runs", [])) == 0:
                raise SystemExit(f"scale: the page query failed: {answer.status_code} {answer.text[:300]}")
            if attempt >= 3:
                page.append(elapsed)
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    client = MlflowClient(stack.tracking_uri)
    history = []
    for attempt in range(1 + history_repeat):
        started = time.perf_counter()
        points = client.get_metric_history(long_run, "loss")
        elapsed = time.perf_counter() - started
        if attempt >= 1:
            history.append(elapsed)
    return page, history, len(points)


def render(
    points: list[Point], history_points: int, machine: dict[str, str], elapsed: float, smoke: bool
) -> str:
    lines = [
        "# Experiments at scale: the experiment page and a long metric history",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.0f} s"
        + (" (smoke: tiny sizes, figures mean nothing)" if smoke else "")
        + ". Machine: "
        + "; ".join(f"{k} {v}" for k, v in machine.items())
        + ".",
        "",
        f"Page query: {PAGE}. Long metric: {history_points:,} points. Times in ms, p50 / p95.",
        "",
        "| runs | database (MiB) | page, baseline | page, project | long history, baseline "
        "| long history, project |",
        "|---|---|---|---|---|---|",
    ]

    def cell(values: list[float]) -> str:
        return f"{percentile(values, 0.5) * 1000:.0f} / {percentile(values, 0.95) * 1000:.0f}"

    for p in points:
        lines.append(
            f"| {p.runs:,} | {p.db_mib:.0f} | {cell(p.page['baseline'])} | {cell(p.page['project'])} "
            f"| {cell(p.history['baseline'])} | {cell(p.history['project'])} |"
        )
    lines += [
        "",
        "Backup and restore (RTO), on the same data: `python -m local backup`, then `restore` of it, which",
        "checks it, backs up what is there, replaces both databases and counts the rows again.",
        "",
        "| runs | backup (s) | backup size (MiB, gzip) | restore (s) |",
        "|---|---|---|---|",
    ]
    for p in points:
        lines.append(f"| {p.runs:,} | {p.backup_s:.1f} | {p.backup_mib:.1f} | {p.restore_s:.1f} |")
    if len(points) >= 2:
        first, last = points[0], points[-1]
        lines += ["", f"Growth from {first.runs:,} to {last.runs:,} runs (p95, last / first):", ""]
        for variant in ("baseline", "project"):
            page = percentile(last.page[variant], 0.95) / percentile(first.page[variant], 0.95)
            history = percentile(last.history[variant], 0.95) / percentile(first.history[variant], 0.95)
            lines.append(f"- {variant}: page query {page:.2f}x, long metric history {history:.2f}x")
        growth = percentile(last.page["project"], 0.95) / percentile(first.page["project"], 0.95)
        verdict = "met" if growth < GOAL_GROWTH else "NOT met"
        lines += [
            "",
            f"Goal of issue 12: the page query's p95 grows less than {GOAL_GROWTH:.0f}x: "
            f"{growth:.2f}x, {verdict}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the benchmark runs")
    parser.add_argument("--runs", default="1000,10000", help="experiment sizes to measure at, ascending")
    parser.add_argument("--history-points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--output", type=Path, help=f"report (default {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})"
    )
    parser.add_argument(
        "--workdir", type=Path, help="stack directory (default: a new temporary one, removed)"
    )
    args = parser.parse_args(argv)
    sizes = [20] if args.smoke else [int(n) for n in args.runs.split(",")]
    history_points = 500 if args.smoke else args.history_points
    repeat, history_repeat = (2, 1) if args.smoke else (args.repeat, 5)
    output = args.output or (DEFAULT_OUTPUT.with_name("scale-smoke.md.tmp") if args.smoke else DEFAULT_OUTPUT)

    workdir, stack = new_stack("mlflow-aks-scale-", args.workdir)
    started, points = time.monotonic(), []
    rng = random.Random(12)  # noqa: S311 - test data, the same every run
    try:
        log(f"starting the local stack under {workdir}")
        stack.start()
        store = _store(stack)
        experiment_id = store.create_experiment(f"scale-{int(time.time())}")
        log(f"seeding one run with {history_points:,} points of one metric")
        long_run = seed_long_metric(store, experiment_id, history_points)
        stack.stop_server()
        spec = stack.server_spec()
        variants = build_variants(
            spec.main.argv, dict(spec.main.env), spec.main.cwd, ["baseline", "project"], []
        )
        rundir = workdir / "servers"
        rundir.mkdir(exist_ok=True)
        seeded = 0
        for size in sizes:
            log(f"seeding runs {seeded:,}..{size - 1:,}")
            seed_runs(store, experiment_id, seeded, size - seeded, rng)
            seeded = size
            point = Point(size, db_size_mib(stack))
            for variant in variants:
                proc, _ = start_variant(variant, stack, rundir, 300)
                try:
                    page, history, count = measure(stack, experiment_id, long_run, repeat, history_repeat)
                finally:
                    stop(proc, timeout=30)
                point.page[variant.name], point.history[variant.name] = page, history
                log(f"{size:,} runs, {variant.name}: page p95 {percentile(page, 0.95) * 1000:.0f} ms, "
                    f"history p95 {percentile(history, 0.95) * 1000:.0f} ms ({count:,} points)")  # fmt: skip
            log(
                f"{size:,} runs: backup, then restore (the chart's backup CronJob, `python -m local restore`)"
            )
            started_backup = time.perf_counter()
            taken = stack.backup()
            point.backup_s, point.backup_mib = (
                time.perf_counter() - started_backup,
                int(taken["bytes"]) / 2**20,
            )
            started_restore = time.perf_counter()
            stack.restore(taken["name"])  # check, safety backup, replace, count: the whole restore
            point.restore_s = time.perf_counter() - started_restore
            points.append(point)
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report = render(points, history_points, machine_info(), time.monotonic() - started, args.smoke)
    write_report(output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
