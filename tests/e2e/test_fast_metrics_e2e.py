"""serve.py's change 15 on the database the platform runs (MariaDB, MySQL's case-insensitive collation):
histories and log_batch calls answered and stored exactly as MLflow's own store does. The unit tests
(tests/test_fast_metrics.py) compare the same paths on SQLite, with many more generated cases.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import sqlalchemy

from local import LocalStack
from tests import image_modules


@pytest.fixture
def stores(stack: LocalStack, monkeypatch):
    """(store on the stack's tracking database, fast_metrics, MLflow's log_batch); MLflow's back after."""
    from mlflow.server import app, handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for view in (handlers._get_metric_history, handlers._log_batch):
        monkeypatch.setitem(app.view_functions, view.__name__, view)  # install() replaces them
    fast_metrics = image_modules.load(monkeypatch, "fast_metrics")
    original = SqlAlchemyStore.log_batch
    monkeypatch.setattr(SqlAlchemyStore, "log_batch", original)
    monkeypatch.setattr(
        SqlAlchemyStore, fast_metrics.INSTALLED, False, raising=False
    )  # gone again after the test
    fast_metrics.install()
    db = stack.database_settings()
    uri = f"mysql+pymysql://{db['user']}:{db['password']}@{db['host']}:{db['port']}/{db['database']}"
    store = SqlAlchemyStore(uri, stack.artifacts_destination)
    yield store, fast_metrics, original
    store.engine.dispose()


def mlflow_history_json(store, run_id: str, key: str, max_results, token) -> dict:
    """What MLflow's get-history handler answers: its store's page, as its protobuf JSON."""
    from mlflow.protos.service_pb2 import GetMetricHistory
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.utils.proto_json_utils import message_to_json

    # MLflow's own method: this process never installs fast_store (the stack's server runs apart).
    page = SqlAlchemyStore.get_metric_history(store, run_id, key, max_results, token)
    response = GetMetricHistory.Response()
    response.metrics.extend([m.to_proto() for m in page])
    if page.token:
        response.next_page_token = page.token
    return json.loads(message_to_json(response))


def test_histories_and_batches_match_mlflow_on_mariadb(stores):
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store, fast_metrics, original = stores
    rng = random.Random(21)  # noqa: S311 - generated data, the same every run
    experiment = store.create_experiment(f"fast-metrics-{rng.getrandbits(32)}")
    run_id = store.create_run(experiment, "u", 1, [], "history").info.run_id
    # `loss` and `Loss` are one key to MariaDB's collation when read, two when written (other timestamps).
    seeded = {}
    for index in range(1500):
        key = rng.choice(["loss", "loss", "Loss", "acc"])
        value = rng.choice(
            [rng.uniform(-1, 1), 0.0, 1 / 3, 5e-324, 1e-300, 2.5e17, math.nan, math.inf, -math.inf]
        )
        timestamp = rng.randrange(0, 5) + (100 if key == "Loss" else 0)
        is_nan, value = store.sanitize_metric_value(value)
        # The rows MLflow writes, one per primary key (its log_batch refuses `loss` and `Loss` together).
        row = {"run_uuid": run_id, "key": key, "value": value, "timestamp": timestamp, "step": index % 7,
               "is_nan": is_nan}  # fmt: skip
        seeded[(key.lower(), value, timestamp, index % 7, is_nan)] = row
    with store.engine.begin() as conn:
        conn.execute(sqlalchemy.insert(SqlMetric.__table__), list(seeded.values()))
    compared = 0
    for key in ["loss", "Loss", "LOSS", "acc", "absent"]:
        for size in [None, 1, 60, 400] if key == "acc" else [None, 60]:
            token = None
            while True:
                expected = mlflow_history_json(store, run_id, key, size, token)
                actual = json.loads(fast_metrics.history_page(store, run_id, key, size, token))
                assert actual == expected, (key, size, token)
                compared += len(expected.get("metrics", []))
                if not (token := expected.get("next_page_token")):
                    break
    assert compared > 3000

    runs = [store.create_run(experiment, "u", 1, [], name).info.run_id for name in ("mlflow", "fast")]

    def outcome(method, run, batch):
        try:
            return ("ok", method(store, run, batch, [], []))
        except MlflowException as error:  # the message names the run: the same message for either
            return ("error", error.error_code, str(error.message).replace(run, "<run>"))

    for index in range(30):
        base = index * 10
        batch = [
            Metric(rng.choice(["loss", "acc", "lr"]), rng.choice([rng.random(), 0.5, math.nan]),
                   rng.randrange(0, 3), base + rng.randrange(-3, 5))
            for _ in range(rng.choice([1, 10, 100]))
        ]  # fmt: skip
        if rng.random() < 0.15:
            batch.append(Metric("Loss", 1.0, 0, base))  # `loss` to MariaDB: MLflow refuses it, or not
        expected = outcome(original, runs[0], batch)
        actual = outcome(SqlAlchemyStore.log_batch, runs[1], batch)
        assert actual == expected, index

    def rows(run: str) -> list:
        found = []
        with store.engine.connect() as conn:
            for table in ("metrics", "latest_metrics"):
                sql = f"SELECT `key`, value, timestamp, step, is_nan FROM {table} WHERE run_uuid = %s"  # noqa: S608
                found.append(sorted(map(tuple, conn.exec_driver_sql(sql, (run,)).all()), key=repr))
        return found

    assert rows(runs[1]) == rows(runs[0]) and len(rows(runs[0])[0]) > 500
