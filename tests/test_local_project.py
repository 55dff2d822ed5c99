"""The MLflow project's definition and its deterministic data, without a tracking server."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.projects._project_spec import load_project

PROJECT = Path(__file__).resolve().parent.parent / "mlflow_project"


@pytest.fixture(scope="module")
def fake_data():
    sys.path.insert(0, str(PROJECT))
    try:
        import fake_data

        yield fake_data
    finally:
        sys.path.remove(str(PROJECT))


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    return pins


def test_python_env_pins_equal_the_runner_image_requirements() -> None:
    python_env = yaml.safe_load((PROJECT / "python_env.yaml").read_text())
    image = (PROJECT.parent / "images" / "project" / "requirements.txt").read_text().splitlines()
    assert _pins(python_env["dependencies"]) == _pins(image)


def test_entry_points_declare_what_their_scripts_take() -> None:
    project = load_project(str(PROJECT))
    train = project.get_entry_point("train")
    evaluate = project.get_entry_point("evaluate")
    assert set(train.parameters) == {
        "experiment_name", "n_samples", "n_features", "seed", "C", "max_iter", "test_size"
    }  # fmt: skip
    assert {"experiment_name", "run_id"} <= set(evaluate.parameters)
    for entry in (train, evaluate):
        # Every parameter reaches the command, and no placeholder is left undeclared.
        placeholders = set(re.findall(r"{(\w+)}", entry.command))
        assert placeholders == set(entry.parameters)
    # MLproject has no int type: whole numbers are floats the scripts cast.
    assert train.parameters["n_samples"].type == "float"
    assert evaluate.parameters["run_id"].default == ""


def test_commands_render_with_defaults_and_quote_empty_values(tmp_path) -> None:
    project = load_project(str(PROJECT))
    command = project.get_entry_point("evaluate").compute_command({"experiment_name": "exp"}, str(tmp_path))
    assert command.startswith("python evaluate.py --experiment-name exp --run-id ''")


def test_data_is_deterministic_and_eval_samples_are_unseen(fake_data) -> None:
    x1, y1 = fake_data.make_dataset(7, 200, 5, fake_data.TRAIN_STREAM)
    x2, y2 = fake_data.make_dataset(7, 200, 5, fake_data.TRAIN_STREAM)
    xe, _ = fake_data.make_dataset(7, 200, 5, fake_data.EVAL_STREAM)
    other, _ = fake_data.make_dataset(8, 200, 5, fake_data.TRAIN_STREAM)
    assert x1.equals(x2) and np.array_equal(y1, y2)
    assert not np.isin(xe.to_numpy().ravel(), x1.to_numpy().ravel()).any()
    assert not other.equals(x1)
    assert set(np.unique(y1)) == {0, 1}


def test_same_problem_in_both_streams(fake_data) -> None:
    """A model fit on the train stream scores well on the eval stream: the streams share one rule."""
    from sklearn.linear_model import LogisticRegression

    x, y = fake_data.make_dataset(3, 1500, 6, fake_data.TRAIN_STREAM)
    xe, ye = fake_data.make_dataset(3, 1500, 6, fake_data.EVAL_STREAM)
    model = LogisticRegression().fit(x, y)
    metrics = fake_data.classification_metrics(ye, model.predict_proba(xe)[:, 1])
    assert set(metrics) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert metrics["roc_auc"] > 0.75


@pytest.mark.parametrize(
    ("raw", "ok"), [("2000", 2000), ("2000.0", 2000), ("2.5", None), ("x", None), ("-1", None)]
)
def test_whole_number_cast(fake_data, raw: str, ok: int | None) -> None:
    if ok is None:
        with pytest.raises(fake_data.ProjectError, match="whole number"):
            fake_data.whole_number("n", raw, minimum=0)
    else:
        assert fake_data.whole_number("n", raw, minimum=0) == ok
