"""`train` entry point: fit a logistic regression on deterministic fake data and log it to MLflow.

Logs the metrics accuracy, f1, roc_auc and log_loss on a held-out split, and the model (name
`model`) with its signature and an input example. Under `mlflow run` the run already exists and
holds the -P values as params; those keys are never logged again (MLflow rejects a changed param).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version

import mlflow
import mlflow.sklearn
from fake_data import TRAIN_STREAM, ProjectError, classification_metrics, make_dataset, whole_number
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

MODEL_NAME = "model"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment-name", default="")
    parser.add_argument("--n-samples", default="2000")
    parser.add_argument("--n-features", default="20")
    parser.add_argument("--seed", default="42")
    parser.add_argument("--c", default="1.0")
    parser.add_argument("--max-iter", default="200")
    parser.add_argument("--test-size", default="0.25")
    return parser.parse_args(argv)


def model_requirements() -> list[str]:
    """What loading the model needs, pinned to this environment (the runner image; MLflow adds itself).

    Naming them skips MLflow's requirement inference, which reloads the model in a subprocess and
    costs seconds per run.
    """
    return [f"{dist}=={version(dist)}" for dist in ("scikit-learn", "skops")]


def start_run(experiment_name: str) -> mlflow.ActiveRun:
    """Resume the run `mlflow run` created (MLFLOW_RUN_ID), or create one when run as a plain script."""
    if mlflow.environment_variables.MLFLOW_RUN_ID.get():
        active = mlflow.start_run()
        actual = MlflowClient().get_experiment(active.info.experiment_id).name
        if experiment_name and experiment_name != actual:
            mlflow.end_run("FAILED")
            raise ProjectError(
                f"parameter experiment_name={experiment_name!r} differs from the run's experiment "
                f"{actual!r}: pass the same name to --experiment-name, or leave experiment_name empty"
            )
        return active
    if not experiment_name:
        raise ProjectError("experiment_name is required when train.py runs outside `mlflow run`")
    mlflow.set_experiment(experiment_name)
    return mlflow.start_run()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    n_samples = whole_number("n_samples", args.n_samples, minimum=20)
    n_features = whole_number("n_features", args.n_features, minimum=1)
    seed = whole_number("seed", args.seed, minimum=0)
    c = float(args.c)
    if c <= 0:
        raise ProjectError(f"parameter C must be > 0, got {args.c!r}")
    max_iter = whole_number("max_iter", args.max_iter, minimum=1)
    test_size = float(args.test_size)
    if not 0.0 < test_size < 1.0:
        raise ProjectError(f"parameter test_size must be between 0 and 1, got {args.test_size!r}")

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = make_dataset(seed, n_samples, n_features, TRAIN_STREAM)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )

    with start_run(args.experiment_name) as run:
        raw = {
            "experiment_name": args.experiment_name,
            "n_samples": args.n_samples,
            "n_features": args.n_features,
            "seed": args.seed,
            "C": args.c,
            "max_iter": args.max_iter,
            "test_size": args.test_size,
        }
        current = MlflowClient().get_run(run.info.run_id).data
        already = current.params
        if "mlflow.project.entryPoint" not in current.tags:
            # What `mlflow run` sets; `evaluate` finds the latest train run by it.
            mlflow.set_tag("mlflow.project.entryPoint", "train")
        # Plain-script runs get the same params `mlflow run` would have logged; derived sizes are new keys.
        mlflow.log_params({k: v for k, v in raw.items() if k not in already})
        derived = {"n_train": len(x_train), "n_test": len(x_test), "model_class": "LogisticRegression"}
        mlflow.log_params(derived)

        # A linear model: skops (MLflow's default, safe serialisation) trusts its types as they are,
        # whereas tree ensembles need an explicit trust list to load.
        model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
        model.fit(x_train, y_train)
        metrics = classification_metrics(y_test, model.predict_proba(x_test)[:, 1])
        mlflow.log_metrics(metrics)

        signature = infer_signature(x_test, model.predict(x_test))
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_NAME,
            signature=signature,
            input_example=x_train.head(5),
            pip_requirements=model_requirements(),
        )
        print(
            f"train: run {run.info.run_id} model {info.model_id} "
            + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ProjectError as err:
        print(f"train: error: {err}", file=sys.stderr)
        sys.exit(2)
