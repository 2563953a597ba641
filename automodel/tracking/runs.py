"""A child run per trial: what the trial's thread queues, and what the writer makes of it.

    start_op(parent, number, ...)   ("start", ...)    open the trial's run: params, device, size
    epoch_op(number, epoch)         ("metrics", ...)  one epoch's points at step = epoch
    end_op(parent, trial)           ("end", ...)      Optuna's verdict: complete, pruned, failed
    Sink(parent)                    the MLflow writes the writer thread makes of those ops
    end_stale(parent, study)        end the runs a killed process left RUNNING

The trial's thread only builds ops (cheap, no I/O); `writer.Writer` sends them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from automodel.study import FAIL_ATTR, METRIC_ATTR, worker_id
from automodel.tracking.records import (
    PARENT_TAG,
    REASON_TAG,
    ROLE_TAG,
    STATE_TAG,
    STORAGE_TAG,
    STUDY_TAG,
    TAG_LIMIT,
    TRIAL_TAG,
    end_run,
    log_batch,
    mask,
    ms,
    now_ms,
    text,
)

if TYPE_CHECKING:
    from automodel.tracking.parent import ParentRun
    from automodel.train import Epoch

# Optuna's final state -> (our state tag, MLflow run status)
_ENDINGS = {
    TrialState.COMPLETE: ("complete", "FINISHED"),
    TrialState.PRUNED: ("pruned", "FINISHED"),
    TrialState.FAIL: ("failed", "FAILED"),
}


def start_op(parent: ParentRun, number: int, params: dict, device: str, n_parameters: int) -> tuple:
    """The op that opens trial `number`'s run with every param and its parameter count."""
    now = now_ms()
    spec = _run_spec(number, now, params, _trial_tags(parent, number, device))
    return ("start", number, spec, [("n_parameters", float(n_parameters), now, 0)])


def epoch_op(number: int, result: Epoch) -> tuple:
    """The op that logs one epoch's metrics at step = epoch."""
    now, step = now_ms(), result.epoch
    metrics = [
        *((f"val_{name}", value, now, step) for name, value in result.val.items()),
        ("val_loss", result.val_loss, now, step),
        ("train_loss", result.train_loss, now, step),
        ("lr", result.lr, now, step),
        ("epoch_seconds", result.seconds, now, step),
    ]
    return ("metrics", number, metrics)


def end_op(parent: ParentRun, trial: optuna.trial.FrozenTrial) -> tuple:
    """The op that ends the trial's run (the writer opens it first if it never was)."""
    start_ms = ms(trial.datetime_start) or now_ms()
    device = str(trial.user_attrs.get("device", ""))
    tags = _trial_tags(parent, trial.number, device)
    return (
        "end",
        trial.number,
        _run_spec(trial.number, start_ms, trial.params, tags),
        ending(trial),
    )


def _trial_tags(parent: ParentRun, number: int, device: str) -> dict:
    tags = {  # and PARENT_TAG: the sink adds it when it creates the run
        ROLE_TAG: "trial",
        STUDY_TAG: parent.name,
        STORAGE_TAG: parent.storage,
        TRIAL_TAG: str(number),
        STATE_TAG: "running",
        "automodel.worker": worker_id(),
    }
    if device:
        tags["automodel.device"] = device
    return tags


def _run_spec(number: int, start_ms: int, params: dict, tags: dict) -> dict:
    return {  # the sink adds the experiment: it may not be known yet
        "run_name": f"trial-{number}",
        "start_time": start_ms,
        "params": {k: text(v) for k, v in params.items()},
        "tags": tags,
    }


def ending(trial: optuna.trial.FrozenTrial) -> tuple[str, int | None, dict, list]:
    """(MLflow status, end time, tags, metrics) for a trial Optuna has finished."""
    state, status = _ENDINGS.get(trial.state, ("failed", "KILLED"))
    end_ms = ms(trial.datetime_complete) or now_ms()
    tags = {STATE_TAG: state}
    metrics = []
    if trial.state == TrialState.FAIL:
        why = str(trial.user_attrs.get(FAIL_ATTR, "unknown error"))
        tags[REASON_TAG] = mask(why)[:TAG_LIMIT]
    if trial.state == TrialState.PRUNED and trial.last_step is not None:
        metrics.append(("pruned_at_epoch", float(trial.last_step), end_ms, 0))
    if trial.value is not None:
        metric = trial.user_attrs.get(METRIC_ATTR, "value")
        metrics.append((f"best_val_{metric}", float(trial.value), end_ms, 0))
    if "best_epoch" in trial.user_attrs:
        metrics.append(("best_epoch", float(trial.user_attrs["best_epoch"]), end_ms, 0))
    if trial.duration is not None:
        metrics.append(("duration_seconds", trial.duration.total_seconds(), end_ms, 0))
    return status, end_ms, tags, metrics


class Sink:
    """The MLflow writes the writer thread makes, one child run at a time.

    A child run's experiment and parent are filled in when it is created: trials queue their
    runs before the store is open, and `reconcile` may change the parent meanwhile.
    """

    def __init__(self, parent: ParentRun):
        self.parent = parent

    def create(self, spec: dict) -> str:
        p = self.parent
        tags = {PARENT_TAG: p.attach(), **spec["tags"]}
        run = p.client.create_run(p.experiment_id, spec["start_time"], tags, spec["run_name"])
        return run.info.run_id

    def log(self, run_id: str, metrics: list, params: dict) -> None:
        from mlflow.entities import Metric, Param

        log_batch(
            self.parent.client,
            run_id,
            [Metric(*m) for m in metrics],
            [Param(k, v) for k, v in params.items()],
        )

    def end(self, run_id: str, status: str, end_ms: int | None, tags: dict, metrics: list):
        end_run(self.parent.client, run_id, status, end_ms, tags, metrics)

    def abandon(self, run_id: str, status: str, why: str) -> None:
        tags = {STATE_TAG: "failed", REASON_TAG: mask(why)[:TAG_LIMIT]}
        end_run(self.parent.client, run_id, status, None, tags, [])


def end_stale(parent: ParentRun, study: optuna.Study, finished: set[int] | None = None) -> list:
    """End child runs left RUNNING whose trial Optuna shows as finished (or gone).

    A process killed mid-trial cannot end its run; once `study.fail_dead_local_trials`
    (or the RDB heartbeat) has failed the trial, its run ends FAILED with the reason.
    Runs of trials still RUNNING in Optuna belong to live workers and are left alone, and
    so are those of trials not in `finished` (when given): a live writer ends them.
    Returns the trial numbers whose runs were ended.
    """
    running = parent.client.search_runs(
        [parent.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.id}' and attributes.status = 'RUNNING'",
        max_results=10000,
    )
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    ended = []
    for r in running:
        number = int(r.data.tags.get(TRIAL_TAG, "-1"))
        trial = trials.get(number)
        live = finished is not None and number not in finished
        if trial is not None and (live or not trial.state.is_finished()):
            continue
        if trial is None:
            end_run(parent.client, r.info.run_id, "KILLED", None, {STATE_TAG: "failed"}, [])
        else:
            end_run(parent.client, r.info.run_id, *ending(trial))
        ended.append(number)
    return sorted(ended)
