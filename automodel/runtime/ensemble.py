"""An ensemble script's own code: its members' outputs averaged, every member retrained.

Copied into best_model.py only when the export is an ensemble of trials; there its `train`
takes the place of api.train (export.verbatim leaves that one out), and the generated
`Model` holds the members' classes (`Model.MEMBERS`), weights (`MEMBER_WEIGHTS`) and
recipes (`RECIPES`). The search averages with the same `average` (automodel.ensemble), so
the script reproduces its outputs to the bit.
"""

from __future__ import annotations

import torch

from automodel.runtime.api import _metrics, fit, labelled_rows
from automodel.runtime.placeholders import EPOCHS, METRIC, SEED, Model


def probabilities(task: str, outputs: torch.Tensor) -> torch.Tensor:
    """What is averaged: class probabilities, or regression values (in float64)."""
    outputs = outputs.double()
    return outputs.softmax(1) if task == "classification" else outputs


def average(task: str, outputs: list, weights) -> torch.Tensor:
    """Members' `outputs` averaged with integer `weights`, shaped like one member's.

    Classification averages the class probabilities and returns their log (float32): the
    argmax, softmax and metrics of a single model's scores apply to it unchanged.
    """
    total = sum(w * probabilities(task, o) for o, w in zip(outputs, weights))
    mean = total / sum(weights)
    if task == "classification":
        mean = mean.clamp_min(1e-12).log()
    return mean.float()


def train(
    rows,
    labels,
    val_rows=None,
    val_labels=None,
    *,
    epochs: int | None = EPOCHS,
    seed: int | None = SEED,
    log=print,
) -> tuple[Model, float | None]:
    """Retrain every member with its own recipe (Model.RECIPES), each as api.train
    retrains a single trial, and average them with Model.MEMBER_WEIGHTS.

    `epochs` and `seed` replace every member's when given (member i starts from seed + i,
    so that the members still differ). On a CPU, with the search's rows, it reproduces the
    members. Returns the ensemble (in eval mode) and its validation METRIC (None without
    validation rows; each member then keeps its last epoch's weights).
    """
    x, y, val = labelled_rows(rows, labels, val_rows, val_labels)
    model = Model()
    for i, (member, recipe) in enumerate(zip(Model.MEMBERS, Model.RECIPES)):
        recipe = dict(recipe)
        if epochs is not None:
            recipe["epochs"] = epochs
        if seed is not None:
            recipe["seed"] = seed + i
        # Seeded just before the member is built: its initial weights, as in the search.
        torch.manual_seed(recipe["seed"])

        def member_log(line: str, i: int = i) -> None:
            log(f"member {i}: {line}")

        model.members[i], _ = fit(member(), recipe, x, y, val, log=member_log)
    model.eval()
    return model, (_metrics(model, *val)[METRIC] if val is not None else None)
