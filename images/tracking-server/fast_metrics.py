"""Long metric histories and bulk metric writes, with exactly MLflow's answers (serve.py, change 15).

Measured on the local stack (benchmarks/scale.py, docs/performance.md), the time of both goes to Python,
not to the database:

- **get-history of a long metric.** MLflow's handler builds a protobuf message per point and writes it
  with an indenting pure-Python JSON encoder; then, for every user but an admin, basic-auth's after-request
  hook `redact_metric_history_model_ids` parses the whole response back into protobuf messages to clear
  each point's `model_id`, a field the SQL store never fills (`SqlMetric.to_mlflow_entity`). Here
  `get_history` reads MLflow's own query (same filter, order, offset and limit, so the same points and
  page tokens) as plain rows and writes each point's JSON directly; the redaction hook is skipped for the
  answers written here, which carry no `model_id` to clear.
- **log_batch of many metrics.** MLflow parses the request into protobuf messages twice (basic-auth's
  `validate_can_log_batch` only to look for `model_id`s, then the handler), validates each metric twice
  (`_validate_batch_log_data`, then `_log_metrics_once`), opens two transactions that each read the run,
  and keeps `latest_metrics` through one ORM object per point. Here a request of plain metrics (the shape
  MLflow's clients send, `plain_metrics`) becomes MLflow's `Metric` entities straight from its JSON, the
  store runs MLflow's checks once, with its messages (`validate_metrics`: each name once), and one
  transaction reads and checks the run, inserts the points, then locks and updates the run's latest
  metrics as MLflow does (`latest_values`), all as plain rows.

Anything else takes MLflow's own code: another request shape (camelCase names, strings for numbers,
NaN, params or tags, a metric naming a logged model or dataset), a store subclass (workspaces), a point
already logged (MLflow's duplicate recovery). tests/test_fast_metrics.py compares every path with
MLflow's over generated histories and batches. Like serve.py's other patches, this copies the structure
of MLflow's private handlers and store methods of TESTED_MLFLOW_VERSION.
"""

from __future__ import annotations

import json
import math

# Beside this file (/app in the image): the get-history endpoint here replaces fast_store's and parses
# requests with its copy of MLflow's code. Importing fast_store patches nothing (MLFLOW_AKS_FAST_STORE=false
# still holds).
from fast_store import history_request

INSTALLED = "_mlflow_aks_fast_metrics"
# Set on a get-history answer written here: it names no logged model, so there is nothing to redact.
NO_MODEL_IDS = "_mlflow_aks_no_model_ids"
METRIC_FIELDS = frozenset(("key", "value", "timestamp", "step"))
INT64 = (-(2**63), 2**63 - 1)


def _plain_store(store) -> bool:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return type(store) is SqlAlchemyStore


# ---------------------------------------------------------------------------------------- histories


def history_rows(session, run_id: str, metric_key: str, offset: int, limit: int | None) -> list[tuple]:
    """MLflow's get_metric_history query (3.17.2): (key, value, timestamp, step, is_nan) per point.

    The filter, order and paging are MLflow's, so ties fall the same way. The key is read from each row:
    MySQL's default collations compare case-insensitively, so `loss` also finds `Loss`. Rows come
    straight from the driver's cursor, without SQLAlchemy's per-row processing; the statement still runs
    through SQLAlchemy, which maps database errors as for MLflow's query.
    """
    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from sqlalchemy import select

    m = SqlMetric
    stmt = (
        select(m.key, m.value, m.timestamp, m.step, m.is_nan)
        .where(m.run_uuid == run_id, m.key == metric_key)
        .order_by(m.timestamp, m.step, m.value)
        .offset(offset)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    result = session.connection().execute(stmt)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def _number(value) -> str:
    """A double as MLflow's JSON writes it (protobuf's JSON mapping): NaN and infinities as strings."""
    if math.isfinite(value):
        return repr(float(value))
    if math.isnan(value):
        return '"NaN"'
    return '"Infinity"' if value > 0 else '"-Infinity"'


def history_json(rows: list[tuple], next_page_token: str | None) -> str:
    """The JSON of MLflow's GetMetricHistory response for `rows` (history_rows), written compact.

    The same JSON value as MLflow's `message_to_json` of the response (tests/test_fast_metrics.py).
    """
    keys: dict[str, str] = {}
    points = []
    append = points.append
    for key, value, timestamp, step, is_nan in rows:
        quoted = keys.get(key) or keys.setdefault(key, json.dumps(key))
        number = '"NaN"' if is_nan else _number(value)
        append(f'{{"key":{quoted},"value":{number},"timestamp":{int(timestamp)},"step":{int(step)}}}')
    parts = []
    if points:
        parts.append('"metrics":[' + ",".join(points) + "]")
    if next_page_token:
        parts.append(f'"next_page_token":{json.dumps(next_page_token)}')
    return "{" + ",".join(parts) + "}"


def history_page(store, run_id: str, metric_key: str, max_results: int | None, page_token: str | None) -> str:
    """What MLflow's store answers for one page of a history (SqlAlchemyStore.get_metric_history), as JSON."""
    from mlflow.utils.search_utils import SearchUtils

    with store.ManagedSessionMaker() as session:
        store._validate_run_accessible(session, run_id)
        offset = SearchUtils.parse_start_offset_from_page_token(page_token)
        rows = history_rows(
            session, run_id, metric_key, offset, None if max_results is None else max_results + 1
        )
    token = None
    if max_results is not None and len(rows) == max_results + 1:
        token = SearchUtils.create_page_token(offset + max_results)
        token = token.decode() if isinstance(token, bytes) else token
        rows = rows[:max_results]
    return history_json(rows, token)


# ---------------------------------------------------------------------------------------- batches


def plain_metrics(request_json) -> list | None:
    """The `Metric` entities MLflow's handler would build from a LogBatch body of plain metrics, or None.

    Plain: `run_id` (a string) and `metrics` only; each metric exactly key (an ASCII string), value (a
    JSON number), timestamp and step (JSON integers in int64). For these, protobuf's parsing and
    `Metric.from_proto` give Metric(key, float(value), timestamp, step) and nothing else, and the body
    holds no field another spelling (camelCase) or a logged model could change. Anything else: None,
    and MLflow's parsing.
    """
    from mlflow.entities import Metric

    if not isinstance(request_json, dict) or request_json.keys() != {"run_id", "metrics"}:
        return None
    items = request_json["metrics"]
    if not isinstance(request_json["run_id"], str) or not isinstance(items, list):
        return None
    low, high = INT64
    metrics = []
    for item in items:
        if type(item) is not dict or item.keys() != METRIC_FIELDS:
            return None
        key, value, timestamp, step = item["key"], item["value"], item["timestamp"], item["step"]
        if (
            type(key) is not str
            or not key.isascii()
            or type(timestamp) is not int
            or type(step) is not int
            or not (low <= timestamp <= high and low <= step <= high)
        ):
            return None
        if type(value) is int and low <= value <= high:
            value = float(value)
        elif type(value) is not float or not math.isfinite(value):
            return None
        metrics.append(Metric(key, value, timestamp, step))
    return metrics


def validate_metrics(metrics: list) -> None:
    """MLflow's checks of each metric in `_validate_batch_log_data` (3.17.2), raising its errors.

    MLflow checks every metric's name again and again (a regex, a path normalisation); the checks are a
    function of the name alone, so here a name that passed once is not checked again. A metric whose
    other fields plainly pass (a number, a non-negative integer timestamp, an integer step) is then
    skipped; any other goes through MLflow's `_validate_metric`, which raises what MLflow raises.
    """
    from mlflow.utils.validation import _validate_metric

    passed: set[str] = set()
    for index, metric in enumerate(metrics):
        key, value, timestamp, step = metric.key, metric.value, metric.timestamp, metric.step
        if (
            type(key) is str
            and key in passed
            and type(value) in (float, int)
            and type(timestamp) is int
            and timestamp >= 0
            and type(step) is int
        ):
            continue
        _validate_metric(key, value, timestamp, step, path=f"metrics[{index}]")
        if type(key) is str:
            passed.add(key)


def latest_values(current, points) -> tuple | None:
    """A key's latest point after `points`, as MLflow's `_update_latest_metrics_if_necessary` decides.

    `current`: the stored latest (value, timestamp, step, is_nan) or None; `points`: the logged points of
    that key in request order. MLflow replaces the latest by a point strictly greater in (step, timestamp,
    value), so the first of equal points stays. None: no change to write.
    """
    best = current
    for point in points:
        value, timestamp, step, _ = point
        if best is None or (step, timestamp, value) > (best[2], best[1], best[0]):
            best = point
    return None if best is current or (current is not None and tuple(best) == tuple(current)) else best


def _log_plain_batch(store, run_id: str, metrics: list) -> None:
    """The points of `metrics` (validated), and the run's latest metrics, in one transaction."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
    from sqlalchemy import case, insert, select, update

    rows, seen, by_key = [], set(), {}
    for metric in metrics:
        if metric in seen:  # MLflow logs a repeated point once (`_log_metrics_once`)
            continue
        seen.add(metric)
        is_nan, value = store.sanitize_metric_value(metric.value)
        row = (value, metric.timestamp, metric.step, is_nan)
        rows.append({"run_uuid": run_id, "key": metric.key, "value": value, "timestamp": metric.timestamp,
                     "step": metric.step, "is_nan": is_nan})  # fmt: skip
        by_key.setdefault(metric.key, []).append(row)
    latest = SqlLatestMetric
    with store.ManagedSessionMaker(read_only=False) as session:
        store._check_run_is_active(store._get_run(run_uuid=run_id, session=session))
        # MLflow's order: the points (its session flushes them before its first query), then the run's
        # latest metrics read, locked in key order, and updated.
        session.execute(insert(SqlMetric.__table__), rows)
        keys = sorted(by_key)
        current = {}
        for low in range(0, len(keys), 500):  # MLflow's batches of keys
            batch = keys[low : low + 500]
            present = [
                key
                for (key,) in session.execute(
                    select(latest.key).where(latest.run_uuid == run_id, latest.key.in_(batch))
                )
            ]
            if present:
                for key, value, timestamp, step, is_nan in session.execute(
                    select(latest.key, latest.value, latest.timestamp, latest.step, latest.is_nan)
                    .where(latest.run_uuid == run_id, latest.key.in_(present))
                    .order_by(latest.run_uuid, latest.key)
                    .with_for_update()
                ):
                    current[key] = (value, timestamp, step, bool(is_nan))
        updates, inserts = [], []
        for key in keys:
            new = latest_values(current.get(key), by_key[key])
            if new is None:
                continue
            values = dict(zip(("value", "timestamp", "step", "is_nan"), new, strict=True))
            (updates if key in current else inserts).append({"key": key, **values})
        if updates:
            # One statement for every changed key (MLflow's flush sends one UPDATE per key).
            table = latest.__table__
            session.execute(
                update(table)
                .where(table.c.run_uuid == run_id, table.c.key.in_([row["key"] for row in updates]))
                .values(
                    {
                        name: case({row["key"]: row[name] for row in updates}, value=table.c.key)
                        for name in ("value", "timestamp", "step", "is_nan")
                    }
                )
            )
        if inserts:
            session.execute(insert(latest.__table__), [{"run_uuid": run_id, **row} for row in inserts])


# ---------------------------------------------------------------------------------------- install


def install() -> None:
    """Patch MLflow's handlers, store and basic-auth hooks in this process (idempotent)."""
    import mlflow.store.tracking.sqlalchemy_store as sql_store
    from flask import Response
    from mlflow.exceptions import MlflowException
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.server import app, handlers
    from mlflow.utils.validation import _validate_batch_log_limits, _validate_run_id
    from sqlalchemy.exc import IntegrityError

    store_class = sql_store.SqlAlchemyStore
    if getattr(store_class, INSTALLED, False):
        return
    original_log_batch = store_class.log_batch

    def log_batch(self, run_id, metrics, params, tags):
        if not _plain_store(self) or params or tags or not metrics or any(m.model_id for m in metrics):
            return original_log_batch(self, run_id, metrics, params, tags)
        # MLflow 3.17.2's SqlAlchemyStore.log_batch: its checks, with their messages (no params or tags).
        _validate_run_id(run_id)
        validate_metrics(metrics)
        _validate_batch_log_limits(metrics, params, tags)
        try:
            # MLflow's retry of a deadlock victim (`_log_metrics`).
            return self._run_with_deadlock_retry(_log_plain_batch, self, run_id, metrics)
        except MlflowException as error:
            if not isinstance(error.__cause__, IntegrityError):
                raise
        # A point logged before: nothing was written; MLflow's path inserts only the new points.
        return original_log_batch(self, run_id, metrics, params, tags)

    history_view = handlers._get_metric_history.__name__
    batch_view = handlers._log_batch.__name__
    mlflow_history, mlflow_batch = app.view_functions[history_view], app.view_functions[batch_view]

    def get_history():
        store = handlers._get_tracking_store()
        if not _plain_store(store):
            return mlflow_history()
        body = history_page(store, *history_request())  # MLflow's request checks, as fast_store's
        response = Response(body, mimetype="application/json")
        setattr(response, NO_MODEL_IDS, True)
        return response

    def metrics_fields_present(metrics):  # MLflow's `_assert_metrics_fields_present`
        for index, item in enumerate(metrics):
            for name in ("key", "value", "timestamp"):
                handlers._assert_required(item.get(name), path=f"metrics[{index}].{name}")

    batch_schema = {
        "run_id": [handlers._assert_string, handlers._assert_required],
        "metrics": [handlers._assert_array, metrics_fields_present],
    }

    def log_batch_view():
        # MLflow 3.17.2's handlers._log_batch, its first check first.
        handlers._validate_batch_log_api_req(handlers._get_request_json())
        request_json = handlers._get_normalized_request_json()
        metrics = plain_metrics(request_json)
        if metrics is None:
            return mlflow_batch()
        # Its schema checks (a plain body parses, so as after a successful parse), then its store call.
        handlers._validate_request_json_with_schema(request_json, batch_schema, True)
        handlers._get_tracking_store().log_batch(
            run_id=request_json["run_id"], metrics=metrics, params=[], tags=[]
        )
        response = Response(mimetype="application/json")
        response.set_data(handlers.message_to_json(LogBatch.Response()))
        return response

    def served(view):
        return handlers.catch_mlflow_exception(handlers._disable_if_artifacts_only(view))

    app.view_functions[history_view] = served(get_history)
    app.view_functions[batch_view] = served(log_batch_view)
    store_class.log_batch = log_batch
    setattr(store_class, INSTALLED, True)


def install_auth_hooks() -> None:
    """With basic-auth: its LogBatch check and get-history redaction, skipped where they cannot act."""
    import mlflow.server.auth as auth

    if getattr(auth, INSTALLED, False):
        return
    original_check, original_redact = auth.validate_can_log_batch, auth.redact_metric_history_model_ids

    def validate_can_log_batch():
        # MLflow's check parses the body only for metrics naming a logged model; a plain one names none.
        # The same request-JSON read as MLflow's (its content-type check).
        if plain_metrics(auth._get_normalized_request_json()) is not None:
            return auth._validate_can_update_run_and_models(set())
        return original_check()

    def redact_metric_history_model_ids(resp) -> None:
        if getattr(resp, NO_MODEL_IDS, False):
            return None
        return original_redact(resp)

    for table, original, replacement in (
        (auth.BEFORE_REQUEST_VALIDATORS, original_check, validate_can_log_batch),
        (auth.AFTER_REQUEST_HANDLERS, original_redact, redact_metric_history_model_ids),
    ):
        for route, handler in list(table.items()):
            if handler is original:
                table[route] = replacement
    setattr(auth, INSTALLED, True)
