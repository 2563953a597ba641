"""A cross-validated candidate: its k fold models trained in lockstep, one epoch at a time.

    fit_folds(models, folds, recipe, ...)  -> FoldsResult; on_epoch_end gets the folds' mean
    out_of_fold(models, folds, ...)        -> every non-test row's output from the fold model
                                              that did not train on it, in the rows' order

Lockstep (every fold's epoch e, then every fold's epoch e + 1) gives the search one curve per
trial, the mean validation metric of the folds at each epoch, so an epoch-wise pruner (the
median pruner) judges a cross-validated trial after a few epochs exactly as it judges a
holdout trial, instead of after whole folds (docs/performance.md, "Small data").

One epoch count for all folds: every fold keeps its weights of the epoch where that curve (the
folds' mean) is best, and the trial's value is the curve's best. Each fold picking its own
best epoch on its own few validation rows made the value a mean of k maxima, optimistic by
about a point of accuracy on iris; the common epoch is also the one a refit trains.

Torch only, like train.py: nothing here knows about Optuna, MLflow or Hydra.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from automodel import metrics, train
from automodel.data.folds import Folds
from automodel.runtime import loop


@dataclass
class FoldsResult:
    fits: list[train.FitResult]  # per fold, its model restored to the folds' best epoch
    history: list[train.Epoch]  # the folds' mean, epoch by epoch

    @property
    def metrics(self) -> dict[str, float]:
        """Every validation metric: the folds' mean at their best epoch (the common one)."""
        return mean_std([f.best_metrics for f in self.fits])[0]

    @property
    def std(self) -> dict[str, float]:
        """The folds' standard deviation of each metric (population: k values, not a sample)."""
        return mean_std([f.best_metrics for f in self.fits])[1]

    @property
    def val_loss(self) -> float:
        return statistics.fmean(f.history[f.best_epoch - 1].val_loss for f in self.fits)

    @property
    def best_epochs(self) -> list[int]:
        return [f.best_epoch for f in self.fits]

    @property
    def refit_epochs(self) -> int:
        """The folds' best epoch (one for all; their mean, rounded half up, if they differ):
        what a refit on every row trains."""
        return max(1, math.floor(statistics.fmean(self.best_epochs) + 0.5))


def mean_std(per_fold: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    names = per_fold[0]
    mean = {k: statistics.fmean(m[k] for m in per_fold) for k in names}
    std = {k: statistics.pstdev([m[k] for m in per_fold]) for k in names}
    return mean, std


def rng_state(device: torch.device) -> tuple:
    """torch's global generators' state (the CPU's, and `device`'s on a GPU), which dropout
    draws from: taken after building a fold's model, where training it alone would start."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def fit_folds(
    models: list[nn.Module],
    folds: Folds,
    recipe: train.Recipe,
    rng_states: list[tuple],
    *,
    eval_batch_size: int = 2048,
    on_epoch_end: Callable[[train.Epoch], None] | None = None,
    compile: bool = False,
) -> FoldsResult:
    """Train `models[i]` on fold i (`folds` on the models' device), all in lockstep.

    After each epoch `on_epoch_end` gets the folds' mean (losses, every metric, seconds
    summed); it may raise to stop them all (a pruned trial). Every fold keeps its weights of
    the epoch whose mean ranks best (the metric, then the lower loss), and draws its dropout
    masks from its own generator state (`rng_states[i]`, see `rng_state`), so it trains to
    the same weights as `train.fit` alone for that many epochs of the same schedule: the
    exported script's `train` reproduces a fold's model.
    """
    device = folds.datasets[0].y_train.device
    direction = folds.datasets[0].spec.direction
    fittings = [
        train.Fitting(
            m, d, recipe, eval_batch_size=eval_batch_size, compile=compile, own_best=False
        )
        for m, d in zip(models, folds.datasets, strict=True)
    ]
    runs, states, history = [iter(f) for f in fittings], list(rng_states), []
    best, kept = None, None  # the folds' best mean epoch so far, and their weights then
    for _ in range(recipe.epochs):
        records = []
        for i, run in enumerate(runs):
            _set_rng_state(states[i], device)
            records.append(next(run))
            states[i] = rng_state(device)
        mean = _mean_epoch(records, folds.datasets[0].spec.metric)
        history.append(mean)
        if _ranks_above(direction, mean, best):
            best, kept = mean, [loop.snapshot(m) for m in models]
        if on_epoch_end is not None:
            on_epoch_end(mean)
    fits = [f.result() for f in fittings]
    if best is not None:  # else no epoch had a finite metric: nothing to keep (best_epoch 0)
        for fit, model, state in zip(fits, models, kept, strict=True):
            _keep(fit, model, state, best.epoch)
    return FoldsResult(fits, history)


def _ranks_above(direction: str, record: train.Epoch, best: train.Epoch | None) -> bool:
    """Does the folds' mean `record` rank above `best` (an earlier epoch's, or None) as trials
    rank: a better metric, or the same metric and a lower validation loss. Accuracy on a few
    rows plateaus for many epochs; the earliest of the plateau would stop a refit early."""
    if best is None:
        return metrics.better(direction, record.value, metrics.worst(direction))
    if record.value == best.value:
        return record.val_loss < best.val_loss
    return metrics.better(direction, record.value, best.value)


def _keep(fit: train.FitResult, model: nn.Module, state: dict, epoch: int) -> None:
    """`fit` and `model` at `epoch` (1-based): its weights `state`, its metrics then."""
    record = fit.history[epoch - 1]
    fit.best_epoch, fit.best_value, fit.best_metrics = epoch, record.value, dict(record.val)
    fit.best_state = state
    loop.restore(model, state)


def _mean_epoch(records: tuple[train.Epoch, ...], metric: str) -> train.Epoch:
    val = mean_std([r.val for r in records])[0]
    return train.Epoch(
        epoch=records[0].epoch,
        train_loss=statistics.fmean(r.train_loss for r in records),
        val_loss=statistics.fmean(r.val_loss for r in records),
        val=val,
        value=val[metric],
        lr=records[0].lr,
        seconds=sum(r.seconds for r in records),
    )


def out_of_fold(
    models: list[nn.Module], folds: Folds, to_spec=None, batch_size: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, targets) for every non-test row, in the rows' order, each from the fold
    model that held it out: float32 on the CPU.

    Class outputs are logits. A regression's outputs and targets are in the normalised units
    of `to_spec` (a DataSpec; default the first fold's), since each fold normalises the target
    with its own statistics: then `metrics.compute(task, outputs, targets, to_spec.target_std)`
    gives the metrics in the target's own units.
    """
    spec0 = to_spec or folds.datasets[0].spec
    first = folds.datasets[0]
    n, width = folds.n_rows, first.spec.n_outputs
    outputs = torch.empty(n, width, dtype=torch.float32)
    targets = torch.empty(n, dtype=first.y_val.dtype)
    for model, data, rows in zip(models, folds.datasets, folds.val_rows, strict=True):
        out = train.predict_logits(model, data.x_val, batch_size).float().cpu()
        y = data.y_val.cpu()
        if data.spec.task == "regression":
            out, y = (_rescaled(v, data.spec, spec0) for v in (out, y))
        index = torch.from_numpy(rows)
        outputs[index], targets[index] = out, y
    return outputs, targets


def _rescaled(values: torch.Tensor, source, target) -> torch.Tensor:
    """Normalised regression values of `source` (a DataSpec) in `target`'s normalisation."""
    raw = values.double() * source.target_std + source.target_mean
    return ((raw - target.target_mean) / target.target_std).float()
