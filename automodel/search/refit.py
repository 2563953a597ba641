"""The model a search ships: the best trial's own, or the best params refit on every row.

    shipped(plan, trial, device)  -> (checkpoint, model, the Dataset it reads): what finish
                                     evaluates on the test split, saves and exports
    refit(plan, trial, selected, device)  the refit itself
    described(checkpoint)         -> summary.json's `cv` and `refit`

With study.refit, the best trial's params are trained again on every non-test row (train and
validation, or every fold's rows: the encoding and normalisation fitted on them all) for the
best number of epochs the search found (with folds, where their mean was best), keeping
the last epoch's weights (Recipe.keep = "last"): there are no validation rows left to choose
an epoch on. The learning-rate schedule is the one the trials ran, over their epochs
(Recipe.schedule_epochs): the refit stops where the trials were best inside it. A cosine
squeezed into the best epoch count instead left the model underfit (iris: 0.76 test accuracy
against 0.96). The exported script's `train`, given those rows, repeats this to the bit.
"""

from __future__ import annotations

import optuna
import torch

from automodel import models, train
from automodel.checkpoint import Checkpoint
from automodel.data import Dataset
from automodel.data import folds as data_folds
from automodel.search.folds import dataset_of
from automodel.search.plan import Plan
from automodel.search.trial import trained


def shipped(
    plan: Plan, trial: optuna.trial.FrozenTrial, device: torch.device
) -> tuple[Checkpoint, torch.nn.Module, Dataset]:
    """The checkpoint and model the search ships for its best `trial`, and the Dataset (on
    `device`) whose normalisation they read: the trial's own (refit off), or its refit."""
    ckpt, model = trained(plan, trial, device)
    if not plan.cfg.study.refit:
        return ckpt, model, dataset_of(plan, ckpt).to(device)
    return refit(plan, trial, ckpt, device)


def refit(
    plan: Plan,
    trial: optuna.trial.FrozenTrial,
    selected: Checkpoint,
    device: torch.device,
    dataset: Dataset | None = None,
) -> tuple[Checkpoint, torch.nn.Module, Dataset]:
    """`selected`'s params trained on every non-test row for the trial's best epoch count.

    Seeded like the trial (seed + its number). The checkpoint keeps the trial's validation
    metrics (`val`: the estimate the search selected it by; the refit model itself has no
    validation rows) and says it is a refit (`extra["refit"]`). `dataset`: the refit's rows
    on `device` when the caller has them (an ensemble's members share them), else loaded.
    """
    cfg = plan.cfg
    epochs = max(1, int(trial.user_attrs.get("best_epoch") or selected.recipe.epochs))
    if dataset is None:
        dataset = refit_rows(plan, device)
    seed = cfg.seed + trial.number
    train.seed_everything(seed)
    model = models.create(plan.space.family, selected.params, dataset.spec).to(device)
    # The schedule its trials ran (a cosine over their max_epochs), stopped at the best epoch.
    recipe = train.Recipe.from_params(selected.params, selected.recipe.span, seed).stopped_at(
        epochs
    )
    result = train.fit(model, dataset, recipe, eval_batch_size=cfg.trainer.eval_batch_size)
    ckpt = Checkpoint.from_fit(
        plan.space.family, selected.params, dataset.spec, recipe, trial.number, result
    )
    ckpt.val = dict(selected.val)
    ckpt.extra["refit"] = True
    if "cv" in selected.extra:
        ckpt.extra["cv"] = selected.extra["cv"]
    return ckpt, model, dataset


def refit_rows(plan: Plan, device: torch.device) -> Dataset:
    """Every non-test row to train on, encoded and normalised on them all (data.folds.refit)."""
    return data_folds.refit(plan.cfg.data, plan.cfg.seed).to(device)


def described(checkpoint: Checkpoint) -> dict:
    """summary.json's `cv` ({folds, mean, std} of the selected trial, or None with one
    validation split) and `refit` (whether the shipped model is a refit)."""
    return {"cv": checkpoint.extra.get("cv"), "refit": bool(checkpoint.extra.get("refit"))}
