"""The `export` verb for ensembles: a finished study's ensemble written as one best_model.py.

    export_ensemble(cfg, saved, command, summary, size) -> the export folder

size 0: the ensemble the study shipped (summary.json's members and weights; with refit, the
refit members the search saved under <study>/ensemble/). size k: an ensemble selected anew
in k steps among the trials the study kept (the search kept the best `ensemble.candidates`
with their validation outputs), so that no trial is retrained; a study searched with refit
refits the new members on every non-test row, as its search would have. Both measure the
ensemble's test metrics then, with the settings the study was searched with.
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import torch

from automodel import export, outputs, search
from automodel.checkpoint import CheckpointError
from automodel.config import ConfigError, RunConfig
from automodel.export import ensemble as rendering
from automodel.search import ensembling
from automodel.study import ranked


def export_ensemble(
    cfg: RunConfig, saved: RunConfig, command: str, summary: dict, size: int
) -> Path:
    """Write <study>/export/ for an ensemble of the study's trials (see the module); `saved`
    is the settings the study was searched with (study_export.searched_with)."""
    name = cfg.study.name
    search.quiet_optuna()
    study = optuna.load_study(study_name=saved.study.name, storage=search.open_study_storage(saved))
    best = ranked(study)
    # The trials the search kept weights (and validation outputs) for: the ones on disk, so
    # that nothing is retrained (this command's keep_top_k may differ from the search's).
    on_disk = [t for t in best if outputs.trial_checkpoint(cfg.study_dir, t.number).exists()]
    kept = on_disk[: cfg.ensemble.candidates]
    if size > len(kept):
        raise ConfigError(
            f"ensemble.size={size} is more than the {len(kept)} trials study {name!r} kept for "
            f"an ensemble (their weights under trials/); choose ensemble.size <= {len(kept)}, "
            f"or search with ensemble.candidates >= {size}"
        )
    plan = search.prepare(saved)
    if saved.trainer.threads:  # as the trials ran: a thread count can change the last bits
        torch.set_num_threads(saved.trainer.threads)
    device = torch.device("cpu")
    if size:
        chosen = ensembling.select(plan, kept, device, size=size)
        if summary.get("refit"):  # the study shipped a refit: so are the new members
            if not cfg.quiet:
                print("refitting the members on every non-test row", file=sys.stderr, flush=True)
            ensembling.refit(plan, chosen, kept, device)
    elif summary["ensemble"].get("refit"):
        try:
            chosen = ensembling.load_refit(plan, summary["ensemble"], device)
        except (FileNotFoundError, CheckpointError) as err:
            raise ConfigError(
                f"study {name!r} shipped refit ensemble members that cannot be read ({err}); "
                f"rerun its search to write them again"
            ) from None
    else:
        entry = summary["ensemble"]
        by_number = {t.number: t for t in best}
        missing = [n for n in entry["members"] if n not in by_number]
        if missing:
            raise ConfigError(f"study {name!r} has no complete trial {missing[0]}")
        members = [by_number[n] for n in entry["members"]]
        chosen = ensembling.select(plan, members, device, weights=entry["weights"])
    ensembling.measure(plan, chosen)
    if not cfg.quiet:
        _report(chosen, summary, plan.data.spec.metric)
    prov = export.provenance(name, command, summary.get("mlflow_run_id"), summary.get("command"))
    scores = {"val": chosen.val, "test": chosen.test}
    try:
        return rendering.write(
            cfg.study_dir, chosen.members, chosen.weights, scores, prov, chosen.models
        )
    except export.ExportError as err:
        raise ConfigError(f"cannot export the ensemble: {err}") from None


def _report(chosen: ensembling.Ensemble, summary: dict, metric: str) -> None:
    """The ensemble beside the best trial, on validation: what the user chose between."""
    members = ", ".join(
        f"{c.trial} (x{w})" for c, w in zip(chosen.members, chosen.weights, strict=True)
    )
    single = (summary.get("val") or {}).get(metric)
    versus = f" (best trial {summary['best_trial']}: {single:.4f})" if single is not None else ""
    print(
        f"ensemble of trials {members}: val {metric} {chosen.val[metric]:.4f}{versus}, "
        f"test {metric} {chosen.test[metric]:.4f}",
        file=sys.stderr,
        flush=True,
    )
