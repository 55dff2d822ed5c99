"""`evaluate` entry point: score a trained model on fresh fake data and log it in `<experiment>_eval`.

The model comes from an explicit `--run-id`, or (empty) from the latest FINISHED `train` run of
`--experiment-name`. The new run carries tags linking the source run and model. A missing
experiment, run or model exits with status 2 and a message saying which.
"""

from __future__ import annotations

import argparse
import sys

import mlflow
import mlflow.sklearn
from fake_data import EVAL_STREAM, ProjectError, classification_metrics, make_dataset, whole_number
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

EVAL_SUFFIX = "_eval"
TRAIN_ENTRY_POINT = "train"
ENTRY_POINT_TAG = "mlflow.project.entryPoint"
# Tags on the evaluation run that link it to what it evaluated.
LINK_TAGS = ("source_experiment", "source_run_id", "source_model_id", "source_model_uri")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment-name", required=True)
    parser.add_argument("--run-id", default="")
    parser.add_argument("--n-samples", default="2000")
    return parser.parse_args(argv)


def _not_found(err: MlflowException) -> bool:
    return err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def find_source_run(client: MlflowClient, experiment_name: str, run_id: str) -> Run:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ProjectError(f"experiment {experiment_name!r} does not exist on {mlflow.get_tracking_uri()}")
    if not run_id:
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"attributes.status = 'FINISHED' and tags.`{ENTRY_POINT_TAG}` = '{TRAIN_ENTRY_POINT}'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise ProjectError(f"experiment {experiment_name!r} has no FINISHED `train` run to evaluate")
        return runs[0]
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if _not_found(err):
            raise ProjectError(f"run {run_id!r} does not exist") from None
        raise
    if run.info.experiment_id != experiment.experiment_id:
        raise ProjectError(f"run {run_id!r} is not in experiment {experiment_name!r}")
    if run.info.status != "FINISHED":
        raise ProjectError(f"run {run_id!r} is {run.info.status}, not FINISHED")
    return run


def find_model(client: MlflowClient, run: Run):
    """The READY model logged by `run` (MLflow 3 keeps it under <experiment>/models/<model_id>/)."""
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    ready = [m for m in models if str(m.status) in ("READY", "LoggedModelStatus.READY")]
    if not ready:
        raise ProjectError(f"run {run.info.run_id!r} has no logged model (found {len(models)} not READY)")
    return max(ready, key=lambda m: m.creation_timestamp)


def check_launch_experiment(eval_experiment: str) -> None:
    """Under `mlflow run` the run already exists: it must be in `eval_experiment` (checked up front)."""
    run_id = mlflow.environment_variables.MLFLOW_RUN_ID.get()
    if not run_id:
        return
    client = MlflowClient()
    actual = client.get_experiment(client.get_run(run_id).info.experiment_id).name
    if actual != eval_experiment:
        client.set_terminated(run_id, "FAILED")
        raise ProjectError(
            f"evaluate must run in experiment {eval_experiment!r}, not {actual!r}: "
            f"use `mlflow run ... -e evaluate --experiment-name {eval_experiment}`"
        )


def start_eval_run(eval_experiment: str) -> mlflow.ActiveRun:
    """Resume the run `mlflow run` created (checked by check_launch_experiment), or create one."""
    if mlflow.environment_variables.MLFLOW_RUN_ID.get():
        return mlflow.start_run()
    mlflow.set_experiment(eval_experiment)
    return mlflow.start_run()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    n_samples = whole_number("n_samples", args.n_samples, minimum=20)
    check_launch_experiment(args.experiment_name + EVAL_SUFFIX)
    client = MlflowClient()
    source = find_source_run(client, args.experiment_name, args.run_id.strip())
    model = find_model(client, source)
    params = source.data.params
    try:
        seed = whole_number("seed", params["seed"], minimum=0)
        n_features = whole_number("n_features", params["n_features"], minimum=1)
    except KeyError as missing:
        raise ProjectError(f"run {source.info.run_id!r} lacks the param {missing} `train` logs") from None

    sk_model = mlflow.sklearn.load_model(model.model_uri)
    x, y = make_dataset(seed, n_samples, n_features, EVAL_STREAM)
    metrics = classification_metrics(y, sk_model.predict_proba(x)[:, 1])

    with start_eval_run(args.experiment_name + EVAL_SUFFIX) as run:
        links = (args.experiment_name, source.info.run_id, model.model_id, model.model_uri)
        mlflow.set_tags(dict(zip(LINK_TAGS, links, strict=True)))
        mlflow.log_metrics(metrics)
        print(
            f"evaluate: run {run.info.run_id} evaluated run {source.info.run_id} model {model.model_id} "
            + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ProjectError as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        sys.exit(2)
