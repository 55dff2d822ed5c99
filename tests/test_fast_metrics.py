"""serve.py's change 15 (images/tracking-server/fast_metrics.py) answers and writes exactly as MLflow does.

Differential tests on SQLite tracking databases: metric histories (NaN, infinities, equal timestamps and
steps, case-different keys, absent runs and keys) read page by page through Flask by MLflow's handler and
by the fast one, compared as JSON; generated log_batch calls (repeated points, NaN, older and equal steps,
invalid metrics, deleted and absent runs, params and logged models that take MLflow's path) made through
MLflow's store method and the fast one on two copies of one database, compared call by call (result or
error) and row by row (metrics, latest_metrics); and the same bodies posted to both handlers, plain or not.
tests/e2e/test_fast_metrics_e2e.py runs the history and batch comparisons on the local stack's MariaDB.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import types
from pathlib import Path

import pytest

from tests import image_modules


@pytest.fixture
def fast(monkeypatch):
    """fast_metrics installed for one test: MLflow's views and store method are back afterwards.

    Returns (module, MLflow's views by endpoint name, MLflow's SqlAlchemyStore.log_batch)."""
    from mlflow.server import app, handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    fast_metrics = image_modules.load(monkeypatch, "fast_metrics")
    views = {}
    for view in (handlers._get_metric_history, handlers._log_batch):
        # MLflow's own views (an earlier test may have left fast_store's get-history in the table).
        monkeypatch.setitem(app.view_functions, view.__name__, view)
        views[view.__name__] = view
    original = SqlAlchemyStore.log_batch
    monkeypatch.setattr(SqlAlchemyStore, "log_batch", original)
    monkeypatch.setattr(
        SqlAlchemyStore, fast_metrics.INSTALLED, False, raising=False
    )  # gone again after the test
    fast_metrics.install()
    assert SqlAlchemyStore.log_batch is not original
    assert all(app.view_functions[name] is not view for name, view in views.items())
    return fast_metrics, views, original


# ---------------------------------------------------------------------------------------- histories

KEYS = ["loss", "acc", "Loss"]


@pytest.fixture(scope="module")
def histories(tmp_path_factory, template):
    """Runs with histories of every shape MLflow stores: NaN, ±inf, equal timestamps and steps."""
    import sqlalchemy
    from mlflow.entities import Metric
    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.mktemp("histories")
    shutil.copy(template[0], root / "mlflow.db")  # MLflow's schema, without running its migrations again
    store = SqlAlchemyStore(f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"))
    rng = random.Random(15)  # noqa: S311 - test data, the same every run
    experiment = store.create_experiment("histories")
    run_ids = []
    for index in range(8):
        run_id = store.create_run(experiment, "u", 1, [], f"r{index}").info.run_id
        run_ids.append(run_id)
        for key in KEYS:
            if rng.random() < 0.25:
                continue
            points = {}
            for _ in range(rng.choice([1, 5, 60, 300])):
                value = rng.choice([rng.uniform(-5, 5), rng.random(), 0.0, -0.0, 1e-300, 1 / 3, 2.5e17,
                                    math.nan, math.inf, -math.inf, 7])  # fmt: skip
                # Few timestamps and steps: many points share both, so the value decides the order.
                point = Metric(key, value, rng.randrange(0, 8), rng.randrange(0, 10))
                points[(point.key, repr(point.value), point.timestamp, point.step)] = point
            # The rows MLflow's log_batch writes (sanitized values), inserted in bulk: reads are under test.
            rows = {}
            for point in points.values():
                is_nan, value = store.sanitize_metric_value(point.value)
                # One row per primary key (0.0 and -0.0 are one value to the database).
                row = {"run_uuid": run_id, "key": key, "value": value, "timestamp": point.timestamp,
                       "step": point.step, "is_nan": is_nan}  # fmt: skip
                rows[(value, point.timestamp, point.step, is_nan)] = row
            with store.engine.begin() as conn:
                conn.execute(sqlalchemy.insert(SqlMetric.__table__), list(rows.values()))
    store.delete_run(run_ids[-1])  # a deleted run's history is still read
    return store, run_ids


def history_requests(run_ids: list[str], rng: random.Random) -> list[dict]:
    requests = [
        {"run_id": run_id, "metric_key": key, **extra}
        for run_id in [*run_ids, "0" * 32]
        for key in [*KEYS, "absent", "LOSS"]
        for extra in ({}, {"max_results": rng.choice([1, 3, 25, 1000])})
    ]
    return [
        *requests,
        {"run_id": run_ids[0]},
        {"metric_key": "loss"},
        {"run_id": run_ids[0], "metric_key": "loss", "max_results": 0},
        {"run_id": run_ids[0], "metric_key": "loss", "max_results": -2},
        {"run_id": run_ids[0], "metric_key": "loss", "max_results": 5, "page_token": "not-a-token"},
        {"run_uuid": run_ids[1], "metric_key": "acc", "max_results": 50},
    ]


def read_pages(client, requests: list[dict], path: str = "/api/2.0/mlflow/metrics/get-history") -> list:
    """Every page of every request, following next_page_token: (status, JSON body) each."""
    found = []
    for query in requests:
        token = None
        while True:
            reply = client.get(path, query_string={**query, **({"page_token": token} if token else {})})
            body = json.loads(reply.data)
            found.append((reply.status_code, body))
            if reply.status_code != 200 or not (token := body.get("next_page_token")):
                break
    return found


def test_histories_answer_mlflows_json_page_by_page(histories, fast, monkeypatch):
    """get-history through Flask: MLflow's handler and the fast one answer the same JSON, page by page."""
    from mlflow.server import app, handlers

    store, run_ids = histories
    _, views, _ = fast
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: store)
    requests = history_requests(run_ids, random.Random(16))  # noqa: S311 - generated reads
    client = app.test_client()
    endpoint = handlers._get_metric_history.__name__
    fast_view = app.view_functions[endpoint]
    app.view_functions[endpoint] = views[endpoint]
    expected = read_pages(client, requests) + read_pages(
        client, requests[:20], "/ajax-api/2.0/mlflow/metrics/get-history"
    )
    app.view_functions[endpoint] = fast_view
    actual = read_pages(client, requests) + read_pages(
        client, requests[:20], "/ajax-api/2.0/mlflow/metrics/get-history"
    )
    assert actual == expected
    points = [m for status, body in expected for m in body.get("metrics", [])]
    # The comparison covers what matters: many points, every special value, paging, and errors.
    # (MLflow stores ±inf as the largest doubles.)
    assert len(points) > 2000 and {"NaN", 1.7976931348623157e308, -1.7976931348623157e308} <= {
        m["value"] for m in points
    }
    assert sum("next_page_token" in body for _, body in expected) > 100
    assert {status for status, _ in expected} == {200, 400}
    # MLflow's SQL store never names a logged model in a history: basic-auth's redaction finds nothing.
    assert not any("model_id" in m for m in points)


def test_a_long_history_is_read_without_orm_objects_or_protobuf(histories, fast, monkeypatch):
    """What makes it fast: plain rows into JSON, no Metric entity or protobuf message per point."""
    import sqlalchemy
    from mlflow.entities import Metric
    from mlflow.server import app, handlers
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    store, run_ids = histories
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: store)
    built = []
    monkeypatch.setattr(Metric, "to_proto", lambda self: built.append(self))
    loaded = []
    listener = lambda target, context: loaded.append(target)  # noqa: E731
    sqlalchemy.event.listen(SqlMetric, "load", listener)
    try:
        reply = app.test_client().get(
            "/api/2.0/mlflow/metrics/get-history", query_string={"run_id": run_ids[0], "metric_key": "loss"}
        )
    finally:
        sqlalchemy.event.remove(SqlMetric, "load", listener)
    assert reply.status_code == 200 and len(json.loads(reply.data).get("metrics", [])) > 0
    assert not built and not loaded


# ---------------------------------------------------------------------------------------- log_batch


def random_metric(rng: random.Random, base: int):
    from mlflow.entities import Metric

    # Steps near the batch's base and few timestamps: equal (step, timestamp) pairs, older steps.
    value = rng.choice(
        [rng.random(), rng.random(), 0.5, 1.0, 0.0, -0.0, 3, math.nan, math.inf, -math.inf, 1e308]
    )
    step = base + rng.randrange(-3, 6)
    return Metric(rng.choice(["loss", "acc", "lr", "a/b"]), value, rng.randrange(0, 4), step)


def random_call(rng: random.Random, runs: list[str], logged: list) -> tuple:
    """One log_batch call: mostly plain metrics; some with MLflow's errors or its other paths."""
    from mlflow.entities import Metric, Param, RunTag

    run_id = rng.choice(runs)
    base = rng.randrange(0, 1000) * 10
    metrics = [random_metric(rng, base) for _ in range(rng.choice([1, 2, 10, 40, 100]))]
    if logged and rng.random() < 0.1:
        metrics.append(rng.choice(logged))  # a point logged before: MLflow's duplicate recovery
    params, tags = [], []
    kind = rng.random()
    if kind < 0.04:
        metrics[rng.randrange(len(metrics))] = Metric("loss", 1.0, -1, 0)  # negative timestamp
    elif kind < 0.08:
        metrics[rng.randrange(len(metrics))] = Metric("../up", 1.0, 1, 0)  # an invalid name
    elif kind < 0.10:
        metrics[rng.randrange(len(metrics))] = Metric("k" * 300, 1.0, 1, 0)  # a name too long
    elif kind < 0.13:
        params = [Param(f"p{rng.randrange(100)}", "v")]  # with params: MLflow's path
    elif kind < 0.16:
        tags = [RunTag("t", str(rng.random()))]
    elif kind < 0.18:
        run_id = "0" * 32  # no such run
    elif kind < 0.20:
        metrics = []
    return run_id, metrics, params, tags


def outcome(method, store, call):
    from mlflow.exceptions import MlflowException

    try:
        return ("ok", method(store, *call))
    except MlflowException as error:
        return ("error", error.error_code, error.message)


def table_rows(store) -> list:
    with store.engine.connect() as conn:
        return [
            sorted(map(tuple, conn.exec_driver_sql(f"SELECT * FROM {table}").all()), key=repr)  # noqa: S608
            for table in ("metrics", "latest_metrics", "params", "tags")
        ]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, list[str]]:
    """A tracking database with 4 runs, the last deleted (created once: MLflow's migrations take seconds)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.mktemp("writes")
    store = SqlAlchemyStore(f"sqlite:///{root / 'template.db'}", str(root / "artifacts"))
    experiment = store.create_experiment("writes")
    run_ids = [store.create_run(experiment, "u", 1, [], f"r{i}").info.run_id for i in range(4)]
    store.delete_run(run_ids[-1])
    store.engine.dispose()
    return root / "template.db", run_ids


def two_copies(tmp_path: Path, template: tuple[Path, list[str]]) -> tuple:
    """Two stores on copies of the template database (the same run ids in both)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    database, run_ids = template
    stores = {}
    for name in ("mlflow", "fast"):
        shutil.copy(database, tmp_path / f"{name}.db")
        stores[name] = SqlAlchemyStore(f"sqlite:///{tmp_path / f'{name}.db'}", str(tmp_path / "artifacts"))
    return stores, run_ids


def test_log_batch_stores_and_refuses_as_mlflow(tmp_path, template, fast, monkeypatch):
    """Generated log_batch calls through MLflow's method and the fast one: the same result or error for each
    call, then the same metrics, latest metrics, params and tags."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    fast_metrics, _, original = fast
    stores, run_ids = two_copies(tmp_path, template)
    rng = random.Random(17)  # noqa: S311 - generated writes, the same every run
    logged: list = []
    outcomes, plain_writes = [], []
    write = fast_metrics._log_plain_batch
    monkeypatch.setattr(fast_metrics, "_log_plain_batch", lambda *args: plain_writes.append(write(*args)))
    for _ in range(80):
        call = random_call(rng, run_ids, logged)
        expected = outcome(original, stores["mlflow"], call)
        actual = outcome(SqlAlchemyStore.log_batch, stores["fast"], call)
        assert actual == expected, call[0]
        outcomes.append(expected[:2])
        if expected[0] == "ok":
            logged += call[1]
    assert table_rows(stores["fast"]) == table_rows(stores["mlflow"])
    # The calls exercised the paths that matter: stored points, refusals of each kind.
    errors = {o[1] for o in outcomes if o[0] == "error"}
    assert len(table_rows(stores["mlflow"])[0]) > 1000
    assert {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"} <= errors
    # Most took the fast path to the end; the rest MLflow's (params, tags, a point logged before).
    assert len(plain_writes) > 40 and outcomes.count(("ok", None)) > len(plain_writes)


def test_log_batch_writes_one_transaction_of_plain_rows(tmp_path, template, fast):
    """What makes it fast: no ORM object per point, one INSERT of the points, one UPDATE of latest values."""
    import sqlalchemy
    from mlflow.entities import Metric
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    stores, run_ids = two_copies(tmp_path, template)
    store = stores["fast"]
    store.log_batch(run_ids[0], [Metric(f"k{k}", 0.0, 1, 0) for k in range(10)], [], [])
    statements, built = [], []
    sqlalchemy.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    listeners = [
        (model, lambda target, args, kwargs: built.append(target)) for model in (SqlMetric, SqlLatestMetric)
    ]
    for model, listener in listeners:
        sqlalchemy.event.listen(model, "init", listener)
    try:
        store.log_batch(
            run_ids[0], [Metric(f"k{k}", s / 7, 2, s) for k in range(10) for s in range(100)], [], []
        )
    finally:
        for model, listener in listeners:
            sqlalchemy.event.remove(model, "init", listener)
    writes = [
        " ".join(found.groups())
        for s in statements
        if (found := re.match(r"(INSERT|UPDATE)\W+(?:INTO )?(\w+)", s))
    ]
    assert not built
    assert writes == ["INSERT metrics", "UPDATE latest_metrics"]
    with store.engine.connect() as conn:
        latest = conn.exec_driver_sql("SELECT key, step, value FROM latest_metrics ORDER BY key").all()
    assert [tuple(row) for row in latest] == [(f"k{k}", 99, 99 / 7) for k in range(10)]


# Bodies a client may post to runs/log-batch: the plain shape MLflow's clients send, and shapes the fast
# handler leaves to MLflow (each must give MLflow's answer either way).
def batch_bodies(run_ids: list[str], rng: random.Random) -> list:
    def point(step: int) -> dict:
        return {"key": rng.choice(["loss", "acc"]), "value": rng.choice([rng.random(), 1, -2.5, 0]),
                "timestamp": rng.randrange(0, 5), "step": step}  # fmt: skip

    bodies = []
    for index in range(40):
        run_id = run_ids[index % 3]
        points = [point(index * 10 + s) for s in range(rng.choice([1, 5, 30]))]
        bodies.append({"run_id": run_id, "metrics": points})
    run_id = run_ids[0]
    odd = [
        {"runId": run_id, "metrics": [point(500)]},
        {"run_id": run_id, "metrics": [{**point(501), "value": "NaN"}]},
        {"run_id": run_id, "metrics": [{**point(502), "value": "Infinity"}]},
        {"run_id": run_id, "metrics": [{"key": "loss", "value": 1.0, "timestamp": 3}]},  # no step
        {"run_id": run_id, "metrics": [{**point(503), "timestamp": "17"}]},
        {"run_id": run_id, "metrics": [{**point(504), "step": 2.0}]},
        {"run_id": run_id, "metrics": [{**point(505), "value": True}]},
        {"run_id": run_id, "metrics": [{**point(506), "key": ""}]},
        {"run_id": run_id, "metrics": [{**point(507), "key": "../x"}]},
        {"run_id": run_id, "metrics": [{**point(508), "timestamp": -4}]},
        {"run_id": run_id, "metrics": [{**point(509), "value": None}]},
        {"run_id": run_id, "metrics": [{**point(510), "model_id": "m-1"}]},
        {"run_id": run_id, "metrics": [{**point(511), "dataset_name": "d"}]},
        {"run_id": run_id, "metrics": [{**point(512), "extra": 1}]},
        {"run_id": run_id, "metrics": [{**point(513), "key": "été"}]},
        {"run_id": run_id, "metrics": [{**point(514), "step": 2**63}]},
        {"run_id": run_id, "metrics": []},
        {"run_id": run_id, "metrics": {"key": "loss"}},
        {"run_id": run_id, "metrics": [point(515)], "params": [{"key": "p", "value": "v"}]},
        {"run_id": "", "metrics": [point(516)]},
        {"run_id": 7, "metrics": [point(517)]},
        {"metrics": [point(518)]},
        {"run_id": "0" * 32, "metrics": [point(519)]},
        {"run_id": run_ids[-1], "metrics": [point(520)]},  # deleted
        {"run_id": run_id, "metrics": [point(3)]},  # a point logged before, perhaps
        [1, 2],
        "not json at all",
    ]
    return bodies + odd


def test_log_batch_requests_answer_as_mlflow(tmp_path, template, fast, monkeypatch):
    """The same bodies posted to MLflow's handler and to the fast one, each on its copy of one database:
    the same status and JSON for each, the same rows at the end."""
    from mlflow.server import app, handlers

    _, views, original = fast
    stores, run_ids = two_copies(tmp_path, template)
    # The "mlflow" store keeps MLflow's method on itself (the class carries the fast one).
    stores["mlflow"].log_batch = types.MethodType(original, stores["mlflow"])
    bodies = batch_bodies(run_ids, random.Random(18))  # noqa: S311 - generated requests
    client = app.test_client()
    endpoint = handlers._log_batch.__name__
    fast_view = app.view_functions[endpoint]

    def post_all(name: str) -> list:
        monkeypatch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: stores[name])
        answers = []
        for body in bodies:
            data = body if isinstance(body, str) else json.dumps(body)
            reply = client.post("/api/2.0/mlflow/runs/log-batch", data=data, content_type="application/json")
            answers.append((reply.status_code, reply.data))  # MLflow fails some bodies with a 500: so must we
        text = client.post("/api/2.0/mlflow/runs/log-batch", data="{}", content_type="text/plain")
        return [*answers, (text.status_code, text.data)]

    app.view_functions[endpoint] = views[endpoint]
    expected = post_all("mlflow")
    app.view_functions[endpoint] = fast_view
    actual = post_all("fast")
    assert actual == expected
    assert table_rows(stores["fast"]) == table_rows(stores["mlflow"])
    assert sum(status == 200 for status, _ in expected) > 40 and {400, 404} <= {s for s, _ in expected}


def test_plain_bodies_become_mlflows_entities(fast):
    """For every body `plain_metrics` accepts, MLflow's parsing gives the same entities and no logged model;
    every other body is left to it."""
    from mlflow.entities import Metric
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.server import app, handlers

    fast_metrics, _, _ = fast
    bodies = batch_bodies(["a" * 32, "b" * 32, "c" * 32, "d" * 32], random.Random(19))  # noqa: S311
    accepted = 0
    for body in bodies:
        if isinstance(body, str):
            continue
        plain = fast_metrics.plain_metrics(body)
        if plain is None:
            continue
        accepted += 1
        with app.test_request_context("/", method="POST", json=body):
            message = handlers._get_request_message(LogBatch())
        assert [m.model_id for m in message.metrics if m.model_id] == []
        parsed = [Metric.from_proto(m) for m in message.metrics]
        assert [m.__dict__ for m in plain] == [m.__dict__ for m in parsed] and message.run_id == body[
            "run_id"
        ]
    assert accepted > 40
    rejected = [b for b in bodies[40:] if not isinstance(b, str) and fast_metrics.plain_metrics(b) is None]
    assert len(rejected) >= 17


def test_metrics_are_refused_with_mlflows_errors(monkeypatch):
    """validate_metrics checks each name once: every batch passes or fails exactly as MLflow's
    `_validate_batch_log_data`, at the same metric, with the same message."""
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_batch_log_data

    fast_metrics = image_modules.load(monkeypatch, "fast_metrics")
    valid = [Metric("loss", 0.5, 1, s) for s in range(4)] + [Metric("acc", 1, 2, 0)]
    odd = [Metric("loss", True, 1, 9), Metric("loss", None, 1, 9), Metric("loss", "1", 1, 9),
           Metric("loss", math.nan, 1, 9), Metric("loss", 1.0, -1, 9), Metric("loss", 1.0, 1.5, 9),
           Metric("loss", 1.0, 1, "3"), Metric(None, 1.0, 1, 0), Metric("k" * 300, 1.0, 1, 0),
           Metric("../up", 1.0, 1, 0), Metric("a:b", 1.0, 1, 0), Metric("loss", 1.0, True, 0)]  # fmt: skip

    def outcome(check, batch):
        try:
            check(batch)
        except MlflowException as error:
            return error.error_code, error.message
        return "passed"

    outcomes = []
    for bad in odd:
        for position in (0, 3, 5):
            batch = [*valid[:position], bad, *valid[position:]]
            expected = outcome(lambda b: _validate_batch_log_data(b, [], []), batch)
            assert outcome(fast_metrics.validate_metrics, batch) == expected, (bad, position)
            outcomes.append(expected)
    assert outcomes.count("passed") >= 6 and len({o for o in outcomes if o != "passed"}) >= 10


def test_latest_values_follow_mlflows_comparison(monkeypatch):
    """The first of equal points stays; a greater (step, timestamp, value) replaces; unchanged: None."""
    fast_metrics = image_modules.load(monkeypatch, "fast_metrics")
    stored = (0.5, 10, 3, False)
    assert fast_metrics.latest_values(stored, [(0.1, 9, 3, False)]) is None
    assert fast_metrics.latest_values(stored, [(0.5, 10, 3, False)]) is None
    assert fast_metrics.latest_values(stored, [(0.6, 10, 3, False), (0.7, 10, 3, False)]) == (
        0.7,
        10,
        3,
        False,
    )
    assert fast_metrics.latest_values(None, [(0, 1, 1, True), (0.0, 1, 1, False)]) == (0, 1, 1, True)
    assert fast_metrics.latest_values(None, [(1.0, 0, 0, False), (0.5, 0, 4, False)]) == (0.5, 0, 4, False)


# ---------------------------------------------------------------------------------------- basic-auth


def test_basic_auth_hooks_skip_only_what_cannot_act(basic_auth, monkeypatch):
    """The LogBatch check of a plain body asks for the run alone (it names no logged model); the history
    redaction is skipped for an answer written by the fast endpoint; everything else gets MLflow's."""
    from flask import Response
    from mlflow.server import app

    auth = basic_auth
    fast_metrics = image_modules.load(monkeypatch, "fast_metrics")
    checks, redactions = [], []
    monkeypatch.setattr(auth, "_validate_can_update_run_and_models", lambda ids: checks.append(ids) or True)
    original_check, original_redact = auth.validate_can_log_batch, auth.redact_metric_history_model_ids
    fast_metrics.install_auth_hooks()
    check = auth.BEFORE_REQUEST_VALIDATORS[("/api/2.0/mlflow/runs/log-batch", "POST")]
    redact = auth.AFTER_REQUEST_HANDLERS[("/ajax-api/2.0/mlflow/metrics/get-history", "GET")]
    assert check is not original_check and redact is not original_redact
    assert not any(v is original_check for v in auth.BEFORE_REQUEST_VALIDATORS.values())
    assert not any(v is original_redact for v in auth.AFTER_REQUEST_HANDLERS.values())
    plain = {"run_id": "r" * 32, "metrics": [{"key": "k", "value": 1.0, "timestamp": 1, "step": 0}]}
    with app.test_request_context("/", method="POST", json=plain):
        assert check() is True
    with_model = {"run_id": "r" * 32, "metrics": [{"key": "k", "value": 1.0, "timestamp": 1, "modelId": "m"}]}
    with app.test_request_context("/", method="POST", json=with_model):
        check()  # MLflow's check: it looks the model up (here: the stub records its ids)
    assert checks == [set(), {"m"}]
    ours, theirs = Response("{}"), Response("{}")
    setattr(ours, fast_metrics.NO_MODEL_IDS, True)
    with app.test_request_context("/"):
        redact(ours)
    assert redactions == []
    # Any other answer: MLflow's redaction runs (its first step asks whether the sender is an admin).
    monkeypatch.setattr(auth, "sender_is_admin", lambda: redactions.append(theirs) or True)
    with app.test_request_context("/"):
        redact(theirs)
    assert redactions == [theirs]


@pytest.mark.parametrize(("setting", "installed"), [(None, True), ("false", False)])
def test_the_server_installs_change_15_unless_turned_off(setting, installed, basic_auth, monkeypatch):
    """serve.py installs fast_metrics in every serving process after fast_store; MLFLOW_AKS_FAST_METRICS=false
    keeps MLflow's own handlers. (Basic-auth loaded, as here: fast_store installs its auth checks too.)"""
    from mlflow.server import app, handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    serve = image_modules.load(monkeypatch, "serve")  # it imports this test's own fast_store, fast_metrics
    patched = ("_search_runs", "get_metric_history", "get_metric_history_bulk_interval", "_log_metrics_once")
    for name in (*patched, "log_batch"):
        monkeypatch.setattr(SqlAlchemyStore, name, getattr(SqlAlchemyStore, name))
    for marker in ("_mlflow_aks_fast_store", "_mlflow_aks_fast_metrics"):
        monkeypatch.setattr(SqlAlchemyStore, marker, False, raising=False)  # gone again after the test
    views = (
        handlers._get_metric_history,
        handlers._log_batch,
        handlers._search_runs,
        handlers.get_metric_history_bulk_interval_handler,
    )
    for view in views:
        monkeypatch.setitem(app.view_functions, view.__name__, view)  # fast_store's and fast_metrics' views
    if setting is None:
        monkeypatch.delenv(serve.FAST_METRICS, raising=False)
    else:
        monkeypatch.setenv(serve.FAST_METRICS, setting)
    serve._install_store_patches()
    assert (app.view_functions[handlers._log_batch.__name__] is not handlers._log_batch) is installed
    # The fast get-history endpoint replaces fast_store's (change 14), installed before it.
    assert (app.view_functions[handlers._get_metric_history.__name__].__name__ == "get_history") is installed
    assert SqlAlchemyStore._mlflow_aks_fast_metrics is installed
