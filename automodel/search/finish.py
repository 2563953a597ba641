"""The end of a search: the best trial's model, built once; the test split, evaluated once;
best_model.pt, best_params.json, the export and summary.json (written here and only here).

The test split is touched only here, after the search has chosen: it never steers selection.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from automodel import export, metrics, outputs, train
from automodel.checkpoint import Checkpoint
from automodel.data import Dataset
from automodel.search.console import warn
from automodel.search.plan import Plan
from automodel.search.trial import SearchStopped, trained
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
    ckpt, model = trained(plan, best, device)
    dataset = plan.data.to(device)
    test_outputs = train.predict_logits(model, dataset.x_test, cfg.trainer.eval_batch_size)
    ckpt.test = _test_metrics(dataset, test_outputs)
    study_dir = cfg.study_dir
    ckpt.save(study_dir / "best_model.pt")
    outputs.write_json(study_dir / "best_params.json", ckpt.params)
    summary = _summary(plan, study, ckpt, wall, command)
    if tracker is not None:
        # Final before the export, whose provenance names it: duplicates are merged by now.
        summary["mlflow_run_id"] = tracker.settle()
    summary["export"] = _export(study_dir, ckpt, model, summary)
    outputs.write_json(study_dir / "summary.json", summary)
    if tracker is not None:
        tracker.finish_study(plan, study, summary, model, test_outputs)
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
        "storage": storage_label(cfg),
        "weights": str(cfg.study_dir / "best_model.pt"),
        "command": command,
    }


def _export(study_dir: Path, ckpt: Checkpoint, model: torch.nn.Module, summary: dict):
    """Write export/ (best_model.py and its weights) from the model already built. A model the
    exporter cannot write is reported (stderr and summary["export_error"]) rather than failing
    the finished search."""
    prov = export.provenance(summary["study"], summary["command"], summary.get("mlflow_run_id"))
    try:
        return str(export.write(study_dir, ckpt.to_dict(), prov, model=model))
    except export.ExportError as err:
        warn(f"the best model was not exported: {err}")
        summary["export_error"] = str(err)
        return None
