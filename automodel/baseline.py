"""What a user would try instead: gradient boosting at default settings on the same rows.

Reported beside every table result (summary.json `baseline`, the console, status, MLflow) so
a user sees at a glance whether the network search paid off. scikit-learn's
HistGradientBoosting is the reference: strong on tables at its defaults and fit in seconds.
It sees the features as the networks do (encoded, normalised with the training split); trees
do not care about the scaling.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from automodel import metrics
from automodel.data import Dataset

MODEL = "HistGradientBoosting"


def applies(data: Dataset) -> bool:
    """Tables only: rows of features held in memory (not images or sequences)."""
    return not data.lazy and len(data.spec.input_shape) == 1


def gradient_boosting(data: Dataset, seed: int) -> dict:
    """`{"model", "val", "test", "seconds"}`: every metric of the task on both splits."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    start = time.perf_counter()
    task = data.spec.task
    x_train, y_train = _numpy(data.x_train), _numpy(data.y_train)
    if task == "regression":
        model = HistGradientBoostingRegressor(random_state=seed).fit(x_train, y_train)
    else:
        model = HistGradientBoostingClassifier(random_state=seed).fit(x_train, y_train)
    scores = {}
    for split in ("val", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        outputs = _outputs(model, _numpy(x), task, data.spec.n_classes)
        scores[split] = metrics.for_spec(data.spec, outputs, y.cpu())
    return {
        "model": MODEL,
        **scores,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _outputs(model, x: np.ndarray, task: str, n_classes: int) -> torch.Tensor:
    """Predictions shaped like a network's outputs, for metrics.compute."""
    if task == "regression":
        return torch.from_numpy(model.predict(x).astype(np.float32)).unsqueeze(1)
    scores = np.zeros((len(x), n_classes), np.float32)
    scores[:, model.classes_] = model.predict_proba(x)  # a class absent from training scores 0
    return torch.from_numpy(scores)
