"""The orchestrator: validate everything, open the study, run trials, report the best.

    prepare(run)      -> Plan: space, data, storage settings (all user input checked here)
    search(run)       -> runs trials until the budget is met, writes summary.json
    objective(trial)  -> params -> model -> train.fit, reporting each epoch to the trial

Trials are created through `study.optimize(n_trials=1)` one at a time so that the budget,
the failure guard and Ctrl-C are checked between trials, and Optuna's heartbeat (RDB) runs.
"""

from __future__ import annotations

import functools
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

from automodel import config, devices, export, metrics, models, outputs, spaces, train, workers
from automodel import data as datalib
from automodel import study as studylib
from automodel.config import ConfigError, RunConfig

# How often a worker with nothing to start looks again at trials other workers are finishing.
WAIT_SECONDS = 1.0


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
    runs_dir = Path(run.runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ConfigError(f"runs_dir {run.runs_dir!r} is a file, not a folder")
    space_path = config.resolve_space_path(run.search_space)
    try:
        space = spaces.load(space_path)
        data = datalib.load(run.data, run.seed)
        # A family that cannot fit the data fails here (with the space's fixed values).
        fixed = {e.name: e.value for e in space.entries if e.type == "fixed" and not e.when}
        models.create(space.family, fixed, data.spec)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check_batch_size(space, space_path, len(data.x_train), run.data.name)
    _check_task(space, space_path, data.spec)
    return Plan(run, space, space_path, data)


# Params that only one task reads: a space that searches them for the other task is refused.
_TASK_PARAMS = {"loss": "regression", "label_smoothing": "classification"}


def _check_task(space: spaces.Space, path: Path, spec: datalib.DataSpec) -> None:
    for e in space.entries:
        task = _TASK_PARAMS.get(e.name)
        if task is not None and task != spec.task:
            raise ConfigError(
                f"{path}: params.{e.name} applies to {task} only; data {spec.name} is "
                f"{spec.task} (remove {e.name} from the space)"
            )
        if e.name == "augment" and len(spec.input_shape) != 3 and e.value != "none":
            raise ConfigError(
                f"{path}: params.augment applies to images only; data {spec.name} has input "
                f"shape {tuple(spec.input_shape)} (remove augment from the space)"
            )


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


def open_study(plan: Plan, seed_offset: int = 0, must_exist: bool = False) -> optuna.Study:
    """Create the study or attach to it; refuse one created with another space or data.

    Each worker passes its own `seed_offset`, so concurrent samplers do not propose alike.
    """
    run = plan.run
    try:
        sampler = studylib.make_sampler(run.study.sampler, run.seed + seed_offset)
        pruner = studylib.make_pruner(run.study.pruner, run.trainer.max_epochs)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    missing = ConfigError(
        f"no study named {run.study.name!r} in {_storage_label(run)}; start it with "
        "python -m automodel search (same settings), then add workers"
    )
    if must_exist and run.study.storage is None and not (run.study_dir / "study.journal").exists():
        raise missing  # before opening the journal, which would create it
    storage = open_study_storage(run)
    identity = {"space": plan.space.source, "data": config.as_dict(run)["data"]}
    try:
        existing = optuna.load_study(study_name=run.study.name, storage=storage).user_attrs
    except KeyError:  # a new study
        if must_exist:
            raise missing from None
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
        direction=plan.data.spec.direction,
        load_if_exists=True,
    )
    for key, value in identity.items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    return study


def _storage_label(run: RunConfig) -> str:
    return config.mask_url(run.study.storage) or str(run.study_dir / "study.journal")


def open_study_storage(run: RunConfig) -> optuna.storages.BaseStorage:
    """The study storage of `run`; a storage that cannot be opened is a one-line ConfigError."""
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

    def __init__(self, plan: Plan, device: torch.device, tracker=None, deadline=math.inf):
        self.plan = plan
        self.device = device
        self.data = plan.data.to(device)
        self.tracker = tracker
        self.worker = studylib.worker_id()
        # study.timeout is a wall-clock budget: a trial still training then stops at the end
        # of its epoch (pruned) instead of running on for minutes past it.
        self.deadline = deadline

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(studylib.WORKER_ATTR, self.worker)
        if self._surplus(trial):
            trial.set_user_attr(studylib.SURPLUS_ATTR, True)
            raise studylib.Surplus(
                f"not run: other workers had already started the {self.plan.run.study.n_trials} "
                "trials of the budget"
            )
        try:
            return self._train(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr(studylib.FAIL_ATTR, _reason(err))
            raise

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Did concurrent workers fill the budget between our check and this trial's creation?

        Trials are numbered in creation order, so the budget belongs to the lowest numbers:
        this one is surplus when n_trials earlier trials are finished or still running.
        """
        ahead = trial.study.get_trials(
            deepcopy=False, states=(*studylib.FINISHED, TrialState.RUNNING)
        )
        return sum(1 for t in ahead if t.number < trial.number) >= self.plan.run.study.n_trials

    def _train(self, trial: optuna.Trial) -> float:
        run, space = self.plan.run, self.plan.space
        params = space.sample(trial)
        seed = run.seed + trial.number
        train.seed_everything(seed)
        model = models.create(space.family, params, self.data.spec).to(self.device)
        recipe = train.Recipe.from_params(params, run.trainer.max_epochs, seed)
        trial.set_user_attr("n_parameters", models.n_parameters(model))
        trial.set_user_attr("device", str(self.device))
        trial.set_user_attr(studylib.METRIC_ATTR, self.data.spec.metric)
        if self.tracker is not None:
            self.tracker.trial_started(
                trial.number, params, str(self.device), models.n_parameters(model)
            )

        def on_epoch_end(epoch: train.Epoch) -> None:
            trial.report(epoch.value, epoch.epoch)
            if self.tracker is not None:
                self.tracker.epoch(trial.number, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch.epoch}")
            if time.time() > self.deadline and epoch.epoch < recipe.epochs:
                raise optuna.TrialPruned(f"stopped after epoch {epoch.epoch}: study.timeout")

        result = train.fit(
            model,
            self.data,
            recipe,
            eval_batch_size=run.trainer.eval_batch_size,
            on_epoch_end=on_epoch_end,
            compile=run.trainer.compile,
        )
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr(studylib.VAL_LOSS_ATTR, result.history[result.best_epoch - 1].val_loss)
        self._keep_weights(trial, params, recipe, result)
        return result.best_value

    def _keep_weights(self, trial, params, recipe, result: train.FitResult) -> None:
        """Save this trial's weights if it ranks in the top k, and drop those pushed out."""
        study_dir, k = self.plan.run.study_dir, self.plan.run.study.keep_top_k
        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        sign = studylib.sign_of(trial.study)
        loss = result.history[result.best_epoch - 1].val_loss
        mine = studylib.rank_key(result.best_value, loss, trial.number, sign)
        keys = {
            t.number: studylib.rank_key(
                t.value, t.user_attrs.get(studylib.VAL_LOSS_ATTR), t.number, sign
            )
            for t in done
        }
        ahead = sum(1 for key in keys.values() if key < mine)
        if ahead < k:
            ckpt = checkpoint(
                self.plan, trial.number, params, recipe, result.best_state, result.best_metrics
            )
            outputs.save_checkpoint(outputs.trial_checkpoint(study_dir, trial.number), ckpt)
        ranked = sorted([*keys.values(), mine])
        keep = {key[-1] for key in ranked[:k]}
        outputs.prune_trials(study_dir, keep, {t.number for t in done})


def checkpoint(
    plan: Plan, number: int, params: dict, recipe: train.Recipe, state: dict, val: dict
) -> dict:
    """What a trial leaves: weights plus everything to rebuild, retrain and export it."""
    return {
        "family": plan.space.family,
        "params": params,
        "spec": plan.data.spec.to_dict(),
        "recipe": recipe.to_dict(),
        "trial": number,
        "val": dict(val),
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
    }


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:500] if text else type(err).__name__


class Progress:
    """One line per finished trial: counts, best so far, time used and left."""

    def __init__(self, run: RunConfig, start: float, metric: str = "accuracy"):
        self.run = run
        self.start = start
        self.metric = metric

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.run.quiet or studylib.is_surplus(trial):
            return
        c = studylib.counts(study)
        best = studylib.best_trial(study)
        done = c["complete"] + c["pruned"]
        elapsed = time.monotonic() - self.start
        if trial.state == TrialState.COMPLETE:
            what = f"complete  val_{self.metric}={trial.value:.4f}"
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
    plan: Plan,
    study: optuna.Study,
    device: torch.device,
    tracker=None,
    start: float | None = None,
    deadline: float = math.inf,
) -> None:
    """Ask the shared study for trials until the budget, `deadline` or the failure guard says stop.

    Several processes (and hosts) may run this on one study at once: each checks the shared
    counts before a trial, and `Objective` drops a trial that another worker's made surplus.
    `deadline` is wall-clock (`time.time()`) so that all workers share it.
    """
    run = plan.run
    start = time.monotonic() if start is None else start
    objective = Objective(plan, device, tracker, deadline)
    callbacks = [Progress(run, start, plan.data.spec.metric)]
    if tracker is not None:
        callbacks.append(lambda study, trial: tracker.trial_finished(trial))
    while time.time() < deadline:
        _fail_stale(study)
        c = studylib.counts(study)
        done = c["complete"] + c["pruned"]
        if done >= run.study.n_trials:
            break
        if done + c["running"] >= run.study.n_trials:
            # Other workers hold the last places; wait in case one of them fails or dies.
            time.sleep(WAIT_SECONDS)
            continue
        _failure_guard(study, run)
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
    _failure_guard(study, run)


def _fail_stale(study: optuna.Study) -> None:
    """Free the places of trials whose worker died: on this host by pid, elsewhere by heartbeat."""
    studylib.fail_dead_local_trials(study, include_unowned=False)
    if studylib.has_heartbeat(study):
        optuna.storages.fail_stale_trials(study)


def _failure_guard(study: optuna.Study, run: RunConfig) -> None:
    window = run.study.failure_window
    ended = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and not studylib.is_surplus(t)
    ]
    recent = sorted(ended, key=lambda t: t.number)[-window:]
    failed = [t for t in recent if t.state == TrialState.FAIL]
    if len(failed) > run.study.max_failure_fraction * window:
        reason, n = studylib.most_common_failure(failed)
        raise SearchStopped(
            f"stopping: {len(failed)} of the last {len(recent)} trials failed "
            f"(most common, {n}x: {reason}); fix the cause or raise study.max_failure_fraction"
        )


def search(run: RunConfig, command: str = "", attach: bool = False) -> dict:
    """Run (or resume) a search to its budget and write the study's outputs. Returns the summary.

    With `attach`, the study must already exist (the `worker` verb: another host joining).
    """
    start = time.monotonic()
    deadline = time.time() + run.study.timeout if run.study.timeout else math.inf
    plan = prepare(run)
    if run.tracking.enabled:  # a store that cannot work is refused before anything is written
        from automodel import tracking

        tracking.check_store(tracking.store(run))
    for warning in plan.data.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    try:
        slots = devices.plan(run.devices, run.workers, run.trials_per_device, run.trainer.threads)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    quiet_optuna()
    study = open_study(plan, must_exist=attach)
    write_run_files(plan)
    stale = studylib.fail_dead_local_trials(study, include_unowned=run.study.storage is None)
    if stale and not run.quiet:
        print(f"marked {len(stale)} trial(s) left RUNNING by a dead process as failed: {stale}")
    if not study.trials:
        for params in plan.space.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
    tracker = _tracker(plan, study)
    if not run.quiet:
        _banner(plan, study, slots)
    # The search process works the first slot itself: no wait for a worker to import torch.
    here = functools.partial(
        run_slot, plan, slots[0], 0, deadline, start, pinned=False, tracker=tracker
    )
    try:
        if len(slots) == 1:
            here()
        else:
            for problem in workers.run_parallel(plan, slots, deadline, start, here):
                print(f"warning: {problem}", file=sys.stderr, flush=True)
            _failure_guard(study, run)
        device = _device(slots[0], pinned=False)
        summary = finish(plan, study, device, time.monotonic() - start, command, tracker)
    except BaseException as err:
        if tracker is not None:
            tracker.close(err)
        raise
    if tracker is not None:
        tracker.close()
    return summary


def _tracker(plan: Plan, study: optuna.Study):
    """The study's MLflow tracker, or None with tracking.enabled=false (mlflow never imported).

    It opens the store in the background: the first trial starts at once (issue 7).
    """
    run = plan.run
    if not run.tracking.enabled:
        return None
    from automodel import tracking

    tracker = tracking.Tracker(run)
    tracker.open(plan, study, on_open=None if run.quiet else _announce)
    return tracker


def _announce(tracker) -> None:
    # From the tracker's thread, between progress lines: one write, so lines stay whole.
    sys.stdout.write(
        f"mlflow: run {tracker.parent_id} in experiment {tracker.run.tracking.experiment} at "
        f"{tracker.store.shown} (browse: python -m automodel ui)\n"
    )
    sys.stdout.flush()


def run_slot(
    plan: Plan,
    slot: devices.Slot,
    index: int,
    deadline: float,
    start: float | None = None,
    pinned: bool = True,
    tracker=None,
) -> None:
    """Run trials on one slot: in this process, or in a worker process pinned to the slot.

    A worker process logs to MLflow through a tracker of its own, attached to the parent run
    that the search process opened.
    """
    quiet_optuna()
    device = _device(slot, pinned)
    study = open_study(plan, seed_offset=index, must_exist=True)
    if tracker is not None or not plan.run.tracking.enabled:
        run_trials(plan, study, device, tracker, start, deadline)
        return
    from automodel import tracking

    tracker = tracking.Tracker(plan.run)
    tracker.open()  # attaches in the background, like the search process's start_study
    try:
        run_trials(plan, study, device, tracker, start, deadline)
    except BaseException as err:
        tracker.close(err)
        raise
    tracker.close()


def _banner(plan: Plan, study: optuna.Study, slots: list[devices.Slot]) -> None:
    run, data = plan.run, plan.data
    c = studylib.counts(study)
    where = (
        slots[0].label
        if len(slots) == 1
        else f"{len(slots)} workers on {', '.join(sorted({s.label for s in slots}))}"
    )
    print(
        f"study {run.study.name}: {c['complete'] + c['pruned']} of {run.study.n_trials} trials "
        f"done, family {plan.space.family}, data {run.data.name} ({data.spec.task}, "
        f"{len(data.x_train)} train / {len(data.x_val)} val / {len(data.x_test)} test), "
        f"{where} ({slots[0].threads} thread{'s' if slots[0].threads > 1 else ''} each), "
        f"outputs in {run.study_dir}/",
        flush=True,
    )


def _device(slot: devices.Slot, pinned: bool) -> torch.device:
    """A pinned worker sees only its GPU (CUDA_VISIBLE_DEVICES), always as cuda:0."""
    torch.set_num_threads(slot.threads)
    if slot.gpu is None:
        return torch.device("cpu")
    return torch.device("cuda:0" if pinned else f"cuda:{slot.gpu}")


def quiet_optuna() -> None:
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
    test_outputs = train.predict_logits(model, data.x_test, run.trainer.eval_batch_size)
    ckpt["test"] = metrics.compute(data.spec.task, test_outputs, data.y_test, data.spec.target_std)
    study_dir = run.study_dir
    outputs.save_checkpoint(study_dir / "best_model.pt", ckpt)
    outputs.write_json(study_dir / "best_params.json", ckpt["params"])
    summary = {
        "study": run.study.name,
        "best_trial": best.number,
        "family": plan.space.family,
        "params": ckpt["params"],
        "val": ckpt["val"],
        "test": ckpt["test"],
        "counts": {k: counts[k] for k in ("complete", "pruned", "failed")},
        "n_trials": run.study.n_trials,
        "wall_seconds": round(wall, 2),
        "storage": _storage_label(run),
        "weights": str(study_dir / "best_model.pt"),
        "command": command,
    }
    if tracker is not None:
        summary["mlflow_run_id"] = tracker.settle()  # before the export: its provenance names it
    summary["export"] = _export(study_dir, ckpt, summary)
    outputs.write_json(study_dir / "summary.json", summary)
    if tracker is not None:
        tracker.finish_study(plan, study, summary, model, test_outputs)
        if summary["export"]:
            tracker.log_export(Path(summary["export"]))
    return summary


def test_metrics(model: torch.nn.Module, data: datalib.Dataset, batch_size: int) -> dict:
    """Every metric of the task on the test split (never used for selection)."""
    test = train.evaluate(model, data.x_test, data.y_test, data.spec, batch_size)
    test.pop("loss")
    return test


def _export(study_dir: Path, ckpt: dict, summary: dict) -> str | None:
    """Write export/ (best_model.py and its weights). A model the exporter cannot write is
    reported (stderr and summary["export_error"]) rather than failing the finished search."""
    prov = export.provenance(summary["study"], summary["command"], summary.get("mlflow_run_id"))
    try:
        return str(export.write(study_dir, ckpt, prov))
    except export.ExportError as err:
        print(f"warning: the best model was not exported: {err}", file=sys.stderr)
        summary["export_error"] = str(err)
        return None


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
    ckpt = checkpoint(plan, best.number, params, recipe, result.best_state, result.best_metrics)
    outputs.save_checkpoint(path, ckpt)
    return model, ckpt


def print_summary(summary: dict) -> None:
    params = "  ".join(f"{k}={_fmt(v)}" for k, v in summary["params"].items())
    c = summary["counts"]
    val = "  ".join(f"{k} {v:.4f}" for k, v in summary["val"].items())
    test = "  ".join(f"{k} {v:.4f}" for k, v in summary["test"].items())
    print(
        f"\nbest trial {summary['best_trial']} of study {summary['study']} "
        f"({c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed):\n"
        f"  val  {val}\n"
        f"  test {test}\n"
        f"  params: {params}\n"
        f"  outputs: {Path(summary['weights']).parent}/ (summary.json, best_model.pt, best_params.json)"
        + (f"\n  export: {summary['export']}/best_model.py" if summary.get("export") else ""),
        file=sys.stdout,
        flush=True,
    )


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
