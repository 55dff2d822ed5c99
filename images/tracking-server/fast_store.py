"""Faster reads of MLflow's SQL tracking store, with exactly MLflow's answers (serve.py, change 14).

The experiment page and long metric histories spend most of their time in SQLAlchemy's ORM, not in the
database: MLflow's `SqlAlchemyStore` builds one ORM object per param, tag and latest metric of every run
on a page (3,300 for 100 runs of 20 params and 10 metrics), one per point of a metric history (100,000
for a long one), and the charts' sampled history asks the database three times per run. Each method
here keeps MLflow's own queries (the same statements, filters, order and paging) and changes only how
their rows become entities:

- `_search_runs` (runs search, the experiment page): MLflow's statement for the page's runs, unchanged,
  without its three `selectinload`s of ORM children; the page's params, tags and latest metrics are
  then read as plain rows, one query each, and become the same `Run` entities `SqlRun.to_mlflow_entity`
  builds (run name from the `mlflow.runName` tag when the column is empty, NaN for `is_nan`).
- `get_metric_history` (and its pages): the same query as plain rows; its endpoint writes the same
  JSON without protobuf messages, compact (`install_history_endpoint`).
- `get_metric_history_bulk_interval` (the charts' sampled history): MLflow's sampling, NTILE buckets
  and the last point, computed for all the requested runs in one statement (window functions
  partitioned by run) instead of two statements and one check per run (a single run keeps MLflow's).
- the endpoints of the runs search (`install_search_runs_endpoint`) and of the charts' sampled histories
  (`install_sampled_histories_endpoint`): the same JSON value, written from the entities without
  protobuf messages, compact.
- two of basic-auth's checks (`install_auth_checks`): the charts' bulk history routes read the runs'
  experiment ids in one statement instead of loading each run in full, and a runs search's answer is
  parsed into protobuf messages only when it has model links to withhold.
- basic-auth's grants query (`install_grants_query`), the first step of every permission decision: the
  same statement, built once instead of as an ORM query on every request.
- in sign-in mode, mlflow-oidc-auth's check of the charts' bulk history routes (`install_sign_in_checks`):
  the runs' experiment ids in one statement instead of one query and session per run.

Only a plain `SqlAlchemyStore` takes these paths: a subclass (workspaces) may filter what a user sees
through hooks these copies do not call, so it keeps MLflow's methods. tests/test_fast_store.py compares
every path against MLflow's own methods over generated runs and queries; tests/e2e/test_fast_search_e2e.py
compares the runs search, its endpoint and the sampled histories on MariaDB. The statements these paths
always send are built once per process (`_statements`).

Like serve.py's other patches, this is written against TESTED_MLFLOW_VERSION (serve.py refuses any
other MLflow), because it copies the structure of MLflow's private methods.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from types import SimpleNamespace

INSTALLED = "_mlflow_aks_fast_store"
# Set on a runs search's response by `install_search_runs_endpoint` when its runs have no model links.
NO_MODEL_LINKS = "_mlflow_aks_no_model_links"


def _plain(store) -> bool:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return type(store) is SqlAlchemyStore


# Dialects where NULL sorts before every value (after them in descending order):
# https://dev.mysql.com/doc/refman/8.4/en/working-with-null.html, https://www.sqlite.org/lang_select.html#orderby
NULLS_SORT_FIRST = ("mysql", "sqlite")


def _without_redundant_null_cases(order: list) -> list:
    """MLflow's ORDER BY without the `CASE WHEN <run column> IS NULL` before a descending run column.

    MLflow puts runs without a value last with that CASE; in a descending order these dialects already
    put NULL last, so the order is the same, and a plain `start_time DESC, run_uuid` can be read from
    migrate.py's index RUNS_NEWEST_INDEX instead of sorting every run of the experiment. The joined
    subqueries of filters and sort keys (params, tags, latest metrics) each hold one row per run at most
    (their primary key is (key, run_uuid) and each filters one key); only dataset filters can repeat a
    run, and with them the caller keeps MLflow's statement as it is.
    """
    from mlflow.store.tracking.dbmodels.models import SqlRun
    from sqlalchemy.sql import operators

    kept = []
    for index, clause in enumerate(order):
        following = order[index + 1] if index + 1 < len(order) else None
        if (
            isinstance(clause, str)
            and getattr(following, "modifier", None) is operators.desc_op
            and getattr(following.element, "table", None) is SqlRun.__table__
        ):
            continue
        kept.append(clause)
    return kept


def _metric_value(value: float, is_nan) -> float:
    return float("nan") if is_nan else value


@functools.cache
def _statements() -> SimpleNamespace:
    """The fast paths' fixed statements, built once per process: Core selects on MLflow's tables (its ORM
    models' `__table__`), every value a bound parameter (`run_ids` expands to the IN list), so a request
    neither builds a statement nor has its cache key computed (SQLAlchemy memoizes a statement's key), and
    the rows come back as plain rows, not through the ORM's loading. The same SQL MLflow's ORM columns
    would give (the columns are the models' own)."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import Integer, String, bindparam, func, select

    run_ids = bindparam("run_ids", expanding=True)
    params, tags, latest = SqlParam.__table__.c, SqlTag.__table__.c, SqlLatestMetric.__table__.c
    runs, m = SqlRun.__table__.c, SqlMetric.__table__.c

    def sampled(steps: bool):
        # The charts' sampled history of many runs in one statement (`get_metric_history_bulk_interval`):
        # one ordered pass per run gives each row's position and the run's count. MLflow keeps the first
        # row of each of `max_results` NTILE buckets, and the last row; NTILE's buckets are the SQL
        # standard's (https://dev.mysql.com/doc/refman/8.4/en/window-function-descriptions.html#function_ntile):
        # of `total` rows, the first `total mod n` buckets hold `total div n + 1` rows, the others
        # `total div n`, so a bucket's first row is found from its position alone.
        max_results = bindparam("max_results", type_=Integer)
        filters = [m.run_uuid.in_(run_ids), m.key == bindparam("metric_key", type_=String)]
        if steps:
            filters += [
                m.step >= bindparam("start_step", type_=Integer),
                m.step <= bindparam("end_step", type_=Integer),
            ]
        ascending = [m.step, m.timestamp, m.value, m.is_nan]
        positioned = (
            select(
                m.run_uuid.label("run_uuid"),
                m.value.label("value"),
                m.timestamp.label("timestamp"),
                m.step.label("step"),
                m.is_nan.label("is_nan"),
                func.row_number().over(partition_by=m.run_uuid, order_by=ascending).label("position"),
                func.count().over(partition_by=m.run_uuid).label("total"),
            )
            .where(*filters)
            .subquery()
        )
        p = positioned.c
        index, size = p.position - 1, p.total // max_results
        larger = (p.total % max_results) * (size + 1)  # rows in the larger buckets
        first_of_bucket = (
            (p.total <= max_results)
            | ((index < larger) & (index % (size + 1) == 0))
            | ((index >= larger) & ((index - larger) % size == 0))
        )
        last = p.position == p.total
        return (
            select(p.run_uuid, p.value, p.timestamp, p.step, p.is_nan, first_of_bucket, last)
            .where(first_of_bucket | last)
            .order_by(p.run_uuid, p.position)
        )

    return SimpleNamespace(
        params=select(params.run_uuid, params.key, params.value).where(params.run_uuid.in_(run_ids)),
        tags=select(tags.run_uuid, tags.key, tags.value).where(tags.run_uuid.in_(run_ids)),
        latest_metrics=select(
            latest.run_uuid, latest.key, latest.value, latest.timestamp, latest.step, latest.is_nan
        ).where(latest.run_uuid.in_(run_ids)),
        run_experiments=select(
            runs.run_uuid, runs.experiment_id, runs.user_id, runs.status, runs.start_time
        ).where(runs.run_uuid.in_(run_ids)),
        sampled=sampled(steps=False),
        sampled_steps=sampled(steps=True),
    )


def _run_data_rows(session, run_ids: list[str]):
    """The params, tags and latest metrics of `run_ids`, as plain rows grouped by run."""
    params, tags, metrics = defaultdict(list), defaultdict(list), defaultdict(list)
    if not run_ids:
        return params, tags, metrics
    statements, bound = _statements(), {"run_ids": run_ids}
    for run_id, key, value in session.execute(statements.params, bound):
        params[run_id].append((key, value))
    for run_id, key, value in session.execute(statements.tags, bound):
        tags[run_id].append((key, value))
    for row in session.execute(statements.latest_metrics, bound):
        metrics[row[0]].append(row[1:])
    return params, tags, metrics


def _to_run(sql_run, params, tags, metrics):
    """What `SqlRun.to_mlflow_entity` returns, from the run's row and its children's rows."""
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
    from mlflow.utils.mlflow_tags import _get_run_name_from_tags

    run_info = RunInfo(
        run_id=sql_run.run_uuid,
        run_name=sql_run.name,
        experiment_id=str(sql_run.experiment_id),
        user_id=sql_run.user_id,
        status=sql_run.status,
        start_time=sql_run.start_time,
        end_time=sql_run.end_time,
        lifecycle_stage=sql_run.lifecycle_stage,
        artifact_uri=sql_run.artifact_uri,
    )
    run_tags = [RunTag(key, value) for key, value in tags]
    run_data = RunData(
        metrics=[
            Metric(key=key, value=_metric_value(value, is_nan), timestamp=timestamp, step=step)
            for key, value, timestamp, step, is_nan in metrics
        ],
        params=[Param(key, value) for key, value in params],
        tags=run_tags,
    )
    if not run_info.run_name and (run_name := _get_run_name_from_tags(run_tags)):
        run_info._set_run_name(run_name)
    return Run(run_info=run_info, run_data=run_data)


def _json_number(value: float):
    """A double as protobuf's JSON mapping writes it: NaN and the infinities as strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def metric_history_json(metrics, next_page_token: str | bytes | None) -> str:
    """The JSON of MLflow's GetMetricHistory response for `metrics`, without protobuf messages.

    The same JSON value as MLflow's `message_to_json` of the response (tests/test_fast_store.py), written
    compact: MLflow indents it with Python's pure-Python encoder, which for 100,000 points takes seconds
    and doubles the bytes sent.
    """
    body: dict = {}
    if metrics:
        body["metrics"] = [
            {"key": m.key, "value": _json_number(m.value), "timestamp": m.timestamp, "step": m.step}
            for m in metrics
        ]
    if next_page_token:  # the store's tokens are bytes (SearchUtils.create_page_token), the proto's a string
        body["next_page_token"] = (
            next_page_token.decode() if isinstance(next_page_token, bytes) else next_page_token
        )
    return json.dumps(body, separators=(",", ":"))


def history_request() -> tuple[str, str, int | None, str | None]:
    """(run_id, metric_key, max_results, page_token) of this get-history request, or MLflow's error.

    MLflow 3.17.2's parsing and checks in `handlers._get_metric_history`, up to its store call: the one
    copy, for this module's endpoint and fast_metrics.py's, which replaces it (change 15).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.protos.service_pb2 import GetMetricHistory
    from mlflow.server import handlers

    request_message = handlers._get_request_message(
        GetMetricHistory(),
        schema={
            "run_id": [handlers._assert_string, handlers._assert_required],
            "metric_key": [handlers._assert_string, handlers._assert_required],
            "page_token": [handlers._assert_string],
        },
    )
    run_id = request_message.run_id or request_message.run_uuid
    max_results = request_message.max_results if request_message.HasField("max_results") else None
    if max_results is not None and max_results <= 0:
        raise MlflowException(
            f"Invalid value {max_results} for parameter 'max_results' supplied. "
            "It must be a positive integer.",
            error_code=INVALID_PARAMETER_VALUE,
        )
    return run_id, request_message.metric_key, max_results, request_message.page_token or None


def _replace_view(original, view) -> None:
    """Serve `view` where MLflow's app serves its handler `original`, wrapped as MLflow wraps its handlers
    (errors as MLflow's JSON, refused on an artifacts-only server); once: a second call keeps the first."""
    from mlflow.server import app, handlers

    if getattr(app.view_functions.get(original.__name__), INSTALLED, False):
        return
    handler = handlers.catch_mlflow_exception(handlers._disable_if_artifacts_only(view))
    setattr(handler, INSTALLED, True)
    app.view_functions[original.__name__] = handler


def install_history_endpoint() -> None:
    """`GET/POST .../metrics/get-history` answered by `metric_history_json` (idempotent).

    MLflow's handler `_get_metric_history`, with its request checks, and the response body written by
    `metric_history_json` instead of protobuf messages and `message_to_json`.
    """
    from flask import Response
    from mlflow.server import handlers

    def get_metric_history():
        run_id, metric_key, max_results, page_token = history_request()
        metrics = handlers._get_tracking_store().get_metric_history(
            run_id, metric_key, max_results=max_results, page_token=page_token
        )
        response = Response(mimetype="application/json")
        response.set_data(metric_history_json(metrics, metrics.token))
        return response

    _replace_view(handlers._get_metric_history, get_metric_history)


def sampled_histories_json(metrics) -> str:
    """The JSON of MLflow's GetMetricHistoryBulkInterval response for `metrics` (`MetricWithRunId`s), without
    protobuf messages: `MetricWithRunId.to_proto` sets all five fields, written in the proto's order."""
    body: dict = {}
    if metrics:
        body["metrics"] = [
            {
                "key": m.key,
                "value": _json_number(m.value),
                "timestamp": m.timestamp,
                "step": m.step,
                "run_id": m.run_id,
            }
            for m in metrics
        ]
    return json.dumps(body, separators=(",", ":"))


def install_sampled_histories_endpoint() -> None:
    """`GET .../metrics/get-history-bulk-interval` (the charts' call) answered by `sampled_histories_json`
    (idempotent): MLflow's handler and its `get_metric_history_bulk_interval_impl`, their request checks
    and store call unchanged, the response written without protobuf messages and `message_to_json`."""
    from flask import Response, request
    from mlflow.exceptions import MlflowException
    from mlflow.protos.service_pb2 import GetMetricHistoryBulkInterval
    from mlflow.server import handlers

    def get_metric_history_bulk_interval():
        # From here to the store: MLflow 3.17.2's handlers.get_metric_history_bulk_interval_handler and
        # get_metric_history_bulk_interval_impl.
        most_runs = handlers.MAX_RUNS_GET_METRIC_HISTORY_BULK
        request_message = handlers._get_request_message(
            GetMetricHistoryBulkInterval(),
            schema={
                "run_ids": [
                    handlers._assert_required,
                    handlers._assert_array,
                    handlers._assert_item_type_string,
                    lambda x: handlers._assert_less_than_or_equal(
                        len(x),
                        most_runs,
                        message=f"GetMetricHistoryBulkInterval request must specify at most "
                        f"{most_runs} run_ids. Received {len(x)} run_ids.",
                    ),
                ],
                "metric_key": [handlers._assert_required, handlers._assert_string],
                "start_step": [handlers._assert_intlike],
                "end_step": [handlers._assert_intlike],
                "max_results": [
                    handlers._assert_intlike,
                    lambda x: handlers._assert_intlike_within_range(
                        int(x),
                        1,
                        handlers.MAX_RESULTS_PER_RUN,
                        message=f"max_results must be between 1 and {handlers.MAX_RESULTS_PER_RUN}.",
                    ),
                ],
            },
        )
        args = request.args
        max_results = int(args.get("max_results", handlers.MAX_RESULTS_PER_RUN))
        start_step, end_step = args.get("start_step"), args.get("end_step")
        if start_step is not None and end_step is not None:
            start_step, end_step = int(start_step), int(end_step)
            if start_step > end_step:
                raise MlflowException.invalid_parameter_value(
                    "end_step must be greater than start_step. "
                    f"Found start_step={start_step} and end_step={end_step}."
                )
        elif start_step is not None or end_step is not None:
            raise MlflowException.invalid_parameter_value(
                "If either start step or end step are specified, both must be specified."
            )
        metrics = handlers._get_tracking_store().get_metric_history_bulk_interval(
            run_ids=request_message.run_ids,
            metric_key=request_message.metric_key,
            max_results=max_results,
            start_step=start_step,
            end_step=end_step,
        )
        response = Response(mimetype="application/json")
        response.set_data(sampled_histories_json(metrics))
        return response

    _replace_view(handlers.get_metric_history_bulk_interval_handler, get_metric_history_bulk_interval)


def _message_dict(message) -> dict:
    """What MLflow's `message_to_json` writes for `message`, as a dict (int64 fields as numbers)."""
    from google.protobuf.json_format import MessageToDict
    from mlflow.utils.proto_json_utils import _mark_int64_fields, _merge_json_dicts

    return _merge_json_dicts(
        _mark_int64_fields(message), MessageToDict(message, preserving_proto_field_name=True)
    )


def _plain_run(run) -> bool:
    """Whether `run_dict` writes this run itself: the fields a runs search loads, of the types the proto
    takes, no dataset or model inputs or outputs, no metric linked to a model or a dataset."""
    from mlflow.entities import RunStatus

    info, data = run.info, run.data
    return (
        all(isinstance(v, str) for v in (info.run_id, info.experiment_id, info.user_id, info.lifecycle_stage))
        and isinstance(info.run_name, str | None)
        and isinstance(info.artifact_uri, str | None)
        and type(info.start_time) is int
        and (info.end_time is None or type(info.end_time) is int)
        and info.status in RunStatus._STRING_TO_STATUS
        and not (run.inputs and (run.inputs.dataset_inputs or run.inputs.model_inputs))
        and not (run.outputs and run.outputs.model_outputs)
        and all(
            isinstance(m.key, str)
            and type(m.value) in (float, int)
            and type(m.timestamp) is int
            and type(m.step) is int
            and not (m.model_id or m.dataset_name or m.dataset_digest or m.run_id)
            for m in data._metric_objs
        )
        and all(
            isinstance(k, str) and isinstance(v, str) for k, v in (*data.params.items(), *data.tags.items())
        )
    )


def run_dict(run, plain: bool | None = None) -> dict:
    """The run as MLflow's JSON has it (`message_to_json` of `run.to_proto()`), built without protobuf.

    Mirrors `Run.to_proto` (RunInfo, RunData, Metric) and protobuf's JSON mapping of what it sets: a field
    set by `to_proto` is written even when empty, an empty repeated field is not, enums by name, doubles
    with NaN and the infinities as strings. A run `_plain_run` does not cover takes MLflow's conversion
    (`plain`: that check's answer, when the caller has it).
    """
    if not (_plain_run(run) if plain is None else plain):
        return _message_dict(run.to_proto())
    info, data = run.info, run.data
    body_info = {"run_uuid": info.run_id, "experiment_id": info.experiment_id}
    if info.run_name is not None:
        body_info["run_name"] = info.run_name
    body_info.update(user_id=info.user_id, status=info.status, start_time=info.start_time)
    if info.end_time:
        body_info["end_time"] = info.end_time
    if info.artifact_uri:
        body_info["artifact_uri"] = info.artifact_uri
    body_info.update(lifecycle_stage=info.lifecycle_stage, run_id=info.run_id)
    body_data: dict = {}
    if data._metric_objs:
        body_data["metrics"] = [
            {"key": m.key, "value": _json_number(float(m.value)), "timestamp": m.timestamp, "step": m.step}
            for m in data._metric_objs
        ]
    if data.params:
        body_data["params"] = [{"key": k, "value": v} for k, v in data.params.items()]
    if data.tags:
        body_data["tags"] = [{"key": k, "value": v} for k, v in data.tags.items()]
    body = {"info": body_info, "data": body_data}
    # Run.to_proto merges inputs and outputs when they are there, which sets the (empty) fields.
    if run.inputs:
        body["inputs"] = {}
    if run.outputs:
        body["outputs"] = {}
    return body


def search_runs_json(runs, next_page_token: str | None) -> str:
    """The JSON of MLflow's SearchRuns response for `runs`, without protobuf messages (compact)."""
    return search_runs_answer(runs, next_page_token)[0]


def search_runs_answer(runs, next_page_token: str | None) -> tuple[str, bool]:
    """`search_runs_json`, and whether every run is plain (`_plain_run`): then the answer has no model
    input, output or metric model id, nothing basic-auth's redaction could withhold."""
    body: dict = {}
    plain = [_plain_run(run) for run in runs]
    if runs:
        body["runs"] = [run_dict(run, run_plain) for run, run_plain in zip(runs, plain, strict=True)]
    if next_page_token:  # the store's tokens are bytes (SearchUtils.create_page_token), the proto's a string
        body["next_page_token"] = (
            next_page_token.decode() if isinstance(next_page_token, bytes) else next_page_token
        )
    return json.dumps(body, separators=(",", ":")), all(plain)


def install_search_runs_endpoint() -> None:
    """`POST .../runs/search` answered by `search_runs_json` (idempotent).

    MLflow's handler `_search_runs` and its `search_runs_impl`, with the response written from the runs
    the store returns instead of protobuf messages and `message_to_json` (which indents it with Python's
    pure-Python encoder): the same JSON value.
    """
    from flask import Response
    from mlflow.entities import ViewType
    from mlflow.protos.service_pb2 import SearchRuns
    from mlflow.server import handlers

    def search_runs():
        # From here to the store: MLflow 3.17.2's handlers._search_runs and search_runs_impl.
        request_message = handlers._get_request_message(
            SearchRuns(),
            schema={
                "experiment_ids": [handlers._assert_array],
                "filter": [handlers._assert_string],
                "max_results": [
                    handlers._assert_intlike,
                    lambda x: handlers._assert_less_than_or_equal(int(x), 50000),
                ],
                "order_by": [handlers._assert_array, handlers._assert_item_type_string],
            },
        )
        run_view_type = ViewType.ACTIVE_ONLY
        if request_message.HasField("run_view_type"):
            run_view_type = ViewType.from_proto(request_message.run_view_type)
        experiment_ids = list(request_message.experiment_ids)
        try:
            from mlflow.server import auth

            if auth.auth_config:
                experiment_ids = auth.filter_experiment_ids(experiment_ids)
        except ImportError:
            pass
        run_entities = handlers._get_tracking_store().search_runs(
            experiment_ids=experiment_ids,
            filter_string=request_message.filter,
            run_view_type=run_view_type,
            max_results=request_message.max_results,
            order_by=request_message.order_by,
            page_token=request_message.page_token or None,
        )
        response = Response(mimetype="application/json")
        text, plain = search_runs_answer(run_entities, run_entities.token)
        response.set_data(text)
        # For basic-auth's check of the answer (`install_auth_checks`): nothing to withhold, no need to parse.
        setattr(response, NO_MODEL_LINKS, plain)
        return response

    _replace_view(handlers._search_runs, search_runs)


def _links_models(body: dict) -> bool:
    """Whether a SearchRuns response (JSON) has what basic-auth's redaction may withhold: a run's model
    inputs or outputs, or a metric's model id (`_withhold_denied_run_model_links`)."""
    return any(
        (run.get("inputs") or {}).get("model_inputs")
        or (run.get("outputs") or {}).get("model_outputs")
        or any(metric.get("model_id") for metric in (run.get("data") or {}).get("metrics", []))
        for run in body.get("runs", [])
    )


def run_experiment_ids(store, run_ids, whole_runs: bool = True) -> dict[str, str] | None:
    """The experiment id of each of `run_ids` (in one query), or None when one of them does not exist or
    has no experiment; with `whole_runs`, also when `get_run` would fail for one of them because `RunInfo`
    refuses its row (no user, status or start time)."""
    wanted = list(dict.fromkeys(run_ids))
    with store.ManagedSessionMaker() as session:
        found = {
            run_id: str(experiment_id)
            for run_id, experiment_id, *required in session.execute(
                _statements().run_experiments, {"run_ids": wanted}
            )
            if experiment_id is not None and not (whole_runs and None in required)
        }
    return found if len(found) == len(wanted) else None


def install_auth_checks() -> None:
    """Two of basic-auth's checks, deciding as MLflow's do with less work (idempotent; basic-auth loaded).

    - The bulk history routes' permission check (the charts' get-history-bulk-interval): MLflow's
      `validate_can_read_metric_history_bulk` loads every requested run in full (`get_run`: the run, its
      params, tags, latest metrics, inputs and outputs) only to read its experiment id, 60 statements for
      each chart of the experiment page. Here one statement reads the experiment ids, and MLflow's own
      `_authorize_bulk_in_experiments` decides; when a run does not exist, MLflow's check runs and raises
      its own error.
    - The runs search's response check (`redact_search_runs_model_links`): MLflow parses the whole answer
      into protobuf messages (the page's 3,000 params, tags and metrics) to find model links it may have
      to withhold. Here a response with no model input, output or metric model id, which MLflow's check
      would leave as it is, is left as it is: known so from its runs when this module's endpoint wrote it
      (`NO_MODEL_LINKS`), else found by looking through its JSON; any other response takes MLflow's check.
    """
    import mlflow.server.auth as auth
    from flask import request
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    original_bulk = auth.validate_can_read_metric_history_bulk
    original_redact = auth.redact_search_runs_model_links
    if getattr(original_bulk, INSTALLED, False):
        return

    def validate_can_read_metric_history_bulk(run_ids=None):
        # MLflow 3.17.2's auth.validate_can_read_metric_history_bulk, but for the experiment ids' query.
        if run_ids is None:
            run_ids = request.args.to_dict(flat=False).get("run_id", [])
        if not run_ids:
            raise MlflowException(
                "GetMetricHistoryBulk request must specify at least one run_id.",
                INVALID_PARAMETER_VALUE,
            )
        store = auth._get_tracking_store()
        experiments = run_experiment_ids(store, run_ids) if _plain(store) else None
        if experiments is None:
            return original_bulk(run_ids)
        experiment_ids = [experiments[run_id] for run_id in run_ids]
        return auth._authorize_bulk_in_experiments(experiment_ids, auth.RESOURCE_TYPE_RUN, "read")

    def redact_search_runs_model_links(resp) -> None:
        if getattr(resp, NO_MODEL_LINKS, False):  # written by this module's endpoint from plain runs
            return None
        body = resp.get_json(silent=True)
        if isinstance(body, dict) and not _links_models(body):
            return None
        return original_redact(resp)

    setattr(validate_can_read_metric_history_bulk, INSTALLED, True)
    # The interval route's check calls this one by its module name; the bulk route's is in the table.
    auth.validate_can_read_metric_history_bulk = validate_can_read_metric_history_bulk
    for route, validator in list(auth.BEFORE_REQUEST_VALIDATORS.items()):
        if validator is original_bulk:
            auth.BEFORE_REQUEST_VALIDATORS[route] = validate_can_read_metric_history_bulk
    for route, handler in list(auth.AFTER_REQUEST_HANDLERS.items()):
        if handler is original_redact:
            auth.AFTER_REQUEST_HANDLERS[route] = redact_search_runs_model_links


def install_sign_in_checks() -> None:
    """mlflow-oidc-auth's check of the charts' bulk history routes (sign-in mode, serve.py change 11) with the
    runs' experiment ids read in one statement (idempotent; the plugin loaded).

    The plugin's `validate_can_read_metric_history_bulk_interval` (10.2.0, validators/run.py) reads each
    requested run's row on its own (`get_run_experiment_id`: an ORM query and a database session per run,
    10 per chart and 100 per experiment page), then asks for the experiment's permission, run by run, and
    refuses at the first run the user may not read. Here `run_experiment_ids` reads them all at once and
    the same permission questions follow in the same order; a request it cannot answer that way (no run,
    a run missing or incomplete, a store subclass) takes the plugin's check, with its error.
    """
    from mlflow_oidc_auth.hooks import before_request as hooks
    from mlflow_oidc_auth.validators import run as run_checks

    original = run_checks.validate_can_read_metric_history_bulk_interval
    if getattr(original, INSTALLED, False):
        return

    def validate_can_read_metric_history_bulk_interval(username: str) -> bool:
        # From here: mlflow-oidc-auth 10.2.0's check, but for the experiment ids' query.
        run_ids = run_checks.all_source_values("run_ids", "run_id")
        store = run_checks._get_tracking_store()
        # The plugin reads each run's row alone (`_get_run`), which any existing run has: no whole-run check.
        wanted = [str(run_id) for run_id in run_ids]
        experiments = (
            run_experiment_ids(store, wanted, whole_runs=False) if wanted and _plain(store) else None
        )
        if experiments is None:
            return original(username)
        for run_id in wanted:
            if not run_checks.effective_experiment_permission(
                experiments[run_id], username
            ).permission.can_read:
                return False
        return True

    setattr(validate_can_read_metric_history_bulk_interval, INSTALLED, True)
    run_checks.validate_can_read_metric_history_bulk_interval = validate_can_read_metric_history_bulk_interval
    for table in vars(hooks).values():
        if isinstance(table, dict):
            for route, check in list(table.items()):
                if check is original:
                    table[route] = validate_can_read_metric_history_bulk_interval


@functools.cache
def _grants_statement():
    """basic-auth's `list_grants` query (MLflow 3.17.2, auth/sqlalchemy_store.py) as one Core statement built
    once: the same tables, joins and filters, its values bound (`resource_types` expands to the IN list)."""
    from mlflow.server.auth.db.models import SqlRole, SqlRolePermission, SqlUserRoleAssignment
    from sqlalchemy import Integer, String, bindparam, select

    grant, role, assignment = SqlRolePermission.__table__, SqlRole.__table__, SqlUserRoleAssignment.__table__
    return (
        select(grant.c.resource_type, grant.c.resource_pattern, grant.c.permission)
        .select_from(
            grant.join(role, role.c.id == grant.c.role_id).join(assignment, role.c.id == assignment.c.role_id)
        )
        .where(
            assignment.c.user_id == bindparam("user_id", type_=Integer),
            role.c.workspace == bindparam("workspace", type_=String),
            grant.c.resource_type.in_(bindparam("resource_types", expanding=True)),
        )
    )


def install_grants_query() -> None:
    """basic-auth's store reads a user's role grants (`list_grants`, once per checked request: every
    permission decision starts there) with `_grants_statement` instead of building MLflow's ORM query
    each time; the same rows, checks and errors (idempotent). tests/test_fast_store.py compares it with
    MLflow's over generated roles, grants and users."""
    from mlflow.server.auth import sqlalchemy_store as auth_store
    from mlflow.server.auth.permissions import RESOURCE_TYPE_WORKSPACE, _validate_resource_type

    store_class = auth_store.SqlAlchemyStore
    if getattr(store_class.list_grants, INSTALLED, False):
        return
    original = store_class.list_grants

    def list_grants(self, user_id, workspace, resource_types):
        if type(self) is not store_class:  # a subclass may change what a user is granted: MLflow's
            return original(self, user_id, workspace, resource_types)
        # From here: MLflow 3.17.2's SqlAlchemyStore.list_grants, with the statement built once.
        types = set(resource_types)
        for resource_type in types:
            _validate_resource_type(resource_type)
        types.add(RESOURCE_TYPE_WORKSPACE)
        bound = {"user_id": user_id, "workspace": workspace, "resource_types": sorted(types)}
        with self.ManagedSessionMaker() as session:
            return [auth_store.RoleGrantRow(*row) for row in session.execute(_grants_statement(), bound)]

    setattr(list_grants, INSTALLED, True)
    store_class.list_grants = list_grants


def install() -> None:
    """Patch `SqlAlchemyStore` in this process (idempotent)."""
    import mlflow.store.tracking.sqlalchemy_store as sql_store
    from mlflow.entities import LifecycleStage, Metric, Run, RunInputs, RunOutputs
    from mlflow.entities.metric import MetricWithRunId
    from mlflow.exceptions import MlflowException
    from mlflow.store.entities.paged_list import PagedList
    from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlRun
    from mlflow.utils.search_utils import SearchUtils
    from sqlalchemy import insert, select
    from sqlalchemy.exc import IntegrityError

    store_class = sql_store.SqlAlchemyStore
    if getattr(store_class, INSTALLED, False):
        return
    original_search_runs = store_class._search_runs
    original_history = store_class.get_metric_history
    original_interval = store_class.get_metric_history_bulk_interval

    def _search_runs(self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
        if not _plain(self):
            return original_search_runs(
                self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token
            )
        # From here to `queried_runs`: MLflow 3.17.2's SqlAlchemyStore._search_runs, without
        # `.options(*self._get_eager_run_query_options())`.
        self._validate_max_results_param(max_results, allow_null=True)
        stages = set(LifecycleStage.view_type_to_stages(run_view_type))
        with self.ManagedSessionMaker() as session:
            parsed_filters = SearchUtils.parse_search_filter(filter_string)
            cases_orderby, parsed_orderby, sorting_joins = sql_store._get_orderby_clauses(order_by, session)
            stmt = select(SqlRun, *cases_orderby)
            attribute_filters, non_attribute_filters, dataset_filters = (
                sql_store._get_sqlalchemy_filter_clauses(parsed_filters, session, self._get_dialect())
            )
            for non_attr_filter in non_attribute_filters:
                stmt = stmt.join(non_attr_filter)
            for dataset_filter in dataset_filters:
                stmt = stmt.join(dataset_filter, SqlRun.run_uuid == dataset_filter.c.destination_id)
            for j in sorting_joins:
                stmt = stmt.outerjoin(j)
            offset = SearchUtils.parse_start_offset_from_page_token(page_token)
            experiment_ids = sql_store._parse_experiment_ids(experiment_ids)
            experiment_ids = self._filter_experiment_ids(session, experiment_ids)
            if dataset_filters or self._get_dialect() not in NULLS_SORT_FIRST:
                stmt = stmt.distinct()
                order = parsed_orderby
            else:
                # Without dataset filters the statement joins at most one row per run (below), so
                # DISTINCT changes nothing but makes MySQL sort every match in a temporary table.
                order = _without_redundant_null_cases(parsed_orderby)
            stmt = (
                stmt.filter(
                    SqlRun.experiment_id.in_(experiment_ids),
                    SqlRun.lifecycle_stage.in_(stages),
                    *attribute_filters,
                )
                .order_by(*order)
                .offset(offset)
            )
            if max_results is not None:
                stmt = stmt.limit(max_results + 1)
            queried_runs = session.execute(stmt).scalars(SqlRun).all()

            run_ids = [run.run_uuid for run in queried_runs]
            params, tags, metrics = _run_data_rows(session, run_ids)
            runs = [
                _to_run(r, params[r.run_uuid], tags[r.run_uuid], metrics[r.run_uuid]) for r in queried_runs
            ]
            inputs = self._get_run_inputs(run_uuids=run_ids, session=session)
            model_outputs_map = self._get_model_outputs_bulk(run_ids=run_ids, session=session)
            runs = [
                Run(
                    run.info,
                    run.data,
                    RunInputs(dataset_inputs=inputs[i]),
                    RunOutputs(model_outputs_map[run.info.run_id]),
                )
                for i, run in enumerate(runs)
            ]
            next_page_token = None
            if max_results is not None and len(runs) == max_results + 1:
                next_page_token = SearchUtils.create_page_token(offset + max_results)
                runs = runs[:max_results]
        return runs, next_page_token

    def get_metric_history(self, run_id, metric_key, max_results=None, page_token=None):
        if not _plain(self):
            return original_history(self, run_id, metric_key, max_results, page_token)
        with self.ManagedSessionMaker() as session:
            self._validate_run_accessible(session, run_id)
            offset = SearchUtils.parse_start_offset_from_page_token(page_token)
            stmt = (
                select(SqlMetric.key, SqlMetric.value, SqlMetric.timestamp, SqlMetric.step, SqlMetric.is_nan)
                .where(SqlMetric.run_uuid == run_id, SqlMetric.key == metric_key)
                .order_by(SqlMetric.timestamp, SqlMetric.step, SqlMetric.value)
                .offset(offset)
            )
            if max_results is not None:
                stmt = stmt.limit(max_results + 1)
            rows = session.execute(stmt).all()
        next_token = None
        if max_results is not None and len(rows) == max_results + 1:
            next_token = SearchUtils.create_page_token(offset + max_results)
            rows = rows[:max_results]
        return PagedList(
            [
                Metric(key=key, value=_metric_value(value, is_nan), timestamp=timestamp, step=step)
                for key, value, timestamp, step, is_nan in rows
            ],
            next_token,
        )

    def get_metric_history_bulk_interval(self, run_ids, metric_key, max_results, start_step, end_step):
        with self.ManagedSessionMaker() as session:
            windows = self._supports_window_functions(session)
        wanted = list(dict.fromkeys(run_ids))
        # One run: MLflow's two statements, whose NTILE pass is cheaper on one long history than the
        # position and count of every row that sampling many runs at once needs.
        if not _plain(self) or not windows or (start_step is None) != (end_step is None) or len(wanted) < 2:
            return original_interval(self, run_ids, metric_key, max_results, start_step, end_step)
        max_results = max(1, max_results)
        stmt, bound = _statements().sampled, {"run_ids": wanted, "metric_key": metric_key}
        bound["max_results"] = max_results
        if start_step is not None:
            stmt = _statements().sampled_steps
            bound.update(start_step=start_step, end_step=end_step)
        sampled, last_rows = defaultdict(list), {}
        with self.ManagedSessionMaker() as session:
            for run_id in run_ids:
                self._validate_run_accessible(session, run_id)
            for run_id, value, timestamp, step, is_nan, starts_bucket, is_last in session.execute(
                stmt, bound
            ):
                row = (value, timestamp, step, is_nan)
                if starts_bucket:
                    sampled[run_id].append(row)
                if is_last:
                    last_rows[run_id] = row

        def key_of(row):  # MLflow's `_row_key`: NaN values compare as None
            value, timestamp, step, is_nan = row
            return (step, timestamp, None if is_nan else value, is_nan)

        result = []
        for run_id in run_ids:
            rows = list(sampled.get(run_id, []))
            last_row = last_rows.get(run_id)
            if last_row is not None and (not rows or key_of(rows[-1]) != key_of(last_row)):
                if len(rows) >= max_results:
                    rows[-1] = last_row
                else:
                    rows.append(last_row)
            result.extend(
                MetricWithRunId(
                    run_id=run_id,
                    metric=Metric(
                        key=metric_key,
                        value=_metric_value(value, is_nan),
                        timestamp=timestamp,
                        step=step,
                    ),
                )
                for value, timestamp, step, is_nan in rows
            )
        return result

    original_log_metrics_once = store_class._log_metrics_once

    def _log_metrics_once(self, run_id, metrics):
        """MLflow's `_log_metrics_once` (log_metric, log_batch), the new rows inserted as plain rows.

        MLflow builds one ORM object per metric and lets the session flush them; here the same rows
        go in one multi-row INSERT in the same transaction, and MLflow's own latest-metrics update
        reads them as plain values. A duplicate point (the primary key exists) takes MLflow's path.
        """
        if not _plain(self):
            return original_log_metrics_once(self, run_id, metrics)
        rows, seen = [], set()
        is_single_metric = len(metrics) == 1
        for idx, metric in enumerate(metrics):
            sql_store._validate_metric(
                metric.key,
                metric.value,
                metric.timestamp,
                metric.step,
                path="" if is_single_metric else f"metrics[{idx}]",
            )
            if metric not in seen:
                is_nan, value = self.sanitize_metric_value(metric.value)
                rows.append(
                    SimpleNamespace(
                        run_uuid=run_id,
                        key=metric.key,
                        value=value,
                        timestamp=metric.timestamp,
                        step=metric.step,
                        is_nan=is_nan,
                    )
                )
            seen.add(metric)
        try:
            with self.ManagedSessionMaker(read_only=False) as session:
                run = self._get_run(run_uuid=run_id, session=session)
                self._check_run_is_active(run)
                # MLflow's order: the run's latest metrics locked and updated, then the new points.
                self._update_latest_metrics_if_necessary(rows, session)
                if rows:
                    session.execute(insert(SqlMetric.__table__), [vars(row) for row in rows])
                session.commit()
        except MlflowException as error:
            if not isinstance(error.__cause__, IntegrityError):
                raise
            # A point already logged: MLflow's recovery (which inserts only the new points).
            return original_log_metrics_once(self, run_id, metrics)
        return None

    store_class._log_metrics_once = _log_metrics_once
    store_class._search_runs = _search_runs
    store_class.get_metric_history = get_metric_history
    store_class.get_metric_history_bulk_interval = get_metric_history_bulk_interval
    setattr(store_class, INSTALLED, True)
