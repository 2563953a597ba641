"""The `export` verb: write <study>/export/ for a finished study's best trial or another one.

    export_study(cfg) -> the export folder, from best_model.pt or from trial `cfg.trial`

automodel.export turns a checkpoint into code; this module finds the checkpoint on disk (or
retrains the trial, as the search would have) with the settings the study was searched with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from automodel import config, export, outputs, search, study_ensemble
from automodel.checkpoint import Checkpoint, CheckpointError
from automodel.config import ConfigError, RunConfig
from automodel.search.folds import dataset_of


def export_study(cfg: RunConfig, command: str = "", ensemble_given: bool = False) -> Path:
    """`python -m automodel export`: write <study>/export/ for what the study shipped, the
    best trial, `cfg.trial`, or (`ensemble_given`: ensemble.* on the command line) an
    ensemble selected anew with `cfg.ensemble` (size 0: the best trial).

    The best trial comes from best_model.pt. Another trial comes from its kept weights, or is
    retrained as it recorded it trained (as the search's end would) when they were not kept,
    on the data and trainer settings the study recorded, not this command's nor config.yaml's
    (which says what the latest command that ran the study said).
    """
    study_dir = cfg.study_dir
    if not (study_dir / "config.yaml").is_file():
        raise ConfigError(
            f"no study {cfg.study.name!r} under {cfg.runs_dir}/; "
            "list them with: python -m automodel status"
        )
    summary = _read_json(study_dir / "summary.json")
    wanted = cfg.ensemble.size if ensemble_given else 0
    if wanted and cfg.trial is not None:
        raise ConfigError(
            f"give trial={cfg.trial} or ensemble.size={wanted}, not both (ensemble.size=0 and "
            "trial=<n> export one trial)"
        )
    shipped = summary.get("shipped") == "ensemble" and summary.get("ensemble")
    if wanted or (cfg.trial is None and not ensemble_given and shipped):
        return study_ensemble.export_ensemble(cfg, searched_with(cfg), command, summary, wanted)
    model = None
    if cfg.trial is None or cfg.trial == summary.get("best_trial"):
        if not (study_dir / "best_model.pt").is_file():
            raise ConfigError(
                f"study {cfg.study.name!r} has no best model yet; finish its search first"
            )
        try:
            ckpt = Checkpoint.load(study_dir / "best_model.pt")
        except CheckpointError as err:
            raise ConfigError(str(err)) from None
    else:
        ckpt, model = _trial_checkpoint(cfg, cfg.trial)
    prov = export.provenance(
        cfg.study.name, command, summary.get("mlflow_run_id"), summary.get("command")
    )
    try:
        return export.write(study_dir, ckpt.to_dict(), prov, model=model)
    except export.ExportError as err:
        raise ConfigError(f"cannot export trial {ckpt.trial}: {err}") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _trial_checkpoint(cfg: RunConfig, number: int) -> tuple[Checkpoint, torch.nn.Module]:
    """Trial `number`'s checkpoint, with its test metric measured now, and its model."""
    if number < 0:
        raise ConfigError(f"trial must be a trial number >= 0, got {number}")
    search.quiet_optuna()
    try:
        study = optuna.load_study(study_name=cfg.study.name, storage=search.open_study_storage(cfg))
    except KeyError:
        raise ConfigError(f"no study named {cfg.study.name!r} in its storage") from None
    saved = searched_with(cfg, study.user_attrs)
    plan = search.prepare(saved)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise ConfigError(
            f"study {cfg.study.name!r} has no trial {number}; its trials are 0..{len(trials) - 1}"
        )
    trial = trials[number]
    if trial.state != TrialState.COMPLETE:
        raise ConfigError(
            f"trial {number} of study {cfg.study.name!r} is {trial.state.name.lower()}; "
            "only complete trials can be exported"
        )
    kept = outputs.trial_checkpoint(cfg.study_dir, number)
    if not kept.exists() and not cfg.quiet:
        print(
            f"trial {number} kept no weights (only the top study.keep_top_k trials do): "
            f"retraining it from its seed into {kept}",
            file=sys.stderr,
            flush=True,
        )
    device = torch.device("cpu")
    if saved.trainer.threads:  # a trial of an older version records none (a newer one does)
        torch.set_num_threads(saved.trainer.threads)
    ckpt, model = search.trained(plan, trial, device)
    # With folds the trial's model is its first fold's, normalised that fold's way.
    dataset = dataset_of(plan, ckpt)
    ckpt.test = search.test_metrics(model, dataset, saved.trainer.eval_batch_size)
    return ckpt, model


def searched_with(cfg: RunConfig, recorded: dict | None = None) -> RunConfig:
    """The settings the study was searched with: the data, folds, seed and trainer settings it
    recorded (`recorded`: the study's user attrs, read from its storage when None; see
    study.identity), and its own search space (search_space.yaml: its identity).

    This command line gives the rest (where the study is: its storage URL is masked on
    disk). A study of an older automodel recorded no seed nor trainer: its config.yaml does.
    """
    from omegaconf import OmegaConf

    if recorded is None:
        recorded = _recorded(cfg)
    saved = config.as_dict(cfg)
    if "seed" in recorded and "trainer" in recorded:
        saved["trainer"].update(recorded["trainer"])
        saved.update(data=recorded["data"], seed=recorded["seed"])
    else:
        old = _config_yaml(cfg.study_dir / "config.yaml")
        saved.update(data=old.get("data", saved["data"]), seed=old.get("seed", saved["seed"]))
        saved["trainer"].update(old.get("trainer") or {})
    if "cv_folds" in recorded:  # resolved when the study was created: 0 or k
        saved["data"]["cv_folds"] = recorded["cv_folds"]
    space = OmegaConf.to_container(OmegaConf.load(cfg.study_dir / "search_space.yaml"))
    saved.update(search_space=space, trial=None)
    saved["study"]["storage"] = cfg.study.storage
    return config.to_run_config(OmegaConf.create(saved))


def _recorded(cfg: RunConfig) -> dict:
    """The study's recorded identity (its user attrs); empty when the storage has no study."""
    search.quiet_optuna()
    try:
        study = optuna.load_study(study_name=cfg.study.name, storage=search.open_study_storage(cfg))
    except KeyError:
        return {}
    return dict(study.user_attrs)


def _config_yaml(path: Path) -> dict:
    import yaml

    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path} cannot be read: {str(err).splitlines()[0]}") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} is not a mapping of settings")
    return saved
