"""Cross-validated trials: a trial's k fold models, its value, its kept weights and outputs.

    train_trial(objective, trial, params)  the objective's work for a trial with folds
    retrain(plan, trial, device)           a complete trial's checkpoint and model, retrained
    val_outputs(study_dir, number)         a kept trial's validation outputs and targets
    dataset_of(plan, checkpoint)           the Dataset a checkpoint's model reads (its fold's)

A trial's value is the folds' mean validation metric at the epoch where that mean is best;
the folds train in lockstep (automodel.crossval), so the trial reports the folds' mean every
epoch and the study's pruner stops weak trials as early as with one validation split. A kept
trial holds the first fold's model at that epoch (its spec is that fold's; its recipe stops
there: Recipe.stopped_at), the folds' mean and spread, and the
out-of-fold outputs of every non-test row (`extra["val_outputs"]`, `extra["val_targets"]`).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import torch

from automodel import crossval, models, outputs, train
from automodel.checkpoint import Checkpoint
from automodel.data import Dataset
from automodel.search.plan import Plan
from automodel.study import METRIC_ATTR, VAL_LOSS_ATTR

CV_STD_ATTR = "cv_std"  # the folds' standard deviation of the selection metric
FOLD_EPOCHS_ATTR = "fold_best_epochs"


def candidates(plan: Plan, number: int, params: dict, device: torch.device):
    """Trial `number`'s untrained fold models (each built for its fold's data, from the same
    seed, as `trial.candidate` builds one), the recipe they share, and the generator state
    each starts training from (see crossval.fit_folds)."""
    seed = plan.cfg.seed + number
    fold_models, states = [], []
    for fold in plan.folds.datasets:
        train.seed_everything(seed)
        fold_models.append(models.create(plan.space.family, params, fold.spec).to(device))
        states.append(crossval.rng_state(device))
    recipe = train.Recipe.from_params(params, plan.cfg.trainer.max_epochs, seed)
    return fold_models, recipe, states


def train_trial(objective, trial: optuna.Trial, params: dict) -> float:
    """Train the trial's folds in lockstep, reporting their mean each epoch; keep its weights
    when it ranks in the top k. Returns the trial's value (the folds' mean)."""
    plan, cfg = objective.plan, objective.plan.cfg
    fold_models, recipe, states = candidates(plan, trial.number, params, objective.device)
    n_parameters = models.n_parameters(fold_models[0])
    trial.set_user_attr("n_parameters", n_parameters)
    trial.set_user_attr("device", str(objective.device))
    trial.set_user_attr(METRIC_ATTR, plan.data.spec.metric)
    trial.set_user_attr("cv_folds", plan.k)
    if objective.tracker is not None:
        objective.tracker.trial_started(trial.number, params, str(objective.device), n_parameters)
    result = crossval.fit_folds(
        fold_models,
        objective.folds,
        recipe,
        states,
        eval_batch_size=cfg.trainer.eval_batch_size,
        on_epoch_end=objective.reporter(trial, recipe.epochs),
        compile=cfg.trainer.compile,
    )
    value = result.metrics[plan.data.spec.metric]
    trial.set_user_attr("best_epoch", result.refit_epochs)
    trial.set_user_attr(FOLD_EPOCHS_ATTR, result.best_epochs)
    trial.set_user_attr(CV_STD_ATTR, result.std[plan.data.spec.metric])
    trial.set_user_attr(VAL_LOSS_ATTR, result.val_loss)
    objective.keep_weights(
        trial,
        value,
        result.val_loss,
        lambda: _checkpoint(
            plan, params, recipe, trial.number, fold_models, result, objective.folds
        ),
    )
    return value


def _checkpoint(plan, params, recipe, number, fold_models, result, folds) -> Checkpoint:
    first = folds.datasets[0]
    # The first fold's model stopped at the folds' best epoch: its recipe says so, and the
    # exported script's `train` on that fold's rows gives these weights again.
    kept = recipe.stopped_at(max(1, result.fits[0].best_epoch))
    ckpt = Checkpoint.from_fit(plan.space.family, params, first.spec, kept, number, result.fits[0])
    ckpt.val = result.metrics
    val_outputs, val_targets = crossval.out_of_fold(
        fold_models, folds, first.spec, plan.cfg.trainer.eval_batch_size
    )
    ckpt.extra.update(
        cv={"folds": folds.k, "mean": result.metrics, "std": result.std},
        fold=1,
        fold_best_epochs=result.best_epochs,
        val_outputs=val_outputs,
        val_targets=val_targets,
    )
    return ckpt


def retrain(plan: Plan, trial: optuna.trial.FrozenTrial, device: torch.device):
    """A complete cross-validated trial trained again from its seed: (checkpoint, the first
    fold's model)."""
    params = plan.space.complete(trial.params)
    fold_models, recipe, states = candidates(plan, trial.number, params, device)
    folds = plan.folds.to(device)
    result = crossval.fit_folds(
        fold_models, folds, recipe, states, eval_batch_size=plan.cfg.trainer.eval_batch_size
    )
    return _checkpoint(plan, params, recipe, trial.number, fold_models, result, folds), fold_models[
        0
    ]


def dataset_of(plan: Plan, checkpoint: Checkpoint) -> Dataset:
    """The Dataset whose normalisation `checkpoint`'s model reads: its fold's, with folds."""
    fold = checkpoint.extra.get("fold")
    return plan.data if fold is None or plan.folds is None else plan.folds.datasets[fold - 1]


def val_outputs(study_dir: Path, number: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept trial `number`'s validation outputs and targets, float32 on the CPU.

    With one validation split: its rows, in their order. With folds: every non-test row (in
    the order of data.load_raw_splits' x_rest), each from the fold model that held it out.
    Raises FileNotFoundError when the trial kept no weights (not in study.keep_top_k).
    """
    ckpt = Checkpoint.load(outputs.trial_checkpoint(study_dir, number))
    return ckpt.extra["val_outputs"], ckpt.extra["val_targets"]
