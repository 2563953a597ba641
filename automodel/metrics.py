"""Validation and test metrics of a task, from a model's outputs: torch only.

The metrics themselves (`TASKS`, `compute`, `better`, `worst`) are the runtime's
(automodel.runtime.evaluation), which the exported script computes with too; the search adds
the evaluation loss it records beside them.
"""

from __future__ import annotations

import torch
from torch import nn

from automodel.runtime.evaluation import TASKS, better, compute, worst

__all__ = ["TASKS", "better", "compute", "for_spec", "loss", "worst"]


def for_spec(spec, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Every metric of `spec.task` (spec: a DataSpec), a regression's in the target's units."""
    return compute(spec.task, outputs, y, spec.target_std, spec.target_mean, spec.target_transform)


def loss(task: str, outputs: torch.Tensor, y: torch.Tensor) -> float:
    """The evaluation loss: cross-entropy, or the MSE of the normalised targets."""
    if task == "regression":
        return float(nn.functional.mse_loss(outputs.squeeze(1), y))
    return float(nn.functional.cross_entropy(outputs, y))
