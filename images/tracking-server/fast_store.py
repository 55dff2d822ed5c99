"""Faster reads of MLflow's SQL tracking store, with exactly MLflow's answers (serve.py, change 12).

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
- `get_metric_history` (and its pages): the same query as plain rows.
- `get_metric_history_bulk_interval` (the charts' sampled history): MLflow's sampling, NTILE buckets
  and the last point, computed for all the requested runs in one statement (window functions
  partitioned by run) instead of two statements and one check per run.

Only a plain `SqlAlchemyStore` takes these paths: a subclass (workspaces) may filter what a user sees
through hooks these copies do not call, so it keeps MLflow's methods. tests/test_fast_store.py compares
every path against MLflow's own methods over generated runs and queries.

Like serve.py's other patches, this is written against TESTED_MLFLOW_VERSION (serve.py refuses any
other MLflow), because it copies the structure of MLflow's private methods.
"""

from __future__ import annotations

from collections import defaultdict

INSTALLED = "_mlflow_aks_fast_store"


def _plain(store) -> bool:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return type(store) is SqlAlchemyStore


def _metric_value(value: float, is_nan) -> float:
    return float("nan") if is_nan else value


def _run_data_rows(session, run_ids: list[str]):
    """The params, tags and latest metrics of `run_ids`, as plain rows grouped by run."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlTag
    from sqlalchemy import select

    params, tags, metrics = defaultdict(list), defaultdict(list), defaultdict(list)
    if not run_ids:
        return params, tags, metrics
    for run_id, key, value in session.execute(
        select(SqlParam.run_uuid, SqlParam.key, SqlParam.value).where(SqlParam.run_uuid.in_(run_ids))
    ):
        params[run_id].append((key, value))
    for run_id, key, value in session.execute(
        select(SqlTag.run_uuid, SqlTag.key, SqlTag.value).where(SqlTag.run_uuid.in_(run_ids))
    ):
        tags[run_id].append((key, value))
    latest = SqlLatestMetric
    for row in session.execute(
        select(latest.run_uuid, latest.key, latest.value, latest.timestamp, latest.step, latest.is_nan).where(
            latest.run_uuid.in_(run_ids)
        )
    ):
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


def install() -> None:
    """Patch `SqlAlchemyStore` in this process (idempotent)."""
    import mlflow.store.tracking.sqlalchemy_store as sql_store
    from mlflow.entities import LifecycleStage, Metric, Run, RunInputs, RunOutputs
    from mlflow.entities.metric import MetricWithRunId
    from mlflow.store.entities.paged_list import PagedList
    from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlRun
    from mlflow.utils.search_utils import SearchUtils
    from sqlalchemy import func, select

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
            stmt = (
                stmt.distinct()
                .filter(
                    SqlRun.experiment_id.in_(experiment_ids),
                    SqlRun.lifecycle_stage.in_(stages),
                    *attribute_filters,
                )
                .order_by(*parsed_orderby)
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
        if not _plain(self) or not windows or (start_step is None) != (end_step is None):
            return original_interval(self, run_ids, metric_key, max_results, start_step, end_step)
        max_results = max(1, max_results)
        wanted = list(dict.fromkeys(run_ids))
        if not wanted:
            return []
        filters = [SqlMetric.run_uuid.in_(wanted), SqlMetric.key == metric_key]
        if start_step is not None:
            filters += [SqlMetric.step >= start_step, SqlMetric.step <= end_step]
        m = SqlMetric
        ascending = [m.step, m.timestamp, m.value, m.is_nan]
        descending = [m.step.desc(), m.timestamp.desc(), m.value.desc(), m.is_nan.desc()]
        bucketed = (
            select(
                m.run_uuid.label("run_uuid"),
                m.value.label("value"),
                m.timestamp.label("timestamp"),
                m.step.label("step"),
                m.is_nan.label("is_nan"),
                func.ntile(max_results).over(partition_by=m.run_uuid, order_by=ascending).label("bucket"),
                func.row_number().over(partition_by=m.run_uuid, order_by=descending).label("from_last"),
            )
            .where(*filters)
            .subquery()
        )
        b = bucketed.c
        ranked = select(
            b.run_uuid,
            b.value,
            b.timestamp,
            b.step,
            b.is_nan,
            b.from_last,
            func.row_number()
            .over(partition_by=[b.run_uuid, b.bucket], order_by=[b.step, b.timestamp, b.value, b.is_nan])
            .label("in_bucket"),
        ).subquery()
        r = ranked.c
        stmt = (
            select(r.run_uuid, r.value, r.timestamp, r.step, r.is_nan, r.in_bucket, r.from_last)
            .where((r.in_bucket == 1) | (r.from_last == 1))
            .order_by(r.run_uuid, r.step, r.timestamp, r.value, r.is_nan)
        )
        sampled, last = defaultdict(list), {}
        with self.ManagedSessionMaker() as session:
            for run_id in run_ids:
                self._validate_run_accessible(session, run_id)
            for run_id, value, timestamp, step, is_nan, in_bucket, from_last in session.execute(stmt):
                row = (value, timestamp, step, is_nan)
                if in_bucket == 1:
                    sampled[run_id].append(row)
                if from_last == 1:
                    last[run_id] = row

        def key_of(row):  # MLflow's `_row_key`: NaN values compare as None
            value, timestamp, step, is_nan = row
            return (step, timestamp, None if is_nan else value, is_nan)

        result = []
        for run_id in run_ids:
            rows = list(sampled.get(run_id, []))
            last_row = last.get(run_id)
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

    store_class._search_runs = _search_runs
    store_class.get_metric_history = get_metric_history
    store_class.get_metric_history_bulk_interval = get_metric_history_bulk_interval
    setattr(store_class, INSTALLED, True)
