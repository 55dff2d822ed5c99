"""serve.py's faster store paths (images/tracking-server/fast_store.py) answer exactly as MLflow's own.

A differential test: one SQLite tracking database of generated runs (params, tags, metrics with
several steps, NaN values, deleted runs, runs named only by tag, equal start times, a second
experiment, dataset inputs, logged-model outputs), then more than a thousand generated runs searches
(filters on attributes, params, metrics, tags and datasets; orders on each; page sizes; every page
followed by its token) and metric-history reads, each answered by MLflow's method and by the patched
one, compared whole: the runs in order, every field of each, the page token, every metric point.

tests/e2e/test_fast_search_e2e.py compares the runs search on the local stack's MariaDB (the database the
platform runs) with the same generators (tests/fast_store_diff.py).
"""

from __future__ import annotations

import math
import random
import types

import pytest
import sqlalchemy

from tests import image_modules
from tests.fast_store_diff import (
    METRIC_KEYS,
    PATCHED,
    SAMPLED_HISTORY_PATH,
    canonical,
    compare_sampled_histories,
    endpoint_answers,
    endpoint_pages,
    fast_endpoint_client,
    generate,
    install_fast_store,
    metric_points,
    random_filter,
    random_order,
    sampled_history_queries,
    search_pages,
)


@pytest.fixture
def methods(monkeypatch):
    """(MLflow's methods, the patched ones); MLflow's are back on the class after the test."""
    _, original, patched = install_fast_store(monkeypatch)
    return original, patched


# ---------------------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """The generated database (created once, with MLflow's migrations)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.mktemp("fast-store")
    store = SqlAlchemyStore(f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"))
    data = generate(store, random.Random(20))  # noqa: S311 - test data
    return store, data


def test_runs_search_answers_as_mlflow_over_generated_queries(database, methods):
    from mlflow.entities import ViewType

    store, data = database
    original, patched = methods
    rng = random.Random(7)  # noqa: S311 - generated queries, the same every run
    queries = pages_compared = 0
    nonempty = 0
    while queries < 1000:
        experiments = rng.choice([data["experiments"][:1], data["experiments"], data["experiments"][::-1]])
        filter_string, order_by = random_filter(rng, data), random_order(rng, data)
        view = rng.choice([ViewType.ACTIVE_ONLY, ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL])
        max_results = rng.choice([1, 3, 10, 40, 1000])
        expected = search_pages(
            original["_search_runs"], store, experiments, filter_string, view, max_results, order_by
        )
        actual = search_pages(
            patched["_search_runs"], store, experiments, filter_string, view, max_results, order_by
        )
        assert actual == expected, (filter_string, order_by, view, max_results)
        queries += 1
        pages_compared += len(expected)
        nonempty += expected[0][0] != "refused" and bool(expected[0][0])
    # The generated queries exercise real answers, not just empty pages.
    assert pages_compared > 1200 and nonempty > 300


def test_metric_histories_answer_as_mlflow(database, methods):
    store, data = database
    original, patched = methods
    rng = random.Random(8)  # noqa: S311 - generated reads, the same every run

    checked = 0
    for run_id in data["run_ids"][:40]:
        for key in [*METRIC_KEYS, "absent"]:
            expected = original["get_metric_history"](store, run_id, key)
            actual = patched["get_metric_history"](store, run_id, key)
            assert metric_points(actual) == metric_points(expected) and actual.token == expected.token
            size = rng.choice([1, 2, 7])
            token = None
            while True:
                expected = original["get_metric_history"](store, run_id, key, size, token)
                actual = patched["get_metric_history"](store, run_id, key, size, token)
                assert metric_points(actual) == metric_points(expected) and actual.token == expected.token
                checked += 1
                if not (token := expected.token):
                    break
    checked += compare_sampled_histories(original, patched, store, data, rng, 300)
    assert checked > 600


def test_fast_paths_skip_the_orm_and_per_run_queries(database, methods):
    """What makes them faster: no ORM object per child row, and one statement for many runs' samples."""
    import sqlalchemy
    from mlflow.entities import ViewType
    from mlflow.store.tracking.dbmodels.models import SqlParam

    store, data = database
    original, patched = methods
    statements: list[str] = []

    def count(*args) -> None:
        if args[2].lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append(args[2])

    sqlalchemy.event.listen(store.engine, "before_cursor_execute", count)
    loaded = []
    sqlalchemy.event.listen(SqlParam, "load", lambda target, context: loaded.append(target))
    try:
        run_ids = data["run_ids"][:10]
        original["get_metric_history_bulk_interval"](store, run_ids, "loss", 320, None, None)
        mlflow_statements, statements[:] = len(statements), []
        patched["get_metric_history_bulk_interval"](store, run_ids, "loss", 320, None, None)
        assert mlflow_statements >= 2 * len(run_ids) and len(statements) == 1
        original["_search_runs"](store, data["experiments"], None, ViewType.ALL, 10, None, None)
        assert loaded  # MLflow builds an ORM object per param
        loaded.clear()
        patched["_search_runs"](store, data["experiments"], None, ViewType.ALL, 10, None, None)
        assert not loaded
    finally:
        sqlalchemy.event.remove(store.engine, "before_cursor_execute", count)


def test_a_store_subclass_keeps_mlflows_methods(tmp_path, methods):
    """Workspaces subclass the store and filter through hooks the fast paths do not call: MLflow's code."""
    import sqlalchemy
    from mlflow.entities import Param, ViewType
    from mlflow.store.tracking.dbmodels.models import SqlParam
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    class Scoped(SqlAlchemyStore):
        pass

    store = Scoped(f"sqlite:///{tmp_path / 'scoped.db'}", str(tmp_path / "artifacts"))
    run = store.create_run(store.create_experiment("scoped"), "u", 1, [], "r")
    store.log_batch(run.info.run_id, [], [Param("p", "v")], [])
    loaded = []
    listener = lambda target, context: loaded.append(target)  # noqa: E731
    sqlalchemy.event.listen(SqlParam, "load", listener)
    try:
        found = store.search_runs([run.info.experiment_id], None, ViewType.ALL)
    finally:
        sqlalchemy.event.remove(SqlParam, "load", listener)
    assert [r.info.run_id for r in found] == [run.info.run_id] and found[0].data.params == {"p": "v"}
    assert loaded  # MLflow's path: ORM objects


@pytest.mark.parametrize(("setting", "installed"), [(None, True), ("true", True), ("false", False)])
def test_the_server_installs_the_fast_paths_unless_turned_off(setting, installed, basic_auth, monkeypatch):
    """serve.py's change (14) in every serving process: the store's methods, the endpoints and, with
    basic-auth, its checks; MLFLOW_AKS_FAST_STORE=false keeps MLflow's own."""
    from mlflow.server import app, handlers
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore as AuthStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    serve = image_modules.load(monkeypatch, "serve")  # it imports this test's own fast_store
    original = SqlAlchemyStore._search_runs
    monkeypatch.setattr(SqlAlchemyStore, "_search_runs", original)
    for name in PATCHED[1:]:
        monkeypatch.setattr(SqlAlchemyStore, name, getattr(SqlAlchemyStore, name))
    monkeypatch.setattr(
        SqlAlchemyStore, "_mlflow_aks_fast_store", False, raising=False
    )  # gone again after the test
    monkeypatch.setattr(app, "view_functions", dict(app.view_functions))
    endpoints = (
        handlers._search_runs,
        handlers._get_metric_history,
        handlers.get_metric_history_bulk_interval_handler,
    )
    for view in endpoints:
        app.view_functions[view.__name__] = view  # MLflow's own, in this test's copy of the table
    monkeypatch.setenv(serve.FAST_METRICS, "false")  # change 15 alone: tests/test_fast_metrics.py
    if setting is None:
        monkeypatch.delenv(serve.FAST_STORE, raising=False)
    else:
        monkeypatch.setenv(serve.FAST_STORE, setting)
    search, interval = "/ajax-api/2.0/mlflow/runs/search", "/ajax-api/2.0/mlflow/metrics/get-history-bulk"

    def checks() -> tuple:
        return basic_auth.AFTER_REQUEST_HANDLERS[(search, "POST")], basic_auth.BEFORE_REQUEST_VALIDATORS[
            (interval, "GET")
        ]

    before = checks()
    serve._install_store_patches()
    assert (SqlAlchemyStore._search_runs is not original) is installed
    for handler in endpoints:
        assert (app.view_functions[handler.__name__] is not handler) is installed
    assert [now is not then for now, then in zip(checks(), before, strict=True)] == [installed, installed]
    assert getattr(AuthStore.list_grants, "_mlflow_aks_fast_store", False) is installed


def test_each_endpoint_is_replaced_once(monkeypatch):
    """Installing an endpoint again, from the same copy of fast_store or another, keeps the first view."""
    from mlflow.server import app, handlers

    monkeypatch.setattr(app, "view_functions", dict(app.view_functions))
    mlflows = {
        view.__name__: view
        for view in (
            handlers._get_metric_history,
            handlers._search_runs,
            handlers.get_metric_history_bulk_interval_handler,
        )
    }
    app.view_functions.update(mlflows)

    def install(copy) -> None:
        copy.install_history_endpoint()
        copy.install_search_runs_endpoint()
        copy.install_sampled_histories_endpoint()

    fast_store = image_modules.load(monkeypatch, "fast_store")
    install(fast_store)
    first = {name: app.view_functions[name] for name in mlflows}
    assert all(first[name] is not view for name, view in mlflows.items())
    for copy in (fast_store, image_modules.load(monkeypatch, "fast_store")):
        install(copy)
        assert {name: app.view_functions[name] for name in mlflows} == first


def test_the_history_endpoint_answers_mlflows_json(database, monkeypatch):
    """get-history through Flask: MLflow's handler and the fast one give the same JSON, page by page."""
    import json

    from mlflow.server import app, handlers

    store, data = database
    fast_store = image_modules.load(monkeypatch, "fast_store")
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: store)
    endpoint = handlers._get_metric_history.__name__
    monkeypatch.setitem(app.view_functions, endpoint, app.view_functions[endpoint])
    client = app.test_client()
    requests = [
        {"run_id": run_id, "metric_key": key, **extra}
        for run_id in data["run_ids"][:30]
        for key in [*METRIC_KEYS, "absent"]
        for extra in ({}, {"max_results": 7})
    ]
    requests += [
        {"run_id": data["run_ids"][0]},
        {"run_id": data["run_ids"][0], "metric_key": "loss", "max_results": 0},
    ]

    def answers() -> list:
        found = []
        for query in requests:
            token = None
            while True:
                page = {**query, **({"page_token": token} if token else {})}
                reply = client.get("/api/2.0/mlflow/metrics/get-history", query_string=page)
                body = json.loads(reply.data)
                found.append((reply.status_code, body))
                if not (token := body.get("next_page_token")):
                    break
        return found

    expected = answers()
    fast_store.install_history_endpoint()
    assert app.view_functions[endpoint] is not handlers._get_metric_history
    actual = answers()
    assert actual == expected
    assert sum(len(body.get("metrics", [])) for _, body in expected) > 1000
    assert any("NaN" in json.dumps(body) for _, body in expected)
    assert {status for status, _ in expected} == {200, 400}


def test_migrate_adds_the_runs_index_once(tmp_path, monkeypatch):
    """migrate.py creates the platform's index of runs after MLflow's migrations, and only when missing."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    migrate = image_modules.load(monkeypatch, "migrate")
    uri = f"sqlite:///{tmp_path / 'indexed.db'}"
    SqlAlchemyStore(uri, str(tmp_path / "artifacts")).engine.dispose()
    assert migrate.ensure_tracking_indexes(uri) == [migrate.RUNS_NEWEST_INDEX]
    assert migrate.ensure_tracking_indexes(uri) == []
    engine = sqlalchemy.create_engine(uri)
    with engine.connect() as conn:
        definition = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (migrate.RUNS_NEWEST_INDEX,)
        ).scalar()
    engine.dispose()
    assert " ".join(definition.split()).endswith(
        "ON runs (experiment_id, lifecycle_stage, start_time DESC, run_uuid)"
    )


def test_the_pages_order_reads_the_index_instead_of_sorting(tmp_path, methods, monkeypatch):
    """The UI's runs search (newest first) on the platform's index: no sort of the experiment's runs."""
    from mlflow.entities import ViewType
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    original, patched = methods
    uri = f"sqlite:///{tmp_path / 'plan.db'}"
    store = SqlAlchemyStore(uri, str(tmp_path / "artifacts"))
    image_modules.load(monkeypatch, "migrate").ensure_tracking_indexes(uri)
    experiment = store.create_experiment("plan")
    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if (
            statement.lstrip().startswith("SELECT runs.run_uuid")
            or "FROM runs" in statement.split("WHERE")[0]
        ):
            statements.append((statement, parameters))

    def plan(method) -> str:
        statements.clear()
        sqlalchemy.event.listen(store.engine, "before_cursor_execute", record)
        try:
            method(store, [experiment], None, ViewType.ACTIVE_ONLY, 100, ["attributes.start_time DESC"], None)
        finally:
            sqlalchemy.event.remove(store.engine, "before_cursor_execute", record)
        statement, parameters = statements[0]
        with store.engine.connect() as conn:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
        return " / ".join(row[-1] for row in rows)

    assert "TEMP B-TREE FOR ORDER BY" in plan(original["_search_runs"])
    fast = plan(patched["_search_runs"])
    assert "mlflow_aks_runs_newest" in fast and "TEMP B-TREE" not in fast


def test_logged_metrics_are_stored_as_mlflow_stores_them(tmp_path, methods):
    """log_batch through the patched store leaves exactly MLflow's rows: every point and each key's
    latest value, with repeated points, NaN, older steps and equal steps in the mix."""
    from mlflow.entities import Metric
    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    original, _ = methods
    stores = {
        name: SqlAlchemyStore(f"sqlite:///{tmp_path / f'{name}.db'}", str(tmp_path / name))
        for name in ("mlflow", "fast")
    }
    # The class carries the fast path: the "mlflow" store gets MLflow's method back, on itself.
    stores["mlflow"]._log_metrics_once = types.MethodType(original["_log_metrics_once"], stores["mlflow"])
    rng = random.Random(9)  # noqa: S311 - generated writes, the same every run
    runs = {}
    for name, store in stores.items():
        experiment = store.create_experiment("writes")
        runs[name] = [store.create_run(experiment, "u", 1, [], f"r{i}").info.run_id for i in range(3)]
    logged: list[Metric] = []
    for _ in range(60):
        batch = []
        for _ in range(rng.choice([1, 1, 5, 50])):
            if logged and rng.random() < 0.15:
                batch.append(rng.choice(logged))  # a point logged before: the primary key exists
                continue
            value = math.nan if rng.random() < 0.05 else rng.choice([0.5, 1.0, rng.random()])
            key, timestamp, step = (
                rng.choice(["loss", "acc", "lr"]),
                rng.randrange(1, 5),
                rng.randrange(0, 20),
            )
            batch.append(Metric(key, value, timestamp, step))
        logged += batch
        which = rng.randrange(3)
        for name, store in stores.items():
            store.log_batch(runs[name][which], batch, [], [])

    def content(store, run_ids) -> list:
        index = {run_id: i for i, run_id in enumerate(run_ids)}
        with store.engine.connect() as conn:
            points = conn.exec_driver_sql(
                "SELECT run_uuid, key, value, timestamp, step, is_nan FROM metrics"
            ).all()
            latest = conn.exec_driver_sql(
                "SELECT run_uuid, key, value, timestamp, step, is_nan FROM latest_metrics"
            ).all()
        return [sorted((index[r[0]], *r[1:]) for r in rows) for rows in (points, latest)]

    fast, mlflow_rows = content(stores["fast"], runs["fast"]), content(stores["mlflow"], runs["mlflow"])
    assert fast == mlflow_rows and len(fast[0]) > 500
    # The fast store took its own path (no ORM object per point) for new points.
    built = []
    listener = lambda target, args, kwargs: built.append(target)  # noqa: E731
    sqlalchemy.event.listen(SqlMetric, "init", listener)
    try:
        fresh = [Metric("fresh", float(step), 7, step) for step in range(100)]
        stores["fast"].log_batch(runs["fast"][0], fresh, [], [])
        assert not built
        stores["mlflow"].log_batch(runs["mlflow"][0], fresh, [], [])
        assert len(built) == 100
    finally:
        sqlalchemy.event.remove(SqlMetric, "init", listener)


def test_the_runs_search_endpoint_answers_mlflows_json(database, monkeypatch):
    """runs/search through Flask: MLflow's handler and the fast one give the same JSON value, page by page,
    over generated filters, orders and page sizes (runs with dataset inputs and logged-model outputs take
    MLflow's conversion, the others the fast one)."""
    import json

    from mlflow.server import app, handlers

    store, data = database
    fast_store = image_modules.load(monkeypatch, "fast_store")
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: store)
    endpoint = handlers._search_runs.__name__
    monkeypatch.setitem(app.view_functions, endpoint, app.view_functions[endpoint])
    client = app.test_client()
    rng = random.Random(21)  # noqa: S311 - generated queries, the same every run
    requests = [
        {
            "experiment_ids": rng.choice([data["experiments"][:1], data["experiments"]]),
            **({"filter": f} if (f := random_filter(rng, data)) else {}),
            **({"order_by": o} if (o := random_order(rng, data)) else {}),
            "run_view_type": rng.choice(["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]),
            "max_results": rng.choice([1, 7, 100]),
        }
        for _ in range(100)
    ]
    requests += [{"experiment_ids": data["experiments"], "max_results": 60000}, {"experiment_ids": "1"}]

    expected = endpoint_pages(client, requests)
    fast_store.install_search_runs_endpoint()
    assert app.view_functions[endpoint] is not handlers._search_runs
    converted = []
    monkeypatch.setattr(
        fast_store, "_message_dict", lambda m, f=fast_store._message_dict: converted.append(m) or f(m)
    )
    actual = endpoint_pages(client, requests)
    assert actual == expected
    runs = [run for status, body in expected if status == 200 for run in json.loads(body).get("runs", [])]
    assert len(runs) > 300 and any('"NaN"' in body for _, body in expected)
    # Both conversions were used: MLflow's for the runs with inputs or outputs, the fast one for the rest.
    assert 0 < len(converted) < len(runs) / 5
    # Refused requests (too many results, experiment ids not a list) give MLflow's errors too.
    assert {status for status, _ in expected} > {200}


@pytest.fixture
def auth_module(database, basic_auth, monkeypatch):
    """MLflow's basic-auth module on the generated store, its checks restored after the test."""
    store, _ = database
    monkeypatch.setattr(basic_auth, "_get_tracking_store", lambda *args, **kwargs: store)
    return basic_auth


def test_the_bulk_history_check_decides_as_mlflows(database, auth_module, monkeypatch):
    """basic-auth's check of the bulk history routes: the same experiments handed to MLflow's decision (in
    the same order, repeats kept), MLflow's error for a run that does not exist, in one statement."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import app

    auth, (store, data) = auth_module, database
    decided: list[tuple] = []
    monkeypatch.setattr(auth, "_authorize_bulk_in_experiments", lambda *args: decided.append(args) or True)
    rng = random.Random(22)  # noqa: S311 - generated requests, the same every run
    requests = [rng.sample(data["run_ids"], rng.choice([1, 2, 10])) for _ in range(40)]
    requests += [data["run_ids"][:3] + data["run_ids"][:1], [data["run_ids"][0], "no-such-run"], []]
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sqlalchemy.event.listen(store.engine, "before_cursor_execute", record)

    def decisions() -> list:
        found = []
        for run_ids in requests:
            for route, query in (
                ("metrics/get-history-bulk-interval", {"run_ids": run_ids, "metric_key": "loss"}),
                ("metrics/get-history-bulk", {"run_id": run_ids, "metric_key": "loss"}),
            ):
                path = f"/ajax-api/2.0/mlflow/{route}"  # the UI's routes
                decided.clear()
                with app.test_request_context(path, query_string=query):
                    try:
                        allowed = auth.BEFORE_REQUEST_VALIDATORS[(path, "GET")]()
                    except MlflowException as error:
                        allowed = (error.error_code, error.message)
                found.append((allowed, decided[:]))
        return found

    try:
        expected, mlflow_statements = decisions(), len(statements)
        image_modules.load(monkeypatch, "fast_store").install_auth_checks()
        statements.clear()
        actual = decisions()
    finally:
        sqlalchemy.event.remove(store.engine, "before_cursor_execute", record)
    assert actual == expected
    assert sum(len(args[0]) for _, calls in expected for args in calls) > 200
    assert any(isinstance(allowed, tuple) for allowed, _ in expected)  # the missing run's error
    # One statement per request, except where MLflow's check gives its error (no run, no start time).
    assert len(statements) < mlflow_statements / 3


def _as_reader(monkeypatch, auth, store, models_denied: bool) -> None:
    """Requests as a non-admin reader of the generated store, who may or may not see logged models."""
    from mlflow.server import handlers

    monkeypatch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: store)
    monkeypatch.setattr(auth, "sender_is_admin", lambda: False)
    monkeypatch.setattr(auth, "authenticate_request", lambda: types.SimpleNamespace(username="reader"))
    denied = {auth.RESOURCE_TYPE_LOGGED_MODEL} if models_denied else set()
    monkeypatch.setattr(auth, "_denied_sibling_tiers", lambda username, tiers: denied & set(tiers))


@pytest.mark.parametrize("models_denied", [True, False])
def test_the_runs_search_redaction_leaves_what_mlflows_leaves(
    database, auth_module, monkeypatch, models_denied
):
    """basic-auth's check of a runs search's answer: every answer leaves it as MLflow's check does (model
    links withheld when the user may not see logged models), and one without model links is not parsed."""
    import json

    from flask import Response
    from mlflow.server import app

    auth, (store, data) = auth_module, database
    _as_reader(monkeypatch, auth, store, models_denied)
    parsed = []
    monkeypatch.setattr(auth, "parse_dict", lambda *args, f=auth.parse_dict: parsed.append(1) or f(*args))
    client, path = app.test_client(), "/ajax-api/2.0/mlflow/runs/search"
    answers = [
        client.post(
            path, json={"experiment_ids": [experiment], "max_results": size, "run_view_type": "ALL"}
        ).data
        for experiment in data["experiments"]
        for size in (1, 5, 100)
    ]

    def redacted() -> list:
        found = []
        for answer in answers:
            reply = Response(answer, mimetype="application/json")
            with app.test_request_context(path, method="POST", json={}):
                auth.AFTER_REQUEST_HANDLERS[(path, "POST")](reply)
            found.append(canonical(json.loads(reply.data)))
        return found

    expected = redacted()
    mlflow_parsed, parsed[:] = len(parsed), []
    image_modules.load(monkeypatch, "fast_store").install_auth_checks()
    assert redacted() == expected
    linked = [a for a in answers if '"model_outputs"' in a.decode()]
    assert 0 < len(linked) < len(answers) and mlflow_parsed == len(answers) and len(parsed) == len(linked)
    assert any('"model_outputs"' in body for body in expected) is not models_denied


@pytest.mark.parametrize("models_denied", [True, False])
def test_the_runs_search_endpoint_spares_the_redaction_a_parse(
    database, auth_module, monkeypatch, models_denied
):
    """The fast endpoint marks an answer whose runs are all plain (`NO_MODEL_LINKS`); basic-auth's check then
    leaves it as it is without parsing it, as MLflow's check leaves it. An answer with a model link is never
    marked, and is withheld from as MLflow's check withholds."""
    import json

    from flask import Response
    from mlflow.server import app, handlers

    auth, (store, data) = auth_module, database
    _as_reader(monkeypatch, auth, store, models_denied)
    endpoint, path = handlers._search_runs.__name__, "/ajax-api/2.0/mlflow/runs/search"
    monkeypatch.setitem(app.view_functions, endpoint, app.view_functions[endpoint])
    mlflows_check = auth.AFTER_REQUEST_HANDLERS[(path, "POST")]
    fast_store = image_modules.load(monkeypatch, "fast_store")
    fast_store.install_search_runs_endpoint()
    fast_store.install_auth_checks()
    rng = random.Random(26)  # noqa: S311 - generated queries, the same every run
    requests = [
        {"experiment_ids": [experiment], "max_results": size, "run_view_type": "ALL",
         **({"filter": f} if (f := random_filter(rng, data)) else {})}
        for experiment in data["experiments"]
        for size in (1, 3, 5, 20, 100)
        for _ in range(4)
    ]  # fmt: skip
    marked = unmarked = 0
    for body in requests:
        with app.test_request_context(path, method="POST", json=body):
            answer = app.view_functions[endpoint]()
            if answer.status_code != 200:  # MLflow's error (a run without a start time on the page)
                continue
            text = answer.get_data()
            expected = Response(text, mimetype="application/json")
            mlflows_check(expected)
            if getattr(answer, fast_store.NO_MODEL_LINKS):
                marked += 1
                assert not fast_store._links_models(json.loads(text))
                monkeypatch.setattr(answer, "get_json", lambda *args, **kwargs: pytest.fail("parsed"))
            else:
                unmarked += 1
            auth.AFTER_REQUEST_HANDLERS[(path, "POST")](answer)
            assert canonical(json.loads(answer.get_data())) == canonical(json.loads(expected.get_data()))
    assert marked > 10 and unmarked > 10, (marked, unmarked)


def test_the_sampled_histories_endpoint_answers_mlflows_json(database, monkeypatch):
    """The charts' get-history-bulk-interval through Flask: MLflow's handler on MLflow's store method, then
    the fast handler on the fast method; the same status and JSON value for every generated request,
    MLflow's errors included, without protobuf messages."""
    from mlflow.server import app, handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store, data = database
    handler = handlers.get_metric_history_bulk_interval_handler
    fast_store, original, client = fast_endpoint_client(monkeypatch, store, handler)
    queries = sampled_history_queries(random.Random(28), data, 300)  # noqa: S311 - generated requests
    with monkeypatch.context() as mlflows:
        mlflows.setattr(
            SqlAlchemyStore, "get_metric_history_bulk_interval", original["get_metric_history_bulk_interval"]
        )
        expected = endpoint_answers(client, SAMPLED_HISTORY_PATH, queries)
    fast_store.install_sampled_histories_endpoint()
    assert app.view_functions[handler.__name__] is not handler
    monkeypatch.setattr(handlers, "message_to_json", lambda *args: pytest.fail("protobuf's JSON"))
    actual = endpoint_answers(client, SAMPLED_HISTORY_PATH, queries)
    assert actual == expected
    statuses = [status for status, _ in expected]
    points = sum(body.count('"run_id"') for status, body in expected if status == 200)
    assert statuses.count(200) > 200 and len(set(statuses)) > 1 and points > 2000
    assert any('"NaN"' in body for _, body in expected)


def test_the_grants_query_answers_as_mlflows(tmp_path, monkeypatch):
    """basic-auth's `list_grants` (the first query of every permission decision): MLflow's method and the
    patched one give the same rows, in the same order, or the same error, for every user, workspace and
    set of resource types over generated roles, grants and role assignments."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import sqlalchemy_store as auth_store
    from mlflow.server.auth.permissions import (
        RESOURCE_TYPE_WORKSPACE,
        TYPE,
        VALID_RESOURCE_TYPES,
        PatternKind,
    )

    store_class = auth_store.SqlAlchemyStore
    monkeypatch.setattr(store_class, "list_grants", store_class.list_grants)  # MLflow's again after the test
    store = store_class()
    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    rng = random.Random(29)  # noqa: S311 - generated grants, the same every run
    types, workspaces = sorted(VALID_RESOURCE_TYPES), ["default", "team-a", "team-b"]
    users = [store.create_user(f"user{index}", "a-long-password-1234").id for index in range(6)]
    roles, granted = [], 0
    for workspace in workspaces:
        for index in range(5):
            role = store.create_role(f"role-{index}", workspace)
            roles.append(role.id)
            for _ in range(rng.randint(0, 6)):
                resource_type = rng.choice(types)
                workspace_slot = resource_type == RESOURCE_TYPE_WORKSPACE
                pattern = "*"
                if PatternKind.ID in TYPE[resource_type] and rng.random() < 0.6:
                    pattern = str(rng.randint(1, 30))
                permission = rng.choice(
                    ["USE", "MANAGE"] if workspace_slot else ["READ", "USE", "EDIT", "MANAGE"]
                )
                try:
                    store.add_role_permission(role.id, resource_type, pattern, permission)
                    granted += 1
                except MlflowException:
                    pass  # the same grant twice
    for user in users:
        for role in rng.sample(roles, rng.randint(2, 8)):
            store.assign_role_to_user(user, role)

    def answers(method) -> list:
        found = []
        for user in [*users, 999]:
            for workspace in [*workspaces, "no-such-workspace"]:
                for size in (0, 1, 2, 3, 5, len(types)):
                    wanted = rng_queries.sample(types, size)
                    if rng_queries.random() < 0.05:
                        wanted.append("no-such-type")
                    try:
                        found.append([tuple(row) for row in method(store, user, workspace, set(wanted))])
                    except MlflowException as error:
                        found.append((error.error_code, error.message))
        return found

    rng_queries = random.Random(30)  # noqa: S311 - generated queries
    expected = answers(store_class.list_grants)
    fast_store = image_modules.load(monkeypatch, "fast_store")
    fast_store.install_grants_query()
    assert getattr(store_class.list_grants, fast_store.INSTALLED)
    rng_queries = random.Random(30)  # noqa: S311 - the same queries
    actual = answers(store_class.list_grants)
    assert actual == expected
    nonempty = sum(1 for rows in expected if isinstance(rows, list) and rows)
    assert granted > 30 and nonempty > 60, (granted, nonempty)
    assert any(isinstance(rows, tuple) for rows in expected)  # MLflow's error for an unknown type


def test_the_sign_in_bulk_history_check_decides_as_the_plugins(database, monkeypatch):
    """mlflow-oidc-auth's check of the charts' bulk history routes (sign-in mode): the same permission
    questions, in the same order, and the same answer or error as the plugin's own check, over generated
    requests (runs of both experiments, one experiment refused, a run that does not exist, a run asked
    twice), with the runs' experiments read in one statement instead of one per run."""
    from mlflow.server import app
    from mlflow_oidc_auth.hooks import before_request as hooks
    from mlflow_oidc_auth.validators import run as run_checks

    store, data = database
    original = run_checks.validate_can_read_metric_history_bulk_interval
    monkeypatch.setattr(run_checks, "validate_can_read_metric_history_bulk_interval", original)
    for table in (table for table in vars(hooks).values() if isinstance(table, dict)):
        for route, check in list(table.items()):
            if check is original:
                monkeypatch.setitem(table, route, check)  # the plugin's own again after the test
    monkeypatch.setattr(run_checks, "_get_tracking_store", lambda *args, **kwargs: store)
    asked: list[tuple] = []
    refused = {data["experiments"][1]}

    def permission(experiment_id, username):
        asked.append((experiment_id, username))
        return types.SimpleNamespace(permission=types.SimpleNamespace(can_read=experiment_id not in refused))

    monkeypatch.setattr(run_checks, "effective_experiment_permission", permission)
    rng = random.Random(31)  # noqa: S311 - generated requests, the same every run
    requests = [rng.sample(data["run_ids"], rng.choice([1, 2, 10, 10])) for _ in range(60)]
    # A run that does not exist, asked before and after a refused one (the plugin stops at the first).
    requests += [data["run_ids"][:3] + data["run_ids"][:1], ["no-such-run", data["run_ids"][1]], []]
    requests += [[data["run_ids"][0], "no-such-run"]]
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sqlalchemy.event.listen(store.engine, "before_cursor_execute", record)
    path = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"

    def decisions() -> list:
        found = []
        for run_ids in requests:
            asked.clear()
            with app.test_request_context(path, query_string={"run_ids": run_ids, "metric_key": "loss"}):
                try:
                    allowed = hooks.BEFORE_REQUEST_VALIDATORS[(path, "GET")]("reader")
                except Exception as error:  # the plugin's error for a run that does not exist
                    allowed = (type(error).__name__, str(error))
            found.append((allowed, asked[:]))
            counts.append(len(statements) - sum(counts))
        return found

    counts: list[int] = []  # statements per request
    try:
        expected = decisions()
        plugins_counts, counts[:] = counts[:], []
        image_modules.load(monkeypatch, "fast_store").install_sign_in_checks()
        assert hooks.BEFORE_REQUEST_VALIDATORS[(path, "GET")] is not original
        statements.clear()
        actual = decisions()
    finally:
        sqlalchemy.event.remove(store.engine, "before_cursor_execute", record)
    assert actual == expected
    outcomes = [allowed for allowed, _ in expected]
    assert True in outcomes and False in outcomes and any(isinstance(a, tuple) for a in outcomes)
    assert sum(len(calls) for _, calls in expected) > 100
    # One statement where the plugin read each run until its first refusal; its own check where it raises.
    allowed_10 = [
        (plugins, fast)
        for (allowed, _), plugins, fast, run_ids in zip(
            expected, plugins_counts, counts, requests, strict=True
        )
        if allowed is True and len(run_ids) == 10
    ]
    assert allowed_10 and all(plugins == 10 and fast == 1 for plugins, fast in allowed_10)


@pytest.mark.parametrize(
    ("app_name", "checks"),
    [
        ("basic-auth", ["install_auth_checks", "install_grants_query"]),
        ("oidc-auth", ["install_sign_in_checks"]),
    ],
)
def test_the_server_installs_the_checks_of_its_sign_in(app_name, checks, basic_auth, monkeypatch):
    """serve.py's change (14) installs the store's paths and endpoints in every mode, and the checks of the
    app that authorizes requests: basic-auth's, or in sign-in mode mlflow-oidc-auth's."""
    import importlib

    serve = image_modules.load(monkeypatch, "serve")
    fast_store = importlib.import_module("fast_store")  # the copy serve's `import fast_store` finds
    called: list[str] = []
    installs = [name for name in vars(fast_store) if name.startswith("install")]
    for name in installs:
        monkeypatch.setattr(fast_store, name, lambda name=name: called.append(name))
    monkeypatch.setenv(serve._AUTH_APP, app_name)
    monkeypatch.setenv(serve.FAST_METRICS, "false")
    monkeypatch.delenv(serve.FAST_STORE, raising=False)
    serve._install_store_patches()
    endpoints = [
        "install_history_endpoint",
        "install_search_runs_endpoint",
        "install_sampled_histories_endpoint",
    ]
    assert called == ["install", *endpoints, *checks]
    assert set(installs) == {
        "install",
        *endpoints,
        "install_auth_checks",
        "install_grants_query",
        "install_sign_in_checks",
    }
