"""Deterministic fake classification data, and the parameter casts both entry points share.

The seed fixes one underlying problem (a hidden linear rule with label noise, so no model is
perfect). Training and evaluation draw *different* samples of that same problem from separate
random streams, so `evaluate` measures the model on data that `train` never saw, reproducibly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TRAIN_STREAM = 1
EVAL_STREAM = 2


class ProjectError(Exception):
    """A user-facing failure: the entry point exits non-zero with this message."""


def whole_number(name: str, raw: float | str, minimum: int) -> int:
    """MLproject has no int type: parameters arrive as floats ("2000" or "2000.0"); cast and check."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ProjectError(f"parameter {name} must be a whole number, got {raw!r}") from None
    if not value.is_integer() or value < minimum:
        raise ProjectError(f"parameter {name} must be a whole number >= {minimum}, got {raw!r}")
    return int(value)


def make_dataset(seed: int, n_samples: int, n_features: int, stream: int) -> tuple[pd.DataFrame, np.ndarray]:
    """`n_samples` rows of the problem fixed by `seed`, drawn from random stream `stream`."""
    truth = np.random.default_rng([seed, 0])
    weights = truth.normal(size=n_features)
    bias = truth.normal(scale=0.5)

    draw = np.random.default_rng([seed, stream])
    x = draw.normal(size=(n_samples, n_features))
    logits = x @ weights / np.sqrt(n_features) * 3.0 + bias
    labels = (draw.random(n_samples) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int64)
    if labels.min() == labels.max():
        raise ProjectError(f"{n_samples} samples hold a single class: use more samples")
    columns = [f"feature_{i}" for i in range(n_features)]
    return pd.DataFrame(x, columns=columns), labels


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, F1, ROC AUC and log loss of positive-class probabilities `proba`."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    predicted = (proba >= 0.5).astype(np.int64)
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "f1": float(f1_score(y_true, predicted)),
        "roc_auc": float(roc_auc_score(y_true, proba)),
        "log_loss": float(log_loss(y_true, proba, labels=[0, 1])),
    }
