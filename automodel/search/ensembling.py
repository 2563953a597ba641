"""An ensemble of a study's best trials: selected on their validation outputs, measured once
on the test split, shipped when it beats the best single trial on validation.

    build(plan, study, device, best)  -> Ensemble | None (ensemble.size = 0): selected,
                                         refit with study.refit, test measured
    select(plan, trials, device, size or weights) -> Ensemble (validation only; `measure`)
    choose(plan, pairs, size or weights)          -> the same, among candidates already built
    refit(plan, chosen, trials, device, done, data)  every member trained again on every row
    ship(plan, ensemble, ckpt, model, summary, provenance) -> the shipped module, its export

Candidates are the study's best complete trials (`ensemble.candidates`, whose weights the
search keeps); their validation outputs come from their checkpoints (`val_outputs`; a
study with k-fold cross-validation keeps out-of-fold outputs there, with their
`val_targets`), or are computed on the holdout validation rows. `automodel.ensemble.select`
picks the members and weights.

With study.refit, each member is then trained again on every non-test row, as the single
model is (search/refit.py), and the ensemble of those refits is what is measured on test and
shipped; its `val` stays the selection's estimate (validation or out-of-fold outputs of the
members as the search trained them). The refit members share one Dataset (`Ensemble.data`:
one encoding and normalisation, fitted on every non-test row); without refit the members read
the data their trials trained on (with folds: the first fold's). The refit members are saved
under <study>/ensemble/<trial>.pt, so that the export verb writes the shipped ensemble again
without retraining.

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
from automodel.data import Dataset
from automodel.export import ensemble as export_ensemble
from automodel.search import refit as refitting
from automodel.search.console import warn
from automodel.search.folds import dataset_of
from automodel.search.plan import Plan
from automodel.search.trial import trained
from automodel.study import ranked

REFIT_DIR = "ensemble"  # <study>/ensemble/<trial>.pt: the shipped ensemble's refit members


@dataclass
class Ensemble:
    members: list[Checkpoint]
    models: list[nn.Module]
    weights: list[int]
    val: dict[str, float]  # every validation metric of the weighted average
    val_loss: float
    module: ensemble.Averaged
    data: Dataset  # what every member reads: its encoding, normalisation and test rows
    refit: bool = False  # the members were trained again on every non-test row
    test: dict[str, float] | None = None  # measured once, by `measure`
    test_outputs: torch.Tensor | None = None

    def entry(self) -> dict:
        """summary.json's `ensemble`."""
        return {
            "members": [c.trial for c in self.members],
            "weights": list(self.weights),
            "refit": self.refit,
            "val": dict(self.val),
            "test": None if self.test is None else dict(self.test),
        }


def build(plan: Plan, study: optuna.Study, device: torch.device, best=None) -> Ensemble | None:
    """The ensemble selected among the best `ensemble.candidates` trials, its members refit
    with study.refit, its test metrics measured; None when `ensemble.size` is 0. `best`: the
    best trial's shipped (checkpoint, model, data) when it is a refit, reused if it joins."""
    size = plan.cfg.ensemble.size
    if not size:
        return None
    trials = ranked(study)[: plan.cfg.ensemble.candidates]
    chosen = select(plan, trials, device, size)
    if plan.cfg.study.refit:
        if best is not None and best[0].extra.get("refit"):  # reused if it joins
            refit(plan, chosen, trials, device, {best[0].trial: best[:2]}, best[2])
        else:
            refit(plan, chosen, trials, device)
        save_refit(plan.cfg.study_dir, chosen.members)
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
    # Every candidate read the same data (with folds: each kept the first fold's model), and
    # its outputs are in that data's units: a regression's metrics are taken in them.
    data = dataset_of(plan, pairs[0][0])
    spec = data.spec
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
        val=metrics.for_spec(spec, averaged, y),
        val_loss=metrics.loss(spec.task, averaged, y),
        module=ensemble.Averaged(spec.task, models, weights),
        data=data,
    )


def refit(
    plan: Plan,
    chosen: Ensemble,
    trials: list[optuna.trial.FrozenTrial],
    device: torch.device,
    done: dict | None = None,
    data: Dataset | None = None,
) -> None:
    """Train every member of `chosen` again on every non-test row, as search/refit.py trains
    the single model (the same rows, seed, epochs and schedule), and make the ensemble theirs.
    The selection's validation metrics stay. `done`: refits already made ({trial number:
    (checkpoint, model)}, the best trial's), reused and added to; `data`: their rows."""
    by_number = {t.number: t for t in trials}
    done = {} if done is None else done
    data = refitting.refit_rows(plan, device) if data is None else data
    for member in chosen.members:
        if member.trial not in done:
            ckpt, model, _ = refitting.refit(plan, by_number[member.trial], member, device, data)
            done[member.trial] = (ckpt, model)
    chosen.members = [done[m.trial][0] for m in chosen.members]
    chosen.models = [done[c.trial][1] for c in chosen.members]
    chosen.data, chosen.refit = data, True
    chosen.module = ensemble.Averaged(data.spec.task, chosen.models, chosen.weights)


def save_refit(study_dir, members: list[Checkpoint]) -> None:
    """The refit members as <study>/ensemble/<trial>.pt; no other file is left there."""
    folder = study_dir / REFIT_DIR
    folder.mkdir(exist_ok=True)
    names = {f"{c.trial}.pt" for c in members}
    for c in members:
        c.save(folder / f"{c.trial}.pt")
    for stale in folder.iterdir():
        if stale.name not in names:
            stale.unlink(missing_ok=True)


def load_refit(plan: Plan, entry: dict, device: torch.device) -> Ensemble:
    """The ensemble a search shipped with refit members (summary.json's `entry`), from the
    members save_refit wrote; its `val` as the search selected it, its test not yet measured.
    Raises FileNotFoundError or checkpoint.CheckpointError when a member is missing or torn."""
    members = [
        Checkpoint.load(plan.cfg.study_dir / REFIT_DIR / f"{n}.pt") for n in entry["members"]
    ]
    models = [c.build_model(device) for c in members]
    data = refitting.refit_rows(plan, device)
    return Ensemble(
        members=members,
        models=models,
        weights=list(entry["weights"]),
        val=dict(entry["val"]),
        val_loss=float("nan"),  # not recorded: only the selection compared losses
        module=ensemble.Averaged(data.spec.task, models, entry["weights"]),
        data=data,
        refit=True,
    )


def measure(plan: Plan, chosen: Ensemble) -> None:
    """The ensemble's outputs and metrics on the test split (the one place it is touched)."""
    dataset = chosen.data.to(next(chosen.module.parameters()).device)
    batch = plan.cfg.trainer.eval_batch_size
    chosen.test_outputs = train.predict_logits(chosen.module, dataset.x_test, batch)
    chosen.test = metrics.for_spec(dataset.spec, chosen.test_outputs, dataset.y_test)


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
