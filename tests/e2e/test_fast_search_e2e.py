"""serve.py's change 14, the runs search, on the database the platform runs: MariaDB, whose collation
(utf8mb4_general_ci) sorts and matches keys case-insensitively and ignores trailing spaces (MLflow's
filters add BINARY comparisons, its sorts and sort keys do not), and which sorts NULL first.
fast_store.py's `_search_runs` and runs/search endpoint answer exactly as MLflow's own: the runs in order,
every field of each, the page token, on every page to the last. tests/test_fast_store.py compares the
same paths on SQLite with more queries; both draw runs and queries from tests/fast_store_diff.py.
"""

from __future__ import annotations

import json
import random
import sys
import time
import types

import pytest
import sqlalchemy

from local import LocalStack
from tests.fast_store_diff import (
    compare_sampled_histories,
    endpoint_pages,
    fast_endpoint_client,
    generate,
    install_fast_store,
    random_filter,
    random_order,
    search_pages,
)


class BulkLog:
    """`log_batch` for many runs at once (MLflow's takes ~50 ms a run here): the rows MLflow's log_batch
    writes, params, tags and metric points (values as its `sanitize_metric_value` stores them, a point
    logged twice stored once), inserted in one statement per table; each run's latest metrics chosen by
    MLflow's own `_update_latest_metrics_if_necessary`."""

    def __init__(self, store) -> None:
        self.store, self.batches = store, []

    def __call__(self, run_id, metrics, params, tags) -> None:
        self.batches.append((run_id, metrics, params, tags))

    def write(self) -> None:
        from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlParam, SqlTag

        rows: dict = {SqlParam: [], SqlTag: [], SqlMetric: []}
        points = {}
        for run_id, metrics, params, tags in self.batches:
            rows[SqlParam] += [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in params]
            rows[SqlTag] += [{"run_uuid": run_id, "key": t.key, "value": t.value} for t in tags]
            run_points = {}
            for m in metrics:
                is_nan, value = self.store.sanitize_metric_value(m.value)
                row = {"run_uuid": run_id, "key": m.key, "value": value, "timestamp": m.timestamp,
                       "step": m.step, "is_nan": is_nan}  # fmt: skip
                run_points.setdefault((m.key, m.timestamp, m.step, value, is_nan), row)  # the primary key
            points[run_id] = list(run_points.values())
            rows[SqlMetric] += points[run_id]
        with self.store.ManagedSessionMaker(read_only=False) as session:
            for model, table_rows in rows.items():
                if table_rows:
                    session.execute(sqlalchemy.insert(model.__table__), table_rows)
            for run_points in points.values():
                self.store._update_latest_metrics_if_necessary(
                    [types.SimpleNamespace(**row) for row in run_points], session
                )
            session.commit()


@pytest.fixture(scope="module")
def generated(stack: LocalStack):
    """(store on the stack's tracking database, what the queries draw from): 300 runs as MLflow's store
    writes them, with keys in two spellings, values equal in MariaDB's collation only, infinities and
    the longest values MLflow takes."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = stack.database_settings()
    uri = f"mysql+pymysql://{db['user']}:{db['password']}@{db['host']}:{db['port']}/{db['database']}"
    store = SqlAlchemyStore(uri, stack.artifacts_destination)
    started = time.monotonic()
    bulk = BulkLog(store)
    data = generate(
        store,
        random.Random(23),  # noqa: S311 - generated data, the same every run
        experiment_names=("fast-search-a", "fast-search-b"),
        runs=300,
        variants=True,
        log_batch=bulk,
    )
    bulk.write()
    print(f"300 runs written: {time.monotonic() - started:.1f}s")
    yield store, data
    store.engine.dispose()


def test_runs_search_answers_as_mlflow_on_mariadb(generated, monkeypatch):
    from mlflow.entities import ViewType

    store, data = generated
    _, original, patched = install_fast_store(monkeypatch)
    # The data exercises MariaDB's collation: a sort on `params.opt` reads `Opt` too, and puts values that
    # differ in case or a trailing space together (SQLite would sort them apart, by their bytes).
    runs, _ = original["_search_runs"](
        store, data["experiments"], "attributes.start_time > 0", ViewType.ALL, 1000, ["params.opt"], None
    )
    sorted_by = [value for run in runs for key, value in run.data.params.items() if key in ("opt", "Opt")]
    assert {"Adam", "adam", "adam "} <= set(sorted_by) and sorted_by != sorted(sorted_by)
    collated = [value.lower().rstrip() for value in sorted_by]
    assert collated == sorted(collated) and any("Opt" in run.data.params for run in runs)

    rng = random.Random(24)  # noqa: S311 - generated queries, the same every run
    started = time.monotonic()
    queries = pages_compared = runs_compared = 0
    while queries < 300:
        experiments = rng.choice([data["experiments"][:1], data["experiments"], data["experiments"][::-1]])
        filter_string, order_by = random_filter(rng, data), random_order(rng, data)
        view = rng.choice([ViewType.ACTIVE_ONLY, ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL])
        max_results = rng.choice([10, 50, 1000])
        query = (experiments, filter_string, view, max_results, order_by)
        expected = search_pages(original["_search_runs"], store, *query, pages=None)
        actual = search_pages(patched["_search_runs"], store, *query, pages=None)
        assert actual == expected, query
        queries += 1
        pages = [page for page in expected if page[0] != "refused"]
        pages_compared += len(pages)
        runs_compared += sum(len(runs) for runs, _ in pages)
    print(
        f"{queries} searches, {pages_compared} pages, {runs_compared} runs: {time.monotonic() - started:.1f}s"
    )
    assert pages_compared > 300 and runs_compared > 3000


def test_runs_search_endpoint_answers_mlflows_json_on_mariadb(generated, monkeypatch):
    """runs/search through Flask: MLflow's handler on MLflow's store method, then the fast handler on the
    fast method, page by page to the last; the same JSON value (1 and 1.0 told apart)."""
    from mlflow.server import app, handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store, data = generated
    fast_store, original, client = fast_endpoint_client(monkeypatch, store, handlers._search_runs)
    endpoint = handlers._search_runs.__name__
    rng = random.Random(25)  # noqa: S311 - generated queries, the same every run
    requests = [
        {
            "experiment_ids": rng.choice([data["experiments"][:1], data["experiments"]]),
            **({"filter": f} if (f := random_filter(rng, data)) else {}),
            **({"order_by": o} if (o := random_order(rng, data)) else {}),
            "run_view_type": rng.choice(["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]),
            "max_results": rng.choice([50, 1000]),
        }
        for _ in range(30)
    ]
    # Whole experiments, page by page, in orders MariaDB's collation decides (runs without a start time
    # left out: MLflow cannot answer a page with one).
    requests += [
        {"experiment_ids": [experiment], "filter": "attributes.start_time > 0", "order_by": [order],
         "run_view_type": "ALL", "max_results": 50}
        for experiment in data["experiments"]
        for order in ("params.opt", "metrics.loss DESC", "tags.team")
    ]  # fmt: skip

    with monkeypatch.context() as mlflows:
        mlflows.setattr(SqlAlchemyStore, "_search_runs", original["_search_runs"])
        expected = endpoint_pages(client, requests, pages=None)
    fast_store.install_search_runs_endpoint()
    assert app.view_functions[endpoint] is not handlers._search_runs
    actual = endpoint_pages(client, requests, pages=None)
    assert actual == expected
    runs = [run for status, body in expected if status == 200 for run in json.loads(body).get("runs", [])]
    print(f"{len(requests)} requests, {len(expected)} pages, {len(runs)} runs")
    # Infinities come back as the largest doubles, which MLflow stores in their place.
    infinite = {-sys.float_info.max, sys.float_info.max}
    assert len(runs) > 1000 and any(
        m["value"] in infinite for run in runs for m in run["data"].get("metrics", [])
    )


def test_sampled_histories_answer_as_mlflow_on_mariadb(generated, monkeypatch):
    """The charts' sampled histories (one statement of window functions for many runs, its values bound
    once per request) give MLflow's points on MariaDB: keys in either spelling, NaN and the infinities,
    ties, runs missing the metric or missing altogether."""
    store, data = generated
    _, original, patched = install_fast_store(monkeypatch)
    started = time.monotonic()
    compared = compare_sampled_histories(original, patched, store, data, random.Random(27), 400)  # noqa: S311
    print(f"{compared} sampled-history reads: {time.monotonic() - started:.1f}s")
