"""A model's outputs on many rows, and the metrics of a task computed from them.

Classification: `accuracy` (selected on, maximised) and `f1_macro`. Regression: `rmse`
(selected on, minimised), `mae` and `r2`, in the target's own units: the model learns targets
normalised with the training split's statistics, so errors are scaled back by `target_std`;
a target learned as log1p(y) (`transform`) is taken back to y before any error is measured.

    >>> import torch
    >>> compute("regression", torch.tensor([[0.0], [1.0]]), torch.tensor([0.0, 2.0]), 2.0)
    {'rmse': 1.4142135623730951, 'mae': 1.0, 'r2': 0.5}
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# task -> (the metric trials are selected on, its direction, every metric reported)
TASKS = {
    "classification": ("accuracy", "maximize", ("accuracy", "f1_macro")),
    "regression": ("rmse", "minimize", ("rmse", "mae", "r2")),
}


def model_outputs(model: nn.Module, batches) -> torch.Tensor:
    """The model's outputs for every batch of inputs in `batches`, concatenated: in eval
    mode and full precision, the model's mode restored after."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = torch.cat([model(x) for x in batches])
    model.train(was_training)
    return out


def slices(x: torch.Tensor, batch_size: int):
    """Consecutive batches of `batch_size` rows of `x` (the last one may be smaller)."""
    return (x[i : i + batch_size] for i in range(0, len(x), batch_size))


# What a regression's targets may become before they are normalised: "log1p" for a
# positive, right-skewed target (chosen by data.choose_target_transform), so that the
# model's errors weigh in proportion to the size of the target.
TARGET_TRANSFORMS = ("none", "log1p")


def from_units(y: np.ndarray, transform: str) -> np.ndarray:
    """Targets in their own units (float64) -> the scale the model learns, before the
    normalisation."""
    if transform == "none":
        return y
    if (y <= -1).any():
        raise ValueError(
            f"a target learned as log1p must be > -1, got {y[y <= -1][0]!r}"
        )
    return np.log1p(y)


def to_units(
    values: torch.Tensor, target_mean: float, target_std: float, transform: str
) -> torch.Tensor:
    """Normalised outputs or targets -> the target's own units, float64."""
    y = values.double() * target_std + target_mean
    return torch.expm1(y) if transform == "log1p" else y


def compute(
    task: str,
    outputs: torch.Tensor,
    y: torch.Tensor,
    target_std: float = 1.0,
    target_mean: float = 0.0,
    transform: str = "none",
) -> dict[str, float]:
    """Every metric of `task` for model `outputs` against targets `y` (as the model
    learns them: class indices, or normalised values)."""
    if task == "regression" and transform != "none":
        predicted = to_units(outputs.squeeze(1), target_mean, target_std, transform)
        return _regression(
            predicted, to_units(y, target_mean, target_std, transform), 1.0
        )
    if task == "regression":
        return _regression(outputs.squeeze(1), y, target_std)
    return _classification(outputs.argmax(1), y)


def _classification(predicted: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    accuracy = float((predicted == y).float().mean())
    # Macro F1 over the classes that occur in the labels or the predictions (as
    # scikit-learn computes it).
    classes = torch.unique(torch.cat([y, predicted]))
    hit = (predicted == y).unsqueeze(0)
    is_y = y.unsqueeze(0) == classes.unsqueeze(1)
    is_pred = predicted.unsqueeze(0) == classes.unsqueeze(1)
    tp = (is_y & hit).sum(1).double()
    f1 = 2 * tp / (is_y.sum(1) + is_pred.sum(1)).double()
    return {"accuracy": accuracy, "f1_macro": float(f1.mean())}


def _regression(
    predicted: torch.Tensor, y: torch.Tensor, target_std: float
) -> dict[str, float]:
    diff = (predicted - y).double()
    y = y.double()
    sse = float((diff * diff).sum())
    sst = float(((y - y.mean()) ** 2).sum())
    return {
        "rmse": math.sqrt(sse / len(diff)) * target_std,
        "mae": float(diff.abs().mean()) * target_std,
        "r2": 1.0 - sse / sst if sst > 0 else 0.0,
    }


def better(direction: str, a: float, b: float) -> bool:
    """Is `a` strictly better than `b` for a metric to `direction` (maximize, minimize)?"""
    return a > b if direction == "maximize" else a < b


def worst(direction: str) -> float:
    """A value every metric value to `direction` is better than."""
    return -math.inf if direction == "maximize" else math.inf
