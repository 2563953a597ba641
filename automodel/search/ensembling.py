"""An ensemble of a study's best trials: selected on their validation outputs, measured once
on the test split, shipped when it beats the best single trial on validation.

    build(plan, study, device)      -> Ensemble | None (ensemble.size = 0), test measured
    select(plan, trials, device, size or weights) -> Ensemble (validation only; `measure`)
    choose(plan, pairs, size or weights)          -> the same, among candidates already built
    ship(plan, ensemble, ckpt, model, summary, provenance) -> the shipped module, its export

Candidates are the study's best complete trials (`ensemble.candidates`, whose weights the
search keeps); their validation outputs come from their checkpoints (`val_outputs`; a
study with k-fold cross-validation keeps out-of-fold outputs there, with their
`val_targets`), or are computed on the holdout validation rows. `automodel.ensemble.select`
picks the members and weights.

Shipping: the ensemble is shipped when it has two members or more and ranks above the best
trial as the study ranks trials: a better validation metric, or the same metric and a lower
validation loss. A tie on both ships the single trial (one network: smaller and faster).
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import torch
from torch import nn

from automodel import ensemble, export, metrics, train
from automodel.checkpoint import Checkpoint
from automodel.export import ensemble as export_ensemble
from automodel.search.console import warn
from automodel.search.plan import Plan
from automodel.search.trial import trained
from automodel.study import ranked


@dataclass
class Ensemble:
    members: list[Checkpoint]
    models: list[nn.Module]
    weights: list[int]
    val: dict[str, float]  # every validation metric of the weighted average
    val_loss: float
    module: ensemble.Averaged
    test: dict[str, float] | None = None  # measured once, by `measure`
    test_outputs: torch.Tensor | None = None

    def entry(self) -> dict:
        """summary.json's `ensemble`."""
        return {
            "members": [c.trial for c in self.members],
            "weights": list(self.weights),
            "val": dict(self.val),
            "test": None if self.test is None else dict(self.test),
        }


def build(plan: Plan, study: optuna.Study, device: torch.device) -> Ensemble | None:
    """The ensemble selected among the best `ensemble.candidates` trials, its test metrics
    measured; None when `ensemble.size` is 0."""
    size = plan.cfg.ensemble.size
    if not size:
        return None
    chosen = select(plan, ranked(study)[: plan.cfg.ensemble.candidates], device, size)
    measure(plan, chosen)
    return chosen


def select(
    plan: Plan,
    trials: list[optuna.trial.FrozenTrial],
    device: torch.device,
    size: int | None = None,
    weights: list[int] | None = None,
) -> Ensemble:
    """The ensemble selected among `trials` (best first) in `size` greedy steps, or, with
    `weights`, the ensemble of `trials` weighted so (as a search selected it)."""
    return choose(plan, [trained(plan, t, device) for t in trials], size, weights)


def choose(
    plan: Plan, pairs: list, size: int | None = None, weights: list[int] | None = None
) -> Ensemble:
    """`select` among candidates already built: (Checkpoint, model) pairs, best first."""
    outputs, y = _validation(plan, pairs)
    spec = plan.data.spec
    if weights is None:
        picked = ensemble.select(outputs, y, spec.task, size, spec.target_std)
        pairs = [pairs[i] for i in picked.members]
        outputs = [outputs[i] for i in picked.members]
        weights = picked.weights
    averaged = ensemble.combine(spec.task, outputs, weights)
    models = [m for _, m in pairs]
    return Ensemble(
        members=[c for c, _ in pairs],
        models=models,
        weights=list(weights),
        val=metrics.compute(spec.task, averaged, y, spec.target_std),
        val_loss=metrics.loss(spec.task, averaged, y),
        module=ensemble.Averaged(spec.task, models, weights),
    )


def measure(plan: Plan, chosen: Ensemble) -> None:
    """The ensemble's outputs and metrics on the test split (the one place it is touched)."""
    spec = plan.data.spec
    dataset = plan.data.to(next(chosen.module.parameters()).device)
    batch = plan.cfg.trainer.eval_batch_size
    chosen.test_outputs = train.predict_logits(chosen.module, dataset.x_test, batch)
    chosen.test = metrics.compute(spec.task, chosen.test_outputs, dataset.y_test, spec.target_std)


def beats(plan: Plan, chosen: Ensemble, best: Checkpoint, model: nn.Module) -> bool:
    """Does the ensemble score better than the best trial on validation? The trial's own
    validation estimate (`best.val`: its split's, or its folds' mean, kept by a refit) against
    the ensemble's on the same rows; a tie ships the single model, which is smaller."""
    spec = plan.data.spec
    if len(chosen.members) < 2:
        return False
    return metrics.better(spec.direction, chosen.val[spec.metric], best.val[spec.metric])


def ship(plan: Plan, chosen: Ensemble | None, best: Checkpoint, model, summary: dict, prov):
    """Write the export of what the study ships and fill summary's `ensemble`, `shipped` and
    `export` (with `export_error` when a model could not be written as code). Returns the
    shipped module and its test outputs (None: the best trial's); `model` is the best
    trial's module.

    An ensemble whose members cannot all be exported is reported and the single best is
    shipped instead: the search does not fail.
    """
    study_dir = plan.cfg.study_dir
    summary["ensemble"] = None if chosen is None else chosen.entry()
    summary["shipped"] = "trial"
    if chosen is not None and beats(plan, chosen, best, model):
        scores = {"val": chosen.val, "test": chosen.test}
        try:
            folder = export_ensemble.write(
                study_dir, chosen.members, chosen.weights, scores, prov, chosen.models
            )
        except export.ExportError as err:
            warn(f"the ensemble was not exported ({err}); shipping the best trial instead")
            summary["export_error"] = f"ensemble: {err}"
        else:
            summary["shipped"], summary["export"] = "ensemble", str(folder)
            return chosen.module, chosen.test_outputs
    try:
        summary["export"] = str(export.write(study_dir, best.to_dict(), prov, model=model))
    except export.ExportError as err:
        warn(f"the best model was not exported: {err}")
        summary["export"] = None
        summary["export_error"] = "; ".join(filter(None, [summary.get("export_error"), str(err)]))
    return model, None


def _validation(plan: Plan, pairs: list) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each candidate's validation outputs (on the CPU) and the targets they are scored
    against: as its checkpoint keeps them, else computed on the holdout validation rows."""
    y = pairs[0][0].extra.get("val_targets", plan.data.y_val).cpu()
    kept = [c.extra.get("val_outputs") for c, _ in pairs]
    if all(isinstance(o, torch.Tensor) and len(o) == len(y) for o in kept):
        return [o.float().cpu() for o in kept], y
    # A checkpoint without them (written by an older version): the holdout rows, for all.
    y, outputs = plan.data.y_val.cpu(), []
    batch = plan.cfg.trainer.eval_batch_size
    for o, (_, model) in zip(kept, pairs, strict=True):
        if not (isinstance(o, torch.Tensor) and len(o) == len(y)):
            x_val = plan.data.to(next(model.parameters()).device).x_val
            o = train.predict_logits(model, x_val, batch)
        outputs.append(o.float().cpu())
    return outputs, y
