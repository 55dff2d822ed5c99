"""The MLflow project on the real stack: train, then evaluate by explicit run id and by latest.

Checks what landed where: run rows, params and metrics in MariaDB; the model's blobs in Azurite
under the configured artifacts path; the evaluation experiment, its metrics and link tags via the API.
"""

from __future__ import annotations

import subprocess

from azure.storage.blob import BlobServiceClient

from tests.e2e.conftest import EXPERIMENT, TRAIN_PARAMS, ProjectRuns, query

METRICS = {"accuracy", "f1", "roc_auc", "log_loss"}


def test_train_run_rows_params_and_metrics_in_mysql(project_runs: ProjectRuns, db) -> None:
    run_id = project_runs.train_run_id
    [(status, experiment_name, lifecycle)] = query(
        db,
        "SELECT r.status, e.name, r.lifecycle_stage FROM runs r JOIN experiments e "
        "ON r.experiment_id = e.experiment_id WHERE r.run_uuid = %s",
        run_id,
    )
    assert (status, experiment_name, lifecycle) == ("FINISHED", EXPERIMENT, "active")

    params = dict(query(db, "SELECT `key`, value FROM params WHERE run_uuid = %s", run_id))
    # `mlflow run` logs the -P values as given; the project must not have re-logged them differently.
    for key, value in TRAIN_PARAMS.items():
        assert params[key] == str(value), key
    assert int(params["n_train"]) + int(params["n_test"]) == TRAIN_PARAMS["n_samples"]

    metrics = dict(query(db, "SELECT `key`, value FROM latest_metrics WHERE run_uuid = %s", run_id))
    assert set(metrics) >= METRICS
    for key in ("accuracy", "f1", "roc_auc"):
        assert 0.5 < metrics[key] <= 1.0, (key, metrics[key])  # better than chance on its own problem
    assert metrics["log_loss"] > 0.0
    history = query(db, "SELECT COUNT(*) FROM metrics WHERE run_uuid = %s AND `key` = 'accuracy'", run_id)
    assert history == [(1,)]


def test_model_blobs_in_azurite_under_configured_path(project_runs: ProjectRuns, stack, db) -> None:
    [(model_id, experiment_id, artifact_location)] = query(
        db,
        "SELECT model_id, experiment_id, artifact_location FROM logged_models WHERE source_run_id = %s",
        project_runs.train_run_id,
    )
    assert artifact_location.startswith(f"mlflow-artifacts:/{experiment_id}/models/{model_id}/artifacts")
    service = BlobServiceClient.from_connection_string(stack.azure_connection_string)
    container = service.get_container_client(stack.config.container)
    prefix = f"{stack.config.artifacts_path}/{experiment_id}/models/{model_id}/artifacts/"
    names = {blob.name.removeprefix(prefix) for blob in container.list_blobs(name_starts_with=prefix)}
    assert {"MLmodel", "input_example.json", "requirements.txt"} <= names, names
    assert any(name.startswith("model.") for name in names), names  # the serialised estimator
    mlmodel = container.download_blob(prefix + "MLmodel").readall().decode()
    assert "signature:" in mlmodel and "sklearn" in mlmodel


def test_evaluations_logged_in_eval_experiment_with_link_tags(
    project_runs: ProjectRuns, client, stack
) -> None:
    eval_experiment = client.get_experiment_by_name(EXPERIMENT + "_eval")
    assert eval_experiment is not None
    explicit = client.get_run(project_runs.eval_explicit_run_id)
    latest = client.get_run(project_runs.eval_latest_run_id)
    [model] = client.search_logged_models(
        [client.get_run(project_runs.train_run_id).info.experiment_id],
        filter_string=f"source_run_id = '{project_runs.train_run_id}'",
    )
    for run in (explicit, latest):
        assert run.info.experiment_id == eval_experiment.experiment_id
        # The user the Job logged in as, not the OS user its process runs as.
        assert run.data.tags["mlflow.user"] == stack.run_credentials()[0]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.project.entryPoint"] == "evaluate"
        assert run.data.tags["source_run_id"] == project_runs.train_run_id
        assert run.data.tags["source_model_id"] == model.model_id
        assert run.data.tags["source_experiment"] == EXPERIMENT
        assert set(run.data.metrics) >= METRICS
    assert explicit.data.params["run_id"] == project_runs.train_run_id
    # `mlflow run` logs an empty default shell-quoted; either way it is not a run id.
    assert latest.data.params["run_id"].strip("'") == ""
    # Same model, same fresh data (from the training seed): the two evaluations agree exactly...
    assert explicit.data.metrics == latest.data.metrics
    # ...and differ from the training split's scores, as they are computed on unseen samples.
    train = client.get_run(project_runs.train_run_id)
    assert train.data.tags["mlflow.user"] == stack.run_credentials()[0]
    train_metrics = train.data.metrics
    assert {k: explicit.data.metrics[k] for k in METRICS} != {k: train_metrics[k] for k in METRICS}


def _evaluate_directly(stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """evaluate.py without `mlflow run`, for the failure messages (the Job's path is tested above)."""
    env = {
        "PATH": f"{stack.config.python.rsplit('/', 1)[0]}:/usr/bin:/bin",
        **stack.client_env(),
        **(env or {}),
    }
    return subprocess.run(
        [stack.config.python, "evaluate.py", *args],
        cwd=stack.config.repo_root / "mlflow_project",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_evaluate_names_what_is_missing(stack, project_runs: ProjectRuns) -> None:
    missing_experiment = _evaluate_directly(stack, "--experiment-name", "no-such-experiment")
    assert missing_experiment.returncode != 0
    assert "experiment 'no-such-experiment' does not exist" in missing_experiment.stderr

    missing_run = _evaluate_directly(stack, "--experiment-name", EXPERIMENT, "--run-id", "0" * 32)
    assert missing_run.returncode != 0
    assert f"run '{'0' * 32}' does not exist" in missing_run.stderr

    # A run of the experiment that logged no model (the evaluation runs are in <exp>_eval, so use one
    # of those by pointing evaluate at the eval experiment itself).
    no_model = _evaluate_directly(
        stack, "--experiment-name", EXPERIMENT + "_eval", "--run-id", project_runs.eval_explicit_run_id
    )
    assert no_model.returncode != 0
    assert f"run '{project_runs.eval_explicit_run_id}' has no logged model" in no_model.stderr


def test_evaluate_refuses_to_log_outside_the_eval_experiment(
    stack, client, project_runs: ProjectRuns
) -> None:
    """Started by `mlflow run --experiment-name <exp>` (not <exp>_eval), evaluate fails with the fix to apply.

    `mlflow run` creates the run and hands its id to the entry point in MLFLOW_RUN_ID; this does the same
    directly, which costs one interpreter instead of two.
    """
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    wrong_run = client.create_run(experiment_id).info.run_id
    wrong = _evaluate_directly(stack, "--experiment-name", EXPERIMENT, env={"MLFLOW_RUN_ID": wrong_run})
    assert wrong.returncode != 0
    assert f"evaluate must run in experiment '{EXPERIMENT}_eval'" in wrong.stderr
    assert client.get_run(wrong_run).info.status == "FAILED"
