"""Experiments at scale: the experiment page as MLflow's UI loads it, long metric histories, bulk writes.

    .venv/bin/python -m benchmarks.scale            # 10,000 and 100,000 runs -> benchmarks/results/scale.md
    .venv/bin/python -m benchmarks.scale --smoke    # tiny sizes: proves it runs (CI)

On the local stack (MariaDB, Azurite, the chart's server), one experiment gets runs of 20 params and 10
metrics, each metric logged at `--steps` steps (so the UI draws line charts), written straight into
MLflow's tables with bulk SQL (the rows `create_run` and `log_batch` write: runs, tags, params, metrics,
latest_metrics); plus one run whose metric `loss` has 100,000 points. At each size it measures, with the
server as the chart runs it (`project`) and with MLflow's defaults (`baseline`, the same variant as
benchmarks/tracking_server.py), in the same run:

- **the experiment page** (`page_first_calls`, `chart_calls`): the calls MLflow 3.17.2's UI makes to
  open an experiment in its chart view, made as a browser does (6 connections): the experiment, the runs
  table's search, the logged models, then each line chart's sampled history of the first 10 runs. A page
  load is timed from the first request to the last answer;
- the same page **filtered** on a param and a metric (`FILTER`, about 1 run in 8);
- **the long metric**: `MlflowClient.get_metric_history` of the 100,000 points, the raw `get-history`
  request (the server's part), and the UI's sampled chart call for it (`get-history-bulk-interval`, 320
  points);
- **bulk writes**: `log_batch` of 1,000 metrics (10 keys x 100 steps) into one run;
- **statements per write**: MariaDB's counters (commits, statements, rows written, fsyncs) over 200
  `log_metric` and 50 `log_batch` requests, per request (docs/performance.md derives capacity from them);
- the database's size, and the time to back it up and restore that backup;
- with `--sign-in`, the page again on the chart's server in single sign-on mode (mlflow-oidc-auth, the
  local OpenID provider), signed in with a run Job's ServiceAccount token.

Requests log in as the chart's non-admin run user. Each measure runs 3 unmeasured times, then
`--repeat` times (20; 3 for the full long history); the report gives p50 and p95 (nearest rank), the
ratios to the baseline, and issue 20's targets with whether each was met.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import queue
import random
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import log, new_stack, write_report
from benchmarks.procs import tree_cpu_seconds
from benchmarks.tracking_server import (
    REPO_ROOT,
    SIGN_IN,
    build_variants,
    machine_info,
    sign_in_variant,
    start_variant,
)
from local import LocalStack
from local.procs import stop

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "scale.md"
PARAMS, METRICS = 20, 10
AJAX = "/ajax-api/2.0/mlflow"

# What MLflow 3.17.2's UI sends to open an experiment (mlflow/server/js, built into
# mlflow/server/js/build/static/js of the wheel):
# - experiments/get: the page's header (ExperimentPage, getExperimentApi);
# - runs/search: the runs table. createSearchRunsParams (experimentPage.fetch-utils.ts) with the default
#   facets: order by ATTRIBUTE_COLUMN_SORT_KEY.DATE descending, ACTIVE_ONLY, max_results
#   RUNS_SEARCH_MAX_RESULTS = 100 (experiment-tracking/actions.ts), no filter;
# - logged-models/search: the table's "Models" column (useLoggedModelsForExperimentRunsTable ->
#   useSearchLoggedModelsQuery: order_by creation_time descending, first page);
# - metrics/get-history-bulk-interval: one per line chart (useSampledMetricHistory, chunks of 100 runs,
#   maxResults 320, RunsChartsLineChartCard). Charts show the first 10 runs (RUNS_VISIBILITY_MODE
#   FIRST_10_RUNS), and a metric gets a line chart when a run logged it at a step > 0
#   (RunsChartsCardConfig.getBaseChartAndSectionConfigs), else a bar chart that needs no call.
UI_PAGE_SIZE = 100
UI_ORDER_BY = ["attributes.start_time DESC"]
UI_CHART_RUNS = 10
UI_CHART_POINTS = 320
# Browsers open at most 6 connections per host over HTTP/1.1.
BROWSER_CONNECTIONS = 6
FILTER = "params.p00 = 'a' and metrics.m00 > 0.5"
LONG_METRIC = "loss"
BATCH_KEYS, BATCH_STEPS = 10, 100  # log_batch of 1,000 metrics

# Issue 20's targets.
PAGE_P95_MS = {10_000: 150.0, 100_000: 300.0}
PAGE_FACTOR = 5.0
HISTORY_S, HISTORY_FACTOR = 1.0, 8.0
LONG_INTERVAL_MS = 150.0
LOG_BATCH_P95_MS = 50.0


@dataclass
class Point:
    runs: int
    db_mib: float = 0.0
    backup_s: float = float("nan")
    backup_mib: float = float("nan")
    restore_s: float = float("nan")
    # measure -> variant -> seconds
    times: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # variant -> counter -> per request, for "log_metric" and "log_batch"
    statements: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    calls: int = 0
    # With --sign-in: the page measures of the chart's server in single sign-on mode (measure -> seconds).
    sign_in: dict[str, list[float]] = field(default_factory=dict)


MEASURES = (
    ("page", "experiment page (UI calls)"),
    ("filtered", "experiment page, filtered"),
    ("search", "runs/search alone"),
    ("history", "long history, MlflowClient.get_metric_history (all points)"),
    ("history_http", "long history, GET get-history (all points, the server's part)"),
    ("long_interval", "long history, UI chart call (320 points)"),
    ("log_batch", "log_batch, 1,000 metrics"),
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _store(stack: LocalStack):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = stack.database_settings()
    uri = f"mysql+pymysql://{db['user']}:{db['password']}@{db['host']}:{db['port']}/{db['database']}"
    return SqlAlchemyStore(uri, stack.artifacts_destination)


# ---------------------------------------------------------------------------------------- seeding


def seed_runs(
    db: dict, experiment_id: str, artifact_root: str, start: int, count: int, steps: int, rng: random.Random
) -> None:
    """Runs `start`..`start+count-1`, newest last, as MLflow stores them, inserted in bulk.

    p00 is one of a-d (a filter of 1 in 4), the other params unique values; each metric mNN has `steps`
    points (steps 0..steps-1), the last one in latest_metrics, as MLflow's log_batch leaves them.
    """
    import pymysql

    base = 1_700_000_000_000
    chunk = 2000
    with contextlib.closing(pymysql.connect(**db, autocommit=False)) as conn, conn.cursor() as cursor:
        # Bulk load of rows that are consistent by construction (the benchmark's own data).
        cursor.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0")
        for low in range(start, start + count, chunk):
            runs, tags, params, metrics, latest = [], [], [], [], []
            for index in range(low, min(start + count, low + chunk)):
                run_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
                started, name = base + index * 1000, f"run-{index:06d}"
                runs.append(
                    (run_id, name, "LOCAL", "", "", "runner", "FINISHED", started, started + 60_000, "",
                     "active", f"{artifact_root}/{experiment_id}/{run_id}/artifacts", experiment_id)
                )  # fmt: skip
                tags += [("mlflow.runName", name, run_id), ("mlflow.user", "runner", run_id)]
                params.append(("p00", rng.choice("abcd"), run_id))
                params += [(f"p{j:02d}", f"{rng.random():.6f}", run_id) for j in range(1, PARAMS)]
                for j in range(METRICS):
                    value = 0.0
                    for step in range(steps):
                        value = rng.random()
                        metrics.append((f"m{j:02d}", value, started + step, run_id, step, 0))
                    latest.append((f"m{j:02d}", value, started + steps - 1, steps - 1, 0, run_id))
            cursor.executemany(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id,"
                " status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                runs,
            )
            cursor.executemany("INSERT INTO tags (`key`, value, run_uuid) VALUES (%s, %s, %s)", tags)
            cursor.executemany("INSERT INTO params (`key`, value, run_uuid) VALUES (%s, %s, %s)", params)
            _insert_metrics(cursor, metrics)
            cursor.executemany(
                "INSERT INTO latest_metrics (`key`, value, timestamp, step, is_nan, run_uuid)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                latest,
            )
            conn.commit()


def _insert_metrics(cursor, rows: list[tuple]) -> None:
    cursor.executemany(
        "INSERT INTO metrics (`key`, value, timestamp, run_uuid, step, is_nan)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        rows,
    )


def seed_long_metric(store, db: dict, experiment_id: str, points: int) -> str:
    """One run (created through the store) whose metric `loss` has `points` points, inserted in bulk."""
    import pymysql

    run = store.create_run(experiment_id, "runner", int(time.time() * 1000), [], "long-history")
    run_id, base = run.info.run_id, int(time.time() * 1000)
    rows = [(LONG_METRIC, 1.0 / (1 + step), base + step, run_id, step, 0) for step in range(points)]
    with contextlib.closing(pymysql.connect(**db, autocommit=False)) as conn, conn.cursor() as cursor:
        for low in range(0, points, 10_000):
            _insert_metrics(cursor, rows[low : low + 10_000])
        last = rows[-1]
        cursor.execute(
            "INSERT INTO latest_metrics (`key`, value, timestamp, step, is_nan, run_uuid)"
            " VALUES (%s, %s, %s, %s, 0, %s)",
            (LONG_METRIC, last[1], last[2], last[4], run_id),
        )
        conn.commit()
    return run_id


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


# ---------------------------------------------------------------------------------------- the UI's calls


def page_first_calls(experiment_id: str, filter_string: str | None) -> list[tuple[str, str, dict]]:
    """The calls the page makes at once on opening: (method, path, params or JSON body)."""
    search = {
        "experiment_ids": [experiment_id],
        "run_view_type": "ACTIVE_ONLY",
        "max_results": UI_PAGE_SIZE,
        "order_by": UI_ORDER_BY,
    }
    if filter_string:
        search["filter"] = filter_string
    return [
        ("GET", f"{AJAX}/experiments/get", {"experiment_id": experiment_id}),
        ("POST", f"{AJAX}/runs/search", search),
        (
            "POST",
            f"{AJAX}/logged-models/search",
            {
                "experiment_ids": [experiment_id],
                "order_by": [{"field_name": "creation_time", "ascending": False}],
            },
        ),
    ]


def chart_calls(runs: list[dict]) -> list[tuple[str, str, dict]]:
    """One sampled-history call per line chart, for the first UI_CHART_RUNS runs of the table."""
    shown = runs[:UI_CHART_RUNS]
    line_keys = sorted(
        {m["key"] for run in shown for m in run.get("data", {}).get("metrics", []) if m.get("step", 0) > 0}
    )
    run_ids = [run["info"]["run_id"] for run in shown]
    return [
        (
            "GET",
            f"{AJAX}/metrics/get-history-bulk-interval",
            {"run_ids": run_ids, "metric_key": key, "max_results": UI_CHART_POINTS},
        )
        for key in line_keys
    ]


class Browser:
    """BROWSER_CONNECTIONS kept-alive connections, used at once for a page's parallel calls."""

    def __init__(self, base_url: str, auth: tuple[str, str] | None, headers: dict[str, str] | None = None):
        import httpx

        self.clients: queue.Queue = queue.Queue()
        for _ in range(BROWSER_CONNECTIONS):
            self.clients.put(httpx.Client(base_url=base_url, auth=auth, headers=headers, timeout=600))
        self.pool = ThreadPoolExecutor(BROWSER_CONNECTIONS)

    def call(self, method: str, path: str, data: dict) -> dict:
        client = self.clients.get()
        try:
            answer = client.get(path, params=data) if method == "GET" else client.post(path, json=data)
        finally:
            self.clients.put(client)
        if answer.status_code != 200:
            raise SystemExit(f"scale: {method} {path} -> {answer.status_code} {answer.text[:300]}")
        return answer.json()

    def all(self, calls: list[tuple[str, str, dict]]) -> list[dict]:
        return list(self.pool.map(lambda call: self.call(*call), calls))

    def page(self, experiment_id: str, filter_string: str | None) -> tuple[float, int]:
        """One page load: seconds from the first request to the last answer, and the number of calls."""
        started = time.perf_counter()
        first = self.all(page_first_calls(experiment_id, filter_string))
        runs = first[1].get("runs", [])
        if not runs and not filter_string:
            raise SystemExit(f"scale: the page's runs search returned no runs: {first[1]}")
        charts = chart_calls(runs)
        self.all(charts)
        return time.perf_counter() - started, len(first) + len(charts)

    def close(self) -> None:
        self.pool.shutdown()
        while not self.clients.empty():
            self.clients.get().close()


def timed(repeat: int, warmup: int, action) -> list[float]:
    times = []
    for attempt in range(warmup + repeat):
        started = time.perf_counter()
        action()
        if attempt >= warmup:
            times.append(time.perf_counter() - started)
    return times


def batch_body(run_id: str, request: int) -> dict:
    now = int(time.time() * 1000)
    return {
        "run_id": run_id,
        "metrics": [
            {
                "key": f"train/k{k}",
                "value": 1.0 / (1 + step),
                "timestamp": now,
                "step": request * BATCH_STEPS + step,
            }
            for k in range(BATCH_KEYS)
            for step in range(BATCH_STEPS)
        ],
    }


# MariaDB status counters read around the write loads (SHOW GLOBAL STATUS).
COUNTERS = (
    "Com_commit",
    "Questions",
    "Handler_write",
    "Handler_update",
    "Innodb_data_fsyncs",
    "Innodb_data_written",
)


def status(db: dict) -> dict[str, int]:
    import pymysql

    with contextlib.closing(pymysql.connect(**db)) as conn, conn.cursor() as cursor:
        cursor.execute("SHOW GLOBAL STATUS")
        return {name: int(value) for name, value in cursor.fetchall() if name in COUNTERS}


def statements_per_request(db: dict, count: int, request) -> dict[str, float]:
    before = status(db)
    for index in range(count):
        request(index)
    after = status(db)
    # Less the two SHOW GLOBAL STATUS of this measure, counted in Questions.
    return {
        name: (after[name] - before[name] - (2 if name == "Questions" else 0)) / count for name in COUNTERS
    }


def measure_page(
    browser: Browser, experiment_id: str, repeat: int, calls: list[int], server_pid: int
) -> dict[str, list[float]]:
    """The experiment page, the filtered page and the runs search alone, through `browser`; and the CPU
    time the server (all its processes) spent per page load (`page_cpu`, one value)."""
    cpu = tree_cpu_seconds(server_pid)
    times = {"page": timed(repeat, 3, lambda: calls.append(browser.page(experiment_id, None)[1]))}
    times["page_cpu"] = [(tree_cpu_seconds(server_pid) - cpu) / (repeat + 3)]
    times["filtered"] = timed(repeat, 3, lambda: browser.page(experiment_id, FILTER))
    search = page_first_calls(experiment_id, None)[1]
    times["search"] = timed(repeat, 3, lambda: browser.call(*search))
    return times


def measure(
    stack: LocalStack, experiment_id: str, long_run: str, repeat: int, smoke: bool, server_pid: int
) -> tuple:
    import httpx
    from mlflow.tracking import MlflowClient

    user, password = stack.run_credentials()
    auth = (user, password)
    browser = Browser(stack.tracking_uri, auth)
    calls: list[int] = []
    try:
        times = measure_page(browser, experiment_id, repeat, calls, server_pid)
        query = {"run_ids": [long_run], "metric_key": LONG_METRIC, "max_results": UI_CHART_POINTS}
        interval = ("GET", f"{AJAX}/metrics/get-history-bulk-interval", query)
        times["long_interval"] = timed(repeat, 3, lambda: browser.call(*interval))
        history = ("GET", f"{AJAX}/metrics/get-history", {"run_id": long_run, "metric_key": LONG_METRIC})
        times["history_http"] = timed(1 if smoke else 3, 1, lambda: browser.call(*history))
    finally:
        browser.close()
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    client = MlflowClient(stack.tracking_uri)
    points: list[int] = []
    times["history"] = timed(
        1 if smoke else 3, 1, lambda: points.append(len(client.get_metric_history(long_run, LONG_METRIC)))
    )
    db = stack.database_settings()
    statements = {}
    with httpx.Client(base_url=stack.tracking_uri, auth=auth, timeout=120) as http:

        def post(path: str, body: dict) -> None:
            answer = http.post(f"/api/2.0/mlflow/{path}", json=body)
            if answer.status_code != 200:
                raise SystemExit(f"scale: {path} -> {answer.status_code} {answer.text[:300]}")

        # The writes go to an experiment of the run user's own (its creator may write to it), apart from
        # the page's runs.
        answer = http.post(
            "/api/2.0/mlflow/experiments/create", json={"name": f"scale-writes-{uuid.uuid4().hex}"}
        )
        writes_experiment_id = answer.json()["experiment_id"]

        def new_run(name: str) -> str:
            answer = http.post(
                "/api/2.0/mlflow/runs/create",
                json={
                    "experiment_id": writes_experiment_id,
                    "start_time": int(time.time() * 1000),
                    "run_name": name,
                },
            )
            return answer.json()["run"]["info"]["run_id"]

        batch_run = new_run("bulk-writes")
        counter = iter(range(10**9))
        times["log_batch"] = timed(
            repeat, 3, lambda: post("runs/log-batch", batch_body(batch_run, next(counter)))
        )
        metric_run = new_run("statements")
        statements["log_metric"] = statements_per_request(
            db,
            20 if smoke else 200,
            lambda i: post(
                "runs/log-metric",
                {"run_id": metric_run, "key": "loss", "value": 1.0 / (1 + i), "timestamp": 1, "step": i},
            ),
        )
        statements["log_batch"] = statements_per_request(
            db, 5 if smoke else 50, lambda i: post("runs/log-batch", batch_body(metric_run, 10_000 + i))
        )
    return times, statements, points[-1], calls[-1]


# ---------------------------------------------------------------------------------------- report


def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def cell(values: list[float]) -> str:
    return f"{ms(values, 0.5):.0f} / {ms(values, 0.95):.0f}"


def targets(point: Point) -> list[tuple[str, bool, str]]:
    """Issue 20's targets at one size, each with whether this run met it."""
    t = point.times
    checks = []
    bound = PAGE_P95_MS.get(point.runs)
    for measure, title in (("page", "experiment page"), ("filtered", "filtered experiment page")):
        p95, base = ms(t[measure]["project"], 0.95), ms(t[measure]["baseline"], 0.95)
        if bound is not None:
            checks.append((f"{title} p95 ≤ {bound:.0f} ms", p95 <= bound, f"{p95:.0f} ms"))
        checks.append(
            (f"{title} ≥ {PAGE_FACTOR:.0f}x baseline (p95)", base / p95 >= PAGE_FACTOR, f"{base / p95:.1f}x")
        )
    # `get-history` as the issue names it, the server's answer; and MLflow's client call around it, which
    # adds the client's own decoding of the points (docs/performance.md).
    for measure, title in (("history_http", "get-history answer"), ("history", "MlflowClient call")):
        history = percentile(t[measure]["project"], 0.5)
        base = percentile(t[measure]["baseline"], 0.5)
        checks.append(
            (f"long history, {title} ≤ {HISTORY_S:.0f} s (p50)", history <= HISTORY_S, f"{history:.2f} s")
        )
        checks.append(
            (
                f"long history, {title} ≥ {HISTORY_FACTOR:.0f}x baseline (p50)",
                base / history >= HISTORY_FACTOR,
                f"{base / history:.1f}x",
            )
        )
    interval = ms(t["long_interval"]["project"], 0.95)
    checks.append(
        (
            f"long history chart call p95 ≤ {LONG_INTERVAL_MS:.0f} ms",
            interval <= LONG_INTERVAL_MS,
            f"{interval:.0f} ms",
        )
    )
    batch = ms(t["log_batch"]["project"], 0.95)
    checks.append(
        (
            f"log_batch of 1,000 metrics p95 ≤ {LOG_BATCH_P95_MS:.0f} ms",
            batch <= LOG_BATCH_P95_MS,
            f"{batch:.0f} ms",
        )
    )
    return checks


def render(points: list[Point], args, machine: dict[str, str], elapsed: float, smoke: bool) -> str:
    lines = [
        "# Experiments at scale: the experiment page, long metric histories, bulk writes",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.0f} s"
        + (" (smoke: tiny sizes, figures mean nothing)" if smoke else "")
        + ". Machine: "
        + "; ".join(f"{k} {v}" for k, v in machine.items())
        + ".",
        "",
        f"Runs of {PARAMS} params and {METRICS} metrics, each metric logged at {args.steps} steps. "
        "Experiment "
        f"page: the {points[0].calls if points else '?'} calls MLflow 3.17.2's UI makes to open it in chart "
        f"view (experiments/get, runs/search of {UI_PAGE_SIZE} runs by {UI_ORDER_BY[0]}, "
        "logged-models/search, one get-history-bulk-interval "
        f"of the first {UI_CHART_RUNS} runs per line chart), "
        f"{BROWSER_CONNECTIONS} connections like a browser, first request to last answer; filtered: "
        f"`{FILTER}`. Long metric: {args.history_points:,} points. "
        "Times in ms, p50 / p95; `x` is baseline / project at p95 (p50 for the long history).",
        "",
        "| runs | measure | baseline | project | x |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        for measure, title in MEASURES:
            base, proj = p.times[measure]["baseline"], p.times[measure]["project"]
            q = 0.5 if measure.startswith("history") else 0.95
            lines.append(
                f"| {p.runs:,} | {title} | {cell(base)} | {cell(proj)} | {ms(base, q) / ms(proj, q):.1f}x |"
            )
    lines += [
        "",
        "Server CPU time per experiment page load (user + system, all the server's processes, over the",
        "page's measured and unmeasured loads), ms:",
        "",
        "| runs | baseline | project | project, sign-in |",
        "|---|---|---|---|",
    ]
    for p in points:
        cpu = [p.times["page_cpu"]["baseline"], p.times["page_cpu"]["project"], p.sign_in.get("page_cpu")]
        cells = " | ".join("-" if c is None else f"{c[0] * 1000:.0f}" for c in cpu)
        lines.append(f"| {p.runs:,} | {cells} |")
    if any(p.sign_in for p in points):
        lines += [
            "",
            f"Single sign-on (`{SIGN_IN}`): the chart's server with `tracking.auth.mode: oidc`",
            "(mlflow-oidc-auth), the page's calls signed in with a run Job's ServiceAccount token; `x` is",
            "the basic-auth baseline above / sign-in at p95.",
            "",
            "| runs | measure | baseline (basic-auth) | project, basic-auth | project, sign-in | x |",
            "|---|---|---|---|---|---|",
        ]
        for p in points:
            for measure, title in MEASURES:
                if measure not in p.sign_in:
                    continue
                base, proj, signed = (
                    p.times[measure]["baseline"],
                    p.times[measure]["project"],
                    p.sign_in[measure],
                )
                lines.append(
                    f"| {p.runs:,} | {title} | {cell(base)} | {cell(proj)} | {cell(signed)} | "
                    f"{ms(base, 0.95) / ms(signed, 0.95):.1f}x |"
                )
    lines += ["", "Issue 20's targets:", "", "| runs | target | measured | met |", "|---|---|---|---|"]
    for p in points:
        for name, met, value in targets(p):
            lines.append(f"| {p.runs:,} | {name} | {value} | {'yes' if met else '**no**'} |")
    lines += [
        "",
        "Statements per write request (MariaDB's global status counters around 200 `log_metric` and 50",
        f"`log_batch` of {BATCH_KEYS * BATCH_STEPS:,} metrics, divided by the requests; background queries "
        "included):",
        "",
        "| runs | variant | request | " + " | ".join(COUNTERS) + " |",
        "|---|---|---|" + "---|" * len(COUNTERS),
    ]
    for p in points:
        for variant, requests in p.statements.items():
            for request, counters in requests.items():
                lines.append(
                    f"| {p.runs:,} | {variant} | {request} | "
                    + " | ".join(f"{counters[name]:.1f}" for name in COUNTERS)
                    + " |"
                )
    lines += [
        "",
        "Database size, backup and restore (RTO): `python -m local backup`, then `restore` of it, which",
        "checks it, backs up what is there, replaces both databases and counts the rows again.",
        "",
        "| runs | database (MiB) | backup (s) | backup size (MiB, gzip) | restore (s) |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        if math.isnan(p.backup_s):  # --no-backup
            lines.append(f"| {p.runs:,} | {p.db_mib:.0f} | not measured | not measured | not measured |")
            continue
        lines.append(
            f"| {p.runs:,} | {p.db_mib:.0f} | {p.backup_s:.1f} | {p.backup_mib:.1f} | {p.restore_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the benchmark runs")
    parser.add_argument("--runs", default="10000,100000", help="experiment sizes to measure at, ascending")
    parser.add_argument(
        "--steps", type=int, default=5, help="points per metric of each run (> 1: line charts)"
    )
    parser.add_argument("--history-points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-backup", action="store_true", help="skip the backup and restore timings")
    parser.add_argument(
        "--sign-in",
        action="store_true",
        help="also measure the page on the chart's server in single sign-on mode (local OpenID provider)",
    )
    parser.add_argument(
        "--output", type=Path, help=f"report (default {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})"
    )
    parser.add_argument(
        "--workdir", type=Path, help="stack directory (default: a new temporary one, removed)"
    )
    args = parser.parse_args(argv)
    sizes = [20] if args.smoke else [int(n) for n in args.runs.split(",")]
    if args.smoke:
        args.history_points = 500
    repeat = 2 if args.smoke else args.repeat
    output = args.output or (DEFAULT_OUTPUT.with_name("scale-smoke.md.tmp") if args.smoke else DEFAULT_OUTPUT)

    workdir, stack = new_stack("mlflow-aks-scale-", args.workdir)
    started, points = time.monotonic(), []
    rng = random.Random(12)  # noqa: S311 - test data, the same every run
    try:
        log(f"starting the local stack under {workdir}")
        stack.start()
        store, db = _store(stack), stack.database_settings()
        experiment_id = store.create_experiment(f"scale-{int(time.time())}")
        artifact_root = store.get_experiment(experiment_id).artifact_location.rsplit("/", 1)[0]
        # The long history in an experiment of its own: the page shows the seeded runs only.
        log(f"seeding one run with {args.history_points:,} points of one metric")
        long_run = seed_long_metric(
            store, db, store.create_experiment(f"scale-long-{int(time.time())}"), args.history_points
        )
        stack.stop_server()
        spec = stack.server_spec()
        variants = build_variants(
            spec.main.argv, dict(spec.main.env), spec.main.cwd, ["baseline", "project"], []
        )
        rundir = workdir / "servers"
        rundir.mkdir(exist_ok=True)
        sign_in = None
        if args.sign_in:
            log("starting the local OpenID provider for the sign-in server")
            stack.start_oidc()
            sign_in = sign_in_variant(stack, rundir)
        seeded = 0
        for size in sizes:
            log(f"seeding runs {seeded:,}..{size - 1:,}")
            seed_runs(db, experiment_id, artifact_root, seeded, size - seeded, args.steps, rng)
            seeded = size
            point = Point(size, db_size_mib(stack))
            for variant in variants:
                proc, _ = start_variant(variant, stack, rundir, 300)
                try:
                    times, statements, count, point.calls = measure(
                        stack, experiment_id, long_run, repeat, args.smoke, proc.pid
                    )
                finally:
                    stop(proc, timeout=30)
                for measure_name, values in times.items():
                    point.times.setdefault(measure_name, {})[variant.name] = values
                point.statements[variant.name] = statements
                log(
                    f"{size:,} runs, {variant.name}: page p95 {ms(times['page'], 0.95):.0f} ms, filtered "
                    f"{ms(times['filtered'], 0.95):.0f} ms, history p50 {ms(times['history'], 0.5):.0f} ms "
                    f"({count:,} points), log_batch p95 {ms(times['log_batch'], 0.95):.0f} ms"
                )
            if sign_in is not None:
                proc, _ = start_variant(sign_in, stack, rundir, 300)
                browser = Browser(stack.tracking_uri, None, sign_in.headers())
                try:
                    point.sign_in = measure_page(browser, experiment_id, repeat, [], proc.pid)
                finally:
                    browser.close()
                    stop(proc, timeout=30)
                log(
                    f"{size:,} runs, sign-in: page p95 {ms(point.sign_in['page'], 0.95):.0f} ms, "
                    f"filtered {ms(point.sign_in['filtered'], 0.95):.0f} ms"
                )
            if not args.no_backup:
                log(f"{size:,} runs: backup, then restore (the chart's backup CronJob, `local restore`)")
                started_backup = time.perf_counter()
                taken = stack.backup()
                point.backup_s = time.perf_counter() - started_backup
                point.backup_mib = int(taken["bytes"]) / 2**20
                started_restore = time.perf_counter()
                stack.restore(taken["name"])  # check, safety backup, replace, count: the whole restore
                point.restore_s = time.perf_counter() - started_restore
            points.append(point)
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report = render(points, args, machine_info(), time.monotonic() - started, args.smoke)
    write_report(output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
