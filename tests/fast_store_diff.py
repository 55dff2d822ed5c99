"""Shared by the differential tests of images/tracking-server/fast_store.py: its installation (undone
after the test), generated runs, runs searches, and the charts' sampled-history reads and requests.
tests/test_fast_store.py compares on SQLite, tests/e2e/test_fast_search_e2e.py on MariaDB (the same
generators, with `variants` for what MariaDB compares its own way).
"""

from __future__ import annotations

import json
import math
import random

import sqlalchemy

from tests import image_modules

# The SqlAlchemyStore methods fast_store.install() replaces.
PATCHED = ("_search_runs", "get_metric_history", "get_metric_history_bulk_interval", "_log_metrics_once")


def install_fast_store(monkeypatch) -> tuple:
    """fast_store installed on SqlAlchemyStore: (the module, MLflow's methods, the patched ones); MLflow's
    are back on the class after the test (monkeypatch)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    fast_store = image_modules.load(monkeypatch, "fast_store")
    original = {name: getattr(SqlAlchemyStore, name) for name in PATCHED}
    for name in PATCHED:
        monkeypatch.setattr(SqlAlchemyStore, name, original[name])
    monkeypatch.setattr(
        SqlAlchemyStore, fast_store.INSTALLED, False, raising=False
    )  # gone again after the test
    fast_store.install()
    patched = {name: getattr(SqlAlchemyStore, name) for name in PATCHED}
    assert all(patched[name] is not original[name] for name in PATCHED)
    return fast_store, original, patched


def fast_endpoint_client(monkeypatch, store, handler) -> tuple:
    """MLflow's app answering from `store`, fast_store installed (`install_fast_store`), and MLflow's view
    of `handler` (an endpoint the test replaces) back after the test: (fast_store, MLflow's methods, Flask's
    test client)."""
    from mlflow.server import app, handlers

    monkeypatch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: store)
    endpoint = handler.__name__
    monkeypatch.setitem(app.view_functions, endpoint, app.view_functions[endpoint])
    fast_store, original, _ = install_fast_store(monkeypatch)
    return fast_store, original, app.test_client()


def canonical(body) -> str:
    """A JSON value as text that tells 1 from 1.0 and ignores key order and indentation."""
    return json.dumps(body, sort_keys=True)


PARAM_KEYS = ["lr", "model", "layers", "opt"]
METRIC_KEYS = ["loss", "acc", "f1"]
TAG_KEYS = ["team", "stage"]
NAMES = ["alpha", "beta", "gamma", "alpha-2", "Beta_3", ""]
# With `variants`: keys spelled in another case by some runs (one spelling per run: the local MariaDB's
# utf8mb4_general_ci makes primary keys case-insensitive, and refuses both), values that differ only in
# case or a trailing space (equal in that PAD SPACE collation), the longest values MLflow takes, and
# infinite metrics.
SPELLINGS = {"opt": ["opt", "Opt"], "loss": ["loss", "Loss"], "team": ["team", "TEAM"]}
PARAM_VARIANTS = ["Adam", "adam", "ADAM", "adam ", "p" * 6000]  # MLflow's longest param value
TAG_VARIANTS = ["Prod", "prod", "prod ", "t" * 8000]  # MLflow's longest tag value
NAME_VARIANTS = ["Alpha", "ALPHA", "alpha ", "n" * 250]  # runs.name is VARCHAR(250)


def generate(
    store,
    rng: random.Random,
    *,
    experiment_names=("diff-a", "diff-b"),
    runs=90,
    variants=False,
    log_batch=None,
) -> dict:
    """Runs in two experiments; returns what the queries draw from. `log_batch` (the store's unless given)
    takes each run's metrics, params and tags."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
    from mlflow.entities.logged_model_output import LoggedModelOutput

    experiments = [store.create_experiment(name) for name in experiment_names]
    run_ids, values = [], {"params": set(), "metrics": set(), "tags": set()}
    param_values = ["0.1", "0.01", "cnn", "rnn", "3", "4", "adam", "sgd", "x'y"]
    base = 1_700_000_000_000
    for index in range(runs):
        experiment = experiments[index % 5 == 0]
        spelled = {key: rng.choice(SPELLINGS.get(key, [key])) if variants else key for key in SPELLINGS}
        # Equal start times for some runs: the order then falls to run_uuid.
        start = base + (index // 3) * 1000
        name = rng.choice(NAMES + NAME_VARIANTS if variants else NAMES)
        run = store.create_run(experiment, f"user{index % 3}", start, [], name)
        run_id = run.info.run_id
        run_ids.append(run_id)
        params = [
            Param(
                spelled.get(key, key), rng.choice(param_values + PARAM_VARIANTS if variants else param_values)
            )
            for key in PARAM_KEYS
            if rng.random() < 0.8
        ]
        metrics = []
        for key in METRIC_KEYS:
            if rng.random() < 0.2:
                continue
            for step in range(rng.choice([1, 1, 3, 40])):
                value = math.nan if rng.random() < 0.03 else round(rng.uniform(-1, 2), rng.choice([1, 3, 8]))
                if variants and rng.random() < 0.05:
                    value = rng.choice([math.inf, -math.inf, 0.5])  # 0.5: ties in the order
                # Repeated (timestamp, step) pairs with other values happen when a loop logs twice.
                metrics.append(Metric(spelled.get(key, key), value, base + rng.randrange(0, 50), step))
        tag_values = ["ml", "data", "prod", "dev"] + (TAG_VARIANTS if variants else [])
        tags = [
            RunTag(spelled.get(key, key), rng.choice(tag_values)) for key in TAG_KEYS if rng.random() < 0.6
        ]
        (log_batch or store.log_batch)(run_id, metrics, params, tags)
        values["params"] |= {p.value for p in params}
        values["metrics"] |= {m.value for m in metrics if math.isfinite(m.value)}
        values["tags"] |= {t.value for t in tags}
        if index % 11 == 0:
            dataset = Dataset(name=rng.choice(["train", "eval"]), digest=f"d{index % 3}", source_type="local",
                              source="/data")  # fmt: skip
            store.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])
        if index % 13 == 0:
            model = store.create_logged_model(experiment, name=f"model-{index}", source_run_id=run_id)
            store.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
        if index % 9 == 0:
            status = rng.choice([RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED])
            store.update_run_info(run_id, status, base + index, None)
        if index % 17 == 0:
            store.delete_run(run_id)
    # Runs without a start time (MLflow's API always sets one; older clients and imports did not): the
    # order puts them last, which the fast path's ORDER BY must keep.
    with store.engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("UPDATE runs SET start_time = NULL WHERE run_uuid IN (:a, :b, :c)"),
            dict(zip("abc", run_ids[3:30:12], strict=True)),
        )
    # The keys the queries name: every spelling, and one no run uses (the same keys again in MariaDB).
    queried = {
        "params": PARAM_KEYS + (["Opt", "OPT"] if variants else []),
        "metrics": METRIC_KEYS + (["Loss", "LOSS"] if variants else []),
        "tags": TAG_KEYS + (["TEAM", "Team"] if variants else []),
    }
    return {
        "experiments": experiments,
        "run_ids": run_ids,
        "values": {k: sorted(v) for k, v in values.items()},
        "keys": queried,
        # Start times up to twice those of the runs: filters that keep some, all or none of them.
        "start_span": 60_000 * runs // 90,
    }


def random_filter(rng: random.Random, data: dict) -> str | None:
    def quote(value: str) -> str:
        return "'" + value.replace("'", "\\'") + "'"

    keys = data["keys"]
    clauses = []
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        kind = rng.choice(["param", "metric", "metric", "tag", "attr", "attr", "dataset"])
        if kind == "param":
            key, value = rng.choice(keys["params"]), rng.choice(data["values"]["params"])
            op = rng.choice(["=", "!=", "LIKE", "ILIKE"])
            pattern = value if op in ("=", "!=") else rng.choice([value, value[:1] + "%", "%" + value[-1:]])
            if rng.random() < 0.15:
                clauses.append(
                    f"params.{key} IN ({quote(value)}, {quote(rng.choice(data['values']['params']))})"
                )
            else:
                clauses.append(f"params.{key} {op} {quote(pattern)}")
        elif kind == "metric":
            key, value = rng.choice(keys["metrics"]), rng.choice(data["values"]["metrics"])
            clauses.append(f"metrics.{key} {rng.choice(['<', '>', '<=', '>=', '=', '!='])} {value}")
        elif kind == "tag":
            key, value = (
                rng.choice([*keys["tags"], "mlflow.runName", "mlflow.user"]),
                rng.choice(data["values"]["tags"]),
            )
            op = rng.choice(["=", "!=", "LIKE", "ILIKE"])
            clauses.append(f"tags.`{key}` {op} {quote(value if op in ('=', '!=') else value[:1] + '%')}")
        elif kind == "dataset":
            clauses.append(f"dataset.name = {quote(rng.choice(['train', 'eval']))}")
        else:
            choice = rng.randrange(5)
            if choice == 0:
                clauses.append(f"attributes.status = {quote(rng.choice(['FINISHED', 'RUNNING', 'FAILED']))}")
            elif choice == 1:
                moment = 1_700_000_000_000 + rng.randrange(0, data["start_span"])
                clauses.append(f"attributes.start_time {rng.choice(['>', '<=', '>='])} {moment}")
            elif choice == 2:
                pattern = quote(rng.choice(["alpha%", "%a%", "b%"]))
                clauses.append(f"attributes.run_name {rng.choice(['LIKE', 'ILIKE'])} {pattern}")
            elif choice == 3:
                ids = ", ".join(quote(run_id) for run_id in rng.sample(data["run_ids"], 5))
                clauses.append(f"attributes.run_id IN ({ids})")
            else:
                clauses.append(f"attributes.user_id = {quote(rng.choice(['user0', 'user1']))}")
    return " and ".join(clauses) or None


def random_order(rng: random.Random, data: dict) -> list[str] | None:
    keys = data["keys"]
    choices = [
        "attributes.start_time", "attributes.end_time", "attributes.run_name", "attributes.status",
        *(f"params.{k}" for k in keys["params"]), *(f"metrics.{k}" for k in keys["metrics"]),
        *(f"tags.{k}" for k in keys["tags"]),
    ]  # fmt: skip
    count = rng.choice([0, 1, 1, 1, 2])
    if count == 0:
        return rng.choice([None, []])
    return [f"{column} {rng.choice(['ASC', 'DESC', ''])}".strip() for column in rng.sample(choices, count)]


def described(runs) -> list:
    """Everything a runs search answers, as comparable values (NaN compares equal to NaN)."""
    return [run.to_proto().SerializeToString(deterministic=True) for run in runs]


def search_pages(method, store, experiments, filter_string, view, max_results, order_by, pages=3) -> list:
    """The first pages of a search (up to `pages`, None: to the end), following the tokens; a refused page
    (a query MLflow refuses, a run without a start time on it) gives MLflow's error after those before."""
    from mlflow.exceptions import MlflowException

    found, token = [], None
    while pages is None or len(found) < pages:
        try:
            runs, token = method(store, experiments, filter_string, view, max_results, order_by, token)
        except MlflowException as error:
            return [*found, ("refused", error.error_code, error.message)]
        found.append((described(runs), token))
        if not token:
            break
    return found


def endpoint_pages(client, requests: list[dict], pages: int | None = 3) -> list:
    """Each runs/search request through Flask's test `client`, its pages followed by their tokens (up to
    `pages`, None: to the end): (status, canonical JSON) of every answer."""
    found = []
    for query in requests:
        token, answered = None, 0
        while pages is None or answered < pages:
            reply = client.post(
                "/ajax-api/2.0/mlflow/runs/search", json={**query, **({"page_token": token} if token else {})}
            )
            body = json.loads(reply.data)
            found.append((reply.status_code, canonical(body)))
            answered += 1
            if not (token := body.get("next_page_token")):
                break
    return found


def metric_points(metrics) -> list:
    """Metric entities as comparable tuples (the value's repr tells NaN, -0.0 and 1 from 1.0 apart)."""
    return [(m.key, repr(m.value), m.timestamp, m.step, getattr(m, "run_id", None)) for m in metrics]


def compare_sampled_histories(original, patched, store, data: dict, rng: random.Random, count: int) -> int:
    """`count` generated sampled-history reads (the charts' get-history-bulk-interval), each answered by
    MLflow's method and the patched one and compared point by point: several runs or one, a missing run,
    a run asked twice, sample sizes from 1 to the UI's 320, step ranges; returns how many were compared."""
    keys = data["keys"]["metrics"]
    for _ in range(count):
        run_ids = rng.sample(data["run_ids"], rng.choice([1, 3, 10])) + rng.choice([[], ["no-such-run"]])
        if rng.random() < 0.1:
            run_ids += run_ids[:1]  # a run asked twice is answered twice
        key, max_results = rng.choice(keys), rng.choice([1, 2, 5, 320])
        steps = rng.choice([(None, None), (0, 3), (2, 30), (5, 5)])
        expected = original["get_metric_history_bulk_interval"](store, run_ids, key, max_results, *steps)
        actual = patched["get_metric_history_bulk_interval"](store, run_ids, key, max_results, *steps)
        assert metric_points(actual) == metric_points(expected), (run_ids, key, max_results, steps)
    return count


SAMPLED_HISTORY_PATH = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"


def sampled_history_queries(rng: random.Random, data: dict, count: int) -> list[dict]:
    """`count` query strings of the charts' get-history-bulk-interval as the UI sends them (`run_ids`
    repeated, the UI's 320 points), with other sizes and step ranges, and one in six refused by MLflow's
    checks: no runs, too many runs, a size out of range or not a number, half a step range, a reversed
    one, no metric key."""
    keys = data["keys"]["metrics"]
    refused = [
        {"run_ids": []},
        {"run_ids": [f"r{i}" for i in range(101)]},
        {"max_results": 0},
        {"max_results": 2501},
        {"max_results": "many"},
        {"start_step": 3},
        {"start_step": 5, "end_step": 2},
        {"start_step": "x", "end_step": 2},
        {"metric_key": None},
    ]
    queries = []
    for index in range(count):
        run_ids = rng.sample(data["run_ids"], rng.choice([1, 3, 10])) + rng.choice([[], ["no-such-run"]])
        query = {"run_ids": run_ids, "metric_key": rng.choice(keys), "max_results": rng.choice([1, 5, 320])}
        if rng.random() < 0.3:
            query.update(zip(("start_step", "end_step"), rng.choice([(0, 3), (2, 30), (5, 5)]), strict=True))
        if rng.random() < 0.1:
            del query["max_results"]  # MLflow's default, 2,500 points a run
        if index % 6 == 5:
            query.update(rng.choice(refused))
        queries.append({name: value for name, value in query.items() if value is not None})
    return queries


def endpoint_answers(client, path: str, queries: list[dict]) -> list:
    """(status, canonical JSON) of each GET `path` with `queries` through Flask's test `client`."""
    answers = []
    for query in queries:
        reply = client.get(path, query_string=query)
        answers.append((reply.status_code, canonical(json.loads(reply.data))))
    return answers
