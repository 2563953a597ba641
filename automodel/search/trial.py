"""Trials: one candidate trained per Optuna trial, the top-k weights kept, a loop to the budget.

    Objective(plan, device)      params -> model -> train.fit, reporting each epoch to the trial
    run_trials(plan, study, ...) ask the shared study for trials until the budget says stop
    run_slot(plan, slot, ...)    run_trials on one device slot: in this process or a worker's
    trained(plan, trial, device) a finished trial's Checkpoint and model (kept, or retrained)

Trials are created through `study.optimize(n_trials=1)` one at a time so that the budget,
the failure guard and Ctrl-C are checked between trials, and Optuna's heartbeat (RDB) runs.
"""

from __future__ import annotations

import contextlib
import math
import time

import optuna
import torch
from optuna.trial import TrialState

from automodel import devices, models, outputs, train
from automodel.checkpoint import Checkpoint, CheckpointError
from automodel.config import RunConfig
from automodel.errors import reason
from automodel.search import converge, folds
from automodel.search.console import Progress, warn
from automodel.search.peers import fail_stale, run_one, say_waiting
from automodel.search.plan import Plan, open_study
from automodel.study import (
    FAIL_ATTR,
    FINISHED,
    METRIC_ATTR,
    SURPLUS_ATTR,
    TRAINED_WITH_ATTR,
    VAL_LOSS_ATTR,
    WORKER_ATTR,
    Surplus,
    counts,
    is_surplus,
    lease,
    most_common_failure,
    quiet_optuna,
    rank_key,
    sign_of,
    worker_id,
)

# How often a worker with nothing to start looks again at trials other workers are finishing.
WAIT_SECONDS = 1.0


class SearchStopped(RuntimeError):
    """The search gave up (too many failures, no trial completed); exit code 1."""


def candidate(
    plan: Plan,
    number: int,
    params: dict,
    device: torch.device,
    seed: int | None = None,
    epochs: int | None = None,
) -> tuple[torch.nn.Module, train.Recipe]:
    """Trial `number`'s untrained model and its recipe, seeded by the trial's number (or the
    `seed` it recorded): training them again gives the same weights (on the same device type
    and thread count)."""
    seed = plan.cfg.seed + number if seed is None else seed
    epochs = plan.cfg.trainer.max_epochs if epochs is None else epochs
    train.seed_everything(seed)
    model = models.create(plan.space.family, params, plan.data.spec).to(device)
    return model, train.Recipe.from_params(params, epochs, seed)


def trained_with(plan: Plan, number: int, device: torch.device) -> dict:
    """What retrains trial `number` to the same weights, recorded on the trial: a later
    command line may say other things (a resumed search's threads, the export verb's)."""
    t = plan.cfg.trainer
    return {
        "seed": plan.cfg.seed + number,
        "epochs": t.max_epochs,
        "eval_batch_size": t.eval_batch_size,
        "compile": t.compile,
        "threads": torch.get_num_threads(),  # a thread count can change the last bits
        "device": device.type,
    }


class Objective:
    """Trains one candidate per call; holds what every trial of this worker shares."""

    def __init__(self, plan: Plan, device: torch.device, tracker=None, deadline=math.inf):
        self.plan = plan
        self.device = device
        self.data = plan.data.to(device)
        self.folds = None if plan.folds is None else plan.folds.to(device)
        self.tracker = tracker
        self.worker = worker_id()
        self.trial_id: int | None = None  # the trial this worker runs, or ran last
        # study.timeout is a wall-clock budget: a trial still training then stops at the end
        # of its epoch (pruned) instead of running on for minutes past it.
        self.deadline = deadline

    def __call__(self, trial: optuna.Trial) -> float:
        self.trial_id = trial._trial_id
        trial.set_user_attr(WORKER_ATTR, self.worker)
        if self._surplus(trial):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise Surplus(
                f"not run: other workers had already started the {self.plan.cfg.study.n_trials} "
                "trials of the budget"
            )
        try:
            return self._train(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr(FAIL_ATTR, reason(err))
            raise

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Did concurrent workers fill the budget between our check and this trial's creation?

        Trials are numbered in creation order, so the budget belongs to the lowest numbers:
        this one is surplus when n_trials earlier trials are finished or still running.
        """
        ahead = trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        return sum(1 for t in ahead if t.number < trial.number) >= self.plan.cfg.study.n_trials

    def _train(self, trial: optuna.Trial) -> float:
        cfg = self.plan.cfg
        params = self.plan.space.sample(trial)
        if self.folds is not None:
            return folds.train_trial(self, trial, params)
        model, recipe = candidate(self.plan, trial.number, params, self.device)
        n_parameters = models.n_parameters(model)
        trial.set_user_attr("n_parameters", n_parameters)
        trial.set_user_attr("device", str(self.device))
        trial.set_user_attr(TRAINED_WITH_ATTR, trained_with(self.plan, trial.number, self.device))
        trial.set_user_attr(METRIC_ATTR, self.data.spec.metric)
        if self.tracker is not None:
            self.tracker.trial_started(trial.number, params, str(self.device), n_parameters)
        result = train.fit(
            model,
            self.data,
            recipe,
            eval_batch_size=cfg.trainer.eval_batch_size,
            on_epoch_end=self.reporter(trial, recipe.epochs),
            compile=cfg.trainer.compile,
        )
        loss = result.history[result.best_epoch - 1].val_loss
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr(VAL_LOSS_ATTR, loss)
        self.keep_weights(
            trial,
            result.best_value,
            loss,
            lambda: _checkpoint(self.plan, trial.number, params, recipe, result, model, self.data),
        )
        return result.best_value

    def reporter(self, trial: optuna.Trial, epochs: int):
        """The trainer's epoch callback: report to the trial (and MLflow), prune, stop at the
        deadline."""

        def on_epoch_end(epoch: train.Epoch) -> None:
            trial.report(epoch.value, epoch.epoch)
            if self.tracker is not None:
                self.tracker.epoch(trial.number, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch.epoch}")
            if time.time() > self.deadline and epoch.epoch < epochs:
                raise optuna.TrialPruned(f"stopped after epoch {epoch.epoch}: study.timeout")

        return on_epoch_end

    def keep_weights(self, trial, value: float, loss: float, checkpoint) -> None:
        """Save this trial's weights (`checkpoint()`, built only then) if its value and
        validation loss rank in the top k, and drop those pushed out."""
        study_dir, k = self.plan.cfg.study_dir, self.plan.cfg.study.keep_top_k
        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        sign = sign_of(trial.study)
        mine = rank_key(value, loss, trial.number, sign)
        keys = {
            t.number: rank_key(t.value, t.user_attrs.get(VAL_LOSS_ATTR), t.number, sign)
            for t in done
        }
        if sum(1 for key in keys.values() if key < mine) < k:
            checkpoint().save(outputs.trial_checkpoint(study_dir, trial.number))
        ranked = sorted([*keys.values(), mine])
        keep = {key[-1] for key in ranked[:k]}
        outputs.prune_trials(study_dir, keep, {t.number for t in done})


def trained(
    plan: Plan, trial: optuna.trial.FrozenTrial, device: torch.device
) -> tuple[Checkpoint, torch.nn.Module]:
    """A complete trial's checkpoint and its trained model on `device`, built once: from its
    kept weights, or retrained (and then kept) when there are none or they cannot be read,
    as the trial recorded it trained (seed, epochs, threads, device type), not as `plan` says."""
    path = outputs.trial_checkpoint(plan.cfg.study_dir, trial.number)
    try:
        ckpt = Checkpoint.load(path)
        return ckpt, ckpt.build_model(device)
    except FileNotFoundError:  # weights live where the trial ran (another host), or were pruned
        pass
    except CheckpointError as err:
        warn(f"{err}; retraining trial {trial.number} from its seed")
    if plan.folds is not None:
        ckpt, model = folds.retrain(plan, trial, device)
        ckpt.save(path)
        return ckpt, model
    params = plan.space.complete(trial.params)
    rec = trial.user_attrs.get(TRAINED_WITH_ATTR) or {}  # none on trials of older versions
    on = _device_of(rec, device, trial.number)
    with _threads(rec.get("threads")):
        model, recipe = candidate(
            plan, trial.number, params, on, rec.get("seed"), rec.get("epochs")
        )
        result = train.fit(
            model,
            plan.data.to(on),
            recipe,
            eval_batch_size=rec.get("eval_batch_size", plan.cfg.trainer.eval_batch_size),
            compile=rec.get("compile", plan.cfg.trainer.compile),
        )
    ckpt = _checkpoint(plan, trial.number, params, recipe, result, model, plan.data.to(on))
    ckpt.save(path)
    return ckpt, model.to(device)


def _device_of(rec: dict, device: torch.device, number: int) -> torch.device:
    """The device type trial `number` trained on, where this process has one."""
    kind = rec.get("device", device.type)
    if kind == device.type:
        return device
    if kind == "cpu" or (kind == "cuda" and torch.cuda.is_available()):
        return torch.device(kind)
    warn(
        f"trial {number} trained on {kind}, retraining it on {device.type}: its metrics may "
        "differ in the last digits"
    )
    return device


@contextlib.contextmanager
def _threads(n: int | None):
    saved = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _checkpoint(plan: Plan, number, params, recipe, result, model, dataset) -> Checkpoint:
    """A trial's checkpoint with one validation split, with the model's outputs on the
    validation rows and their targets (`extra`: what ensemble selection reads)."""
    family, spec = plan.space.family, plan.data.spec
    ckpt = Checkpoint.from_fit(family, params, spec, recipe, number, result)
    val = train.predict_logits(model, dataset.x_val, plan.cfg.trainer.eval_batch_size)
    ckpt.extra.update(val_outputs=val.float().cpu(), val_targets=dataset.y_val.cpu())
    return ckpt


def run_trials(
    plan: Plan,
    study: optuna.Study,
    device: torch.device,
    tracker=None,
    start: float | None = None,
    deadline: float = math.inf,
) -> None:
    """Ask the shared study for trials until the budget, `deadline`, convergence (converge.py)
    or the failure guard says stop.

    Several processes (and hosts) may run this on one study at once: each checks the shared
    counts before a trial, and `Objective` drops a trial that another worker's made surplus.
    `deadline` is wall-clock (`time.time()`) so that all workers share it.
    """
    cfg = plan.cfg
    start = time.monotonic() if start is None else start
    objective = Objective(plan, device, tracker, deadline)
    callbacks = [Progress(cfg, start, plan.data.spec.metric)]
    if tracker is not None:
        callbacks.append(lambda study, trial: tracker.trial_finished(trial))
    leases = outputs.leases(cfg.study_dir)
    waited = None  # since when this worker waits on other processes' trials
    with lease(leases):  # while it lives, this process's trials are not failed as dead
        while time.time() < deadline:
            fail_stale(study, leases)
            c = counts(study)
            done = c["complete"] + c["pruned"]
            if done >= cfg.study.n_trials or converge.should_stop(
                study, cfg, plan.space, plan.data.spec.metric
            ):
                break
            if done + c["running"] >= cfg.study.n_trials:
                # Other workers hold the last places; wait in case one of them fails or dies.
                waited = say_waiting(study, waited)
                time.sleep(WAIT_SECONDS)
                continue
            waited = None
            failure_guard(study, cfg)
            run_one(study, objective, callbacks)
    failure_guard(study, cfg)


def failure_guard(study: optuna.Study, cfg: RunConfig) -> None:
    """Raise SearchStopped when too many of the latest finished trials failed."""
    window = cfg.study.failure_window
    ended = [
        t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not is_surplus(t)
    ]
    recent = sorted(ended, key=lambda t: t.number)[-window:]
    failed = [t for t in recent if t.state == TrialState.FAIL]
    if len(failed) > cfg.study.max_failure_fraction * window:
        cause, n = most_common_failure(failed)
        raise SearchStopped(
            f"stopping: {len(failed)} of the last {len(recent)} trials failed "
            f"(most common, {n}x: {cause}); fix the cause or raise study.max_failure_fraction"
        )


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
    device = devices.bind(slot, pinned)
    study = open_study(plan, seed_offset=index, must_exist=True)
    if tracker is not None or not plan.cfg.tracking.enabled:
        run_trials(plan, study, device, tracker, start, deadline)
        return
    from automodel import tracking

    tracker = tracking.Tracker(plan.cfg)
    tracker.open()  # attaches in the background, like the search process's start_study
    try:
        run_trials(plan, study, device, tracker, start, deadline)
    except BaseException as err:
        tracker.close(err)
        raise
    tracker.close()
