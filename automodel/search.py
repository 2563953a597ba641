"""The orchestrator: validate everything, open the study, run trials, report the best.

    prepare(run)      -> Plan: space, data, storage settings (all user input checked here)
    search(run)       -> runs trials until the budget is met, writes summary.json
    objective(trial)  -> params -> model -> train.fit, reporting each epoch to the trial

Trials are created through `study.optimize(n_trials=1)` one at a time so that the budget,
the failure guard and Ctrl-C are checked between trials, and Optuna's heartbeat (RDB) runs.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from automodel import config, devices, models, outputs, spaces, train
from automodel import data as datalib
from automodel import study as studylib
from automodel.config import ConfigError, RunConfig


class SearchStopped(RuntimeError):
    """The search gave up (too many failures, no trial completed); exit code 1."""


@dataclass
class Plan:
    run: RunConfig
    space: spaces.Space
    space_path: Path
    data: datalib.Dataset


def prepare(run: RunConfig) -> Plan:
    """Load and check the space and the data; nothing is written. Raises ConfigError."""
    space_path = config.resolve_space_path(run.search_space)
    try:
        space = spaces.load(space_path)
        data = datalib.load(run.data, run.seed)
        models.create(space.family, {}, data.spec)  # a family that cannot fit the data fails here
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check_batch_size(space, space_path, len(data.x_train), run.data.name)
    return Plan(run, space, space_path, data)


def _check_batch_size(space: spaces.Space, path: Path, n_train: int, data_name: str) -> None:
    for e in space.entries:
        if e.name != "batch_size":
            continue
        largest = e.value if e.type == "fixed" else (max(e.choices) if e.choices else e.high)
        if largest > n_train:
            raise ConfigError(
                f"{path}: params.batch_size allows {largest}, more than the {n_train} training "
                f"rows of data {data_name}; lower it to at most {n_train}"
            )


def open_study(plan: Plan, seed_offset: int = 0) -> optuna.Study:
    """Create the study or attach to it; refuse one created with another space or data."""
    run = plan.run
    try:
        sampler = studylib.make_sampler(run.study.sampler, run.seed + seed_offset)
        pruner = studylib.make_pruner(run.study.pruner, run.trainer.max_epochs)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    storage = _storage(run)
    identity = {"space": plan.space.source, "data": config.as_dict(run)["data"]}
    try:
        existing = optuna.load_study(study_name=run.study.name, storage=storage).user_attrs
    except KeyError:  # a new study
        existing = {}
    for key, value in identity.items():
        if existing.get(key) not in (None, value):
            raise ConfigError(
                f"study {run.study.name!r} was created with a different {key} "
                f"({_difference(existing[key], value)}); rerun with the original settings "
                "or choose a new study.name"
            )
    study = optuna.create_study(
        study_name=run.study.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )
    for key, value in identity.items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    return study


def _storage(run: RunConfig) -> optuna.storages.BaseStorage:
    if run.study.storage is None:
        return studylib.open_storage(None, run.study_dir)
    try:
        return studylib.open_storage(run.study.storage, run.study_dir)
    except Exception as err:  # driver missing, server down, bad credentials: all user-fixable
        raise ConfigError(
            f"cannot open study.storage {config.mask_url(run.study.storage)!r}: "
            f"{config.mask_url(_reason(err))}"
        ) from None


def _difference(old, new, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            if old.get(k) != new.get(k):
                return _difference(old.get(k), new.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.') or 'value'}: {old!r} then, {new!r} now"


def write_run_files(plan: Plan) -> None:
    import yaml

    study_dir = plan.run.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_atomic(
        study_dir / "config.yaml", yaml.safe_dump(config.as_dict(plan.run), sort_keys=False)
    )
    if not (study_dir / "search_space.yaml").exists():
        shutil.copyfile(plan.space_path, study_dir / "search_space.yaml")


class Objective:
    """Trains one candidate per call; holds what every trial of this worker shares."""

    def __init__(self, plan: Plan, device: torch.device, tracker=None):
        self.plan = plan
        self.device = device
        self.data = plan.data.to(device)
        self.tracker = tracker
        self.worker = studylib.worker_id()

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(studylib.WORKER_ATTR, self.worker)
        try:
            return self._train(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr(studylib.FAIL_ATTR, _reason(err))
            raise

    def _train(self, trial: optuna.Trial) -> float:
        run, space = self.plan.run, self.plan.space
        params = space.sample(trial)
        seed = run.seed + trial.number
        train.seed_everything(seed)
        model = models.create(space.family, params, self.data.spec).to(self.device)
        recipe = train.Recipe.from_params(params, run.trainer.max_epochs, seed)
        trial.set_user_attr("n_parameters", models.n_parameters(model))
        trial.set_user_attr("device", str(self.device))
        if self.tracker is not None:
            self.tracker.trial_started(
                trial.number, params, str(self.device), models.n_parameters(model)
            )

        def on_epoch_end(epoch: train.Epoch) -> None:
            trial.report(epoch.val_accuracy, epoch.epoch)
            if self.tracker is not None:
                self.tracker.epoch(trial.number, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch.epoch}")

        result = train.fit(
            model,
            self.data,
            recipe,
            eval_batch_size=run.trainer.eval_batch_size,
            on_epoch_end=on_epoch_end,
        )
        trial.set_user_attr("best_epoch", result.best_epoch)
        self._keep_weights(trial, params, recipe, result)
        return result.best_value

    def _keep_weights(self, trial, params, recipe, result: train.FitResult) -> None:
        """Save this trial's weights if it ranks in the top k, and drop those pushed out."""
        study_dir, k = self.plan.run.study_dir, self.plan.run.study.keep_top_k
        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        better = sum(1 for t in done if t.value > result.best_value)
        if better >= k:
            return
        ckpt = checkpoint(
            self.plan, trial.number, params, recipe, result.best_state, result.best_value
        )
        outputs.save_checkpoint(outputs.trial_checkpoint(study_dir, trial.number), ckpt)
        ranked = sorted(
            [(t.value, -t.number, t.number) for t in done]
            + [(result.best_value, -trial.number, trial.number)],
            reverse=True,
        )
        keep = {n for _, _, n in ranked[:k]}
        outputs.prune_trials(study_dir, keep, {t.number for t in done})


def checkpoint(
    plan: Plan, number: int, params: dict, recipe: train.Recipe, state: dict, value: float
) -> dict:
    return {
        "family": plan.space.family,
        "params": params,
        "spec": plan.data.spec.to_dict(),
        "recipe": recipe.to_dict(),
        "trial": number,
        "val": {plan.data.spec.metric: value},
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
    }


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:500] if text else type(err).__name__


class Progress:
    """One line per finished trial: counts, best so far, time used and left."""

    def __init__(self, run: RunConfig, start: float):
        self.run = run
        self.start = start

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.run.quiet:
            return
        c = studylib.counts(study)
        best = studylib.best_trial(study)
        done = c["complete"] + c["pruned"]
        elapsed = time.monotonic() - self.start
        if trial.state == TrialState.COMPLETE:
            what = f"complete  val_acc={trial.value:.4f}"
        elif trial.state == TrialState.PRUNED:
            what = f"pruned at epoch {trial.last_step}"
        else:
            what = f"FAILED ({trial.user_attrs.get(studylib.FAIL_ATTR, 'unknown error')})"
        best_text = f"best={best.value:.4f} (#{best.number})" if best else "best=-"
        left = _time_left(self.run, done, elapsed)
        print(
            f"[{done:>3}/{self.run.study.n_trials}] trial {trial.number:<3} {what:<34} {best_text}  "
            f"| {c['pruned']} pruned, {c['failed']} failed | {_clock(elapsed)} used{left}",
            flush=True,
        )


def _time_left(run: RunConfig, done: int, elapsed: float) -> str:
    estimates = []
    if run.study.timeout:
        estimates.append(max(0.0, run.study.timeout - elapsed))
    if done:
        estimates.append(elapsed / done * max(0, run.study.n_trials - done))
    return f", ~{_clock(min(estimates))} left" if estimates else ""


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def run_trials(
    plan: Plan, study: optuna.Study, device: torch.device, tracker=None, start: float | None = None
) -> None:
    """Ask the shared study for trials until the budget, the timeout or the failure guard says stop."""
    run = plan.run
    start = time.monotonic() if start is None else start
    deadline = start + run.study.timeout if run.study.timeout else math.inf
    objective = Objective(plan, device, tracker)
    callbacks = [Progress(run, start)]
    if tracker is not None:
        callbacks.append(lambda study, trial: tracker.trial_finished(trial))
    while time.monotonic() < deadline:
        c = studylib.counts(study)
        if c["complete"] + c["pruned"] + c["running"] >= run.study.n_trials:
            break
        _failure_guard(study, run)
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
    _failure_guard(study, run)


def _failure_guard(study: optuna.Study, run: RunConfig) -> None:
    window = run.study.failure_window
    ended = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    recent = sorted(ended, key=lambda t: t.number)[-window:]
    failed = [t for t in recent if t.state == TrialState.FAIL]
    if len(failed) > run.study.max_failure_fraction * window:
        reason, n = studylib.most_common_failure(failed)
        raise SearchStopped(
            f"stopping: {len(failed)} of the last {len(recent)} trials failed "
            f"(most common, {n}x: {reason}); fix the cause or raise study.max_failure_fraction"
        )


def search(run: RunConfig, command: str = "") -> dict:
    """Run (or resume) a search to its budget and write the study's outputs. Returns the summary."""
    start = time.monotonic()
    plan = prepare(run)
    slots = devices.plan(run.devices, 1, 1, run.trainer.threads)
    _quiet_optuna()
    study = open_study(plan)
    write_run_files(plan)
    stale = studylib.fail_dead_local_trials(study, include_unowned=run.study.storage is None)
    if stale and not run.quiet:
        print(f"marked {len(stale)} trial(s) left RUNNING by a dead process as failed: {stale}")
    if not study.trials:
        for params in plan.space.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
    device = _device(slots[0])
    tracker = _tracker(plan, study)
    if not run.quiet:
        c = studylib.counts(study)
        print(
            f"study {run.study.name}: {c['complete'] + c['pruned']} of {run.study.n_trials} trials "
            f"done, family {plan.space.family}, data {run.data.name} "
            f"({len(plan.data.x_train)} train / {len(plan.data.x_val)} val / {len(plan.data.x_test)} test), "
            f"device {device}, outputs in {run.study_dir}/",
            flush=True,
        )
    try:
        run_trials(plan, study, device, tracker, start)
        summary = finish(plan, study, device, time.monotonic() - start, command, tracker)
    except BaseException as err:
        if tracker is not None:
            tracker.close(err)
        raise
    if tracker is not None:
        tracker.close()
    return summary


def _tracker(plan: Plan, study: optuna.Study):
    """The study's MLflow tracker, or None with tracking.enabled=false (mlflow never imported)."""
    run = plan.run
    if not run.tracking.enabled:
        return None
    from automodel import tracking

    tracker = tracking.Tracker(run)
    tracker.start_study(plan, study)
    if not run.quiet:
        print(
            f"mlflow: run {tracker.parent_id} in experiment {run.tracking.experiment} at "
            f"{tracker.store.shown} (browse: python -m automodel ui)",
            flush=True,
        )
    return tracker


def _device(slot: devices.Slot) -> torch.device:
    torch.set_num_threads(slot.threads)
    return torch.device("cpu" if slot.gpu is None else f"cuda:{slot.gpu}")


def _quiet_optuna() -> None:
    # Our progress lines replace Optuna's per-trial INFO logs; failures are reported by us.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)


def finish(
    plan: Plan,
    study: optuna.Study,
    device: torch.device,
    wall: float,
    command: str = "",
    tracker=None,
) -> dict:
    """Evaluate the best trial on the test split and write best_model.pt and summary.json.

    With a tracker, the summary names the study's MLflow parent run (`mlflow_run_id`), and
    the result goes to that run once summary.json is on disk.
    """
    run = plan.run
    counts = studylib.counts(study)
    best = studylib.best_trial(study)
    if best is None:
        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        reason, _ = studylib.most_common_failure(failed)
        raise SearchStopped(
            f"no trial completed ({counts['pruned']} pruned, {counts['failed']} failed"
            + (f"; most common failure: {reason}" if reason else "")
            + ")"
        )
    model, ckpt = best_model(plan, best, device)
    data = plan.data.to(device)
    _, test_acc = train.evaluate(model, data.x_test, data.y_test, run.trainer.eval_batch_size)
    metric = plan.data.spec.metric
    ckpt["test"] = {metric: test_acc}
    study_dir = run.study_dir
    outputs.save_checkpoint(study_dir / "best_model.pt", ckpt)
    outputs.write_json(study_dir / "best_params.json", ckpt["params"])
    summary = {
        "study": run.study.name,
        "best_trial": best.number,
        "family": plan.space.family,
        "params": ckpt["params"],
        "val": {metric: best.value},
        "test": {metric: test_acc},
        "counts": {k: counts[k] for k in ("complete", "pruned", "failed")},
        "n_trials": run.study.n_trials,
        "wall_seconds": round(wall, 2),
        "storage": config.mask_url(run.study.storage) or str(study_dir / "study.journal"),
        "weights": str(study_dir / "best_model.pt"),
        "command": command,
    }
    if tracker is not None:
        summary["mlflow_run_id"] = tracker.parent_id
    outputs.write_json(study_dir / "summary.json", summary)
    if tracker is not None:
        tracker.finish_study(plan, study, summary, model, ckpt)
    return summary


def best_model(
    plan: Plan, best: optuna.trial.FrozenTrial, device: torch.device
) -> tuple[torch.nn.Module, dict]:
    """The best trial's trained model: from its kept weights, or retrained from its seed."""
    path = outputs.trial_checkpoint(plan.run.study_dir, best.number)
    params = plan.space.complete(best.params)
    if path.exists():
        ckpt = outputs.load_checkpoint(path)
        model = models.create(ckpt["family"], ckpt["params"], plan.data.spec)
        model.load_state_dict(ckpt["state_dict"])
        return model.to(device), ckpt
    # Weights live where the trial ran (another host, or deleted): retrain, deterministically.
    run = plan.run
    seed = run.seed + best.number
    train.seed_everything(seed)
    model = models.create(plan.space.family, params, plan.data.spec).to(device)
    recipe = train.Recipe.from_params(params, run.trainer.max_epochs, seed)
    result = train.fit(
        model, plan.data.to(device), recipe, eval_batch_size=run.trainer.eval_batch_size
    )
    ckpt = checkpoint(plan, best.number, params, recipe, result.best_state, result.best_value)
    outputs.save_checkpoint(path, ckpt)
    return model, ckpt


def print_summary(summary: dict) -> None:
    metric = next(iter(summary["val"]))
    params = "  ".join(f"{k}={_fmt(v)}" for k, v in summary["params"].items())
    c = summary["counts"]
    print(
        f"\nbest trial {summary['best_trial']} of study {summary['study']} "
        f"({c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed):\n"
        f"  val {metric}  {summary['val'][metric]:.4f}\n"
        f"  test {metric} {summary['test'][metric]:.4f}\n"
        f"  params: {params}\n"
        f"  outputs: {Path(summary['weights']).parent}/ (summary.json, best_model.pt, best_params.json)",
        file=sys.stdout,
        flush=True,
    )


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
