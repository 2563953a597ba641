"""The end of a search: the model it ships (the best trial's, its refit: search/refit.py, or
the ensemble of the best trials: search/ensembling.py), built once; the test split, evaluated
once; best_model.pt, best_params.json, importance.json, the export of what the study ships and
summary.json (written here and only here), with why the search stopped and, for a
table, the gradient-boosting baseline beside it.

The test split is touched only here, after the search has chosen: it never steers selection.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from automodel import baseline, export, importance, metrics, outputs, train
from automodel.checkpoint import Checkpoint
from automodel.data import Dataset
from automodel.search import converge, ensembling
from automodel.search.console import warn
from automodel.search.plan import Plan
from automodel.search.refit import described, shipped
from automodel.search.trial import SearchStopped
from automodel.study import best_trial, counts, most_common_failure, storage_label


def finish(
    plan: Plan,
    study: optuna.Study,
    device: torch.device,
    wall: float,
    command: str = "",
    tracker=None,
) -> dict:
    """Evaluate the best trial on the test split; write the study's results. Returns the summary.

    With a tracker, the summary names the study's final MLflow parent run (`mlflow_run_id`),
    and the result goes to that run once summary.json is on disk.
    """
    cfg = plan.cfg
    best = best_trial(study)
    if best is None:
        raise _nothing_completed(study)
    ckpt, model, dataset = shipped(plan, best, device)
    test_outputs = train.predict_logits(model, dataset.x_test, cfg.trainer.eval_batch_size)
    ckpt.test = _test_metrics(dataset, test_outputs)
    study_dir = cfg.study_dir
    ckpt.save(study_dir / "best_model.pt")
    outputs.write_json(study_dir / "best_params.json", ckpt.params)
    summary = {**_summary(plan, study, ckpt, wall, command), **described(ckpt)}
    # None unless ensemble.size > 0; its members refit with study.refit (the best one reused).
    chosen = ensembling.build(plan, study, device, (ckpt, model, dataset))
    if tracker is not None:
        # Final before the export, whose provenance names it: duplicates are merged by now.
        summary["mlflow_run_id"] = tracker.settle()
    prov = export.provenance(summary["study"], command, summary.get("mlflow_run_id"))
    sent, sent_outputs = ensembling.ship(plan, chosen, ckpt, model, summary, prov)
    if sent_outputs is not None:  # the ensemble: the data its members read
        dataset, test_outputs = chosen.data.to(device), sent_outputs
    summary["importance"] = _explain(plan, sent, dataset)
    outputs.write_json(study_dir / "summary.json", summary)
    if tracker is not None:
        # The shipped model's data: its normalisation is what the registered model applies.
        shipped_plan = dataclasses.replace(plan, data=dataset)
        tracker.finish_study(shipped_plan, study, summary, sent, test_outputs)
        if summary["export"]:
            tracker.log_export(Path(summary["export"]))
    return summary


def _nothing_completed(study: optuna.Study) -> SearchStopped:
    c = counts(study)
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    cause, _ = most_common_failure(failed)
    return SearchStopped(
        f"no trial completed ({c['pruned']} pruned, {c['failed']} failed"
        + (f"; most common failure: {cause}" if cause else "")
        + ")"
    )


def _test_metrics(dataset: Dataset, test_outputs: torch.Tensor) -> dict[str, float]:
    spec = dataset.spec
    return metrics.for_spec(spec, test_outputs, dataset.y_test)


def test_metrics(model: torch.nn.Module, dataset: Dataset, batch_size: int) -> dict[str, float]:
    """Every metric of the task on the test split, for a model outside a search's end."""
    return _test_metrics(dataset, train.predict_logits(model, dataset.x_test, batch_size))


def _summary(plan: Plan, study: optuna.Study, ckpt: Checkpoint, wall: float, command: str):
    cfg, c = plan.cfg, counts(study)
    return {
        "study": cfg.study.name,
        "best_trial": ckpt.trial,
        "family": plan.space.family,
        "params": ckpt.params,
        "val": ckpt.val,
        "test": ckpt.test,
        "counts": {k: c[k] for k in ("complete", "pruned", "failed")},
        "n_trials": cfg.study.n_trials,
        "wall_seconds": round(wall, 2),
        "stop_reason": converge.stop_reason(study, cfg, wall),
        "baseline": _baseline(plan),
        "storage": storage_label(cfg),
        "weights": str(cfg.study_dir / "best_model.pt"),
        "command": command,
    }


def _baseline(plan: Plan) -> dict | None:
    """Gradient boosting at default settings on the same training rows, for a table."""
    if not plan.cfg.baseline or not baseline.applies(plan.data):
        return None
    return baseline.gradient_boosting(plan.data, plan.cfg.seed)


def _explain(plan: Plan, model: torch.nn.Module, dataset: Dataset) -> dict | None:
    """importance.json for the model shipped (see importance.py); None with explain=false.
    A model that cannot be explained is reported rather than failing the finished search."""
    cfg = plan.cfg
    if not cfg.explain:
        importance.clear(cfg.study_dir)
        return None
    try:
        return importance.explain(
            model, dataset, cfg.study_dir, seed=cfg.seed, batch_size=cfg.trainer.eval_batch_size
        )
    except (RuntimeError, ValueError) as err:
        warn(f"the best model was not explained: {err}")
        importance.clear(cfg.study_dir)
        return None
