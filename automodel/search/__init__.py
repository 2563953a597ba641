"""The orchestrator: validate everything, open the study, run trials, report the best.

    plan.py     prepare(cfg) -> Plan: space, data and settings, all user input checked
    trial.py    the objective, the trial loop of one device slot, the kept top-k weights
    workers.py  one worker process per further slot, all on the same study
    console.py  the banner, progress lines and the final summary
    finish.py   the best model built once, the test split evaluated once, the outputs

`search(cfg)` ties them together: it runs (or resumes) a study to its budget.
"""

from __future__ import annotations

import functools
import math
import time

import optuna

from automodel import devices, outputs
from automodel.config import ConfigError, RunConfig
from automodel.search import console, converge
from automodel.search.console import print_summary
from automodel.search.finish import finish, test_metrics
from automodel.search.plan import Plan, open_study, prepare, write_run_files
from automodel.search.trial import (
    Objective,
    SearchStopped,
    failure_guard,
    run_slot,
    run_trials,
    trained,
)
from automodel.search.workers import run_parallel
from automodel.study import fail_dead_local_trials, open_study_storage, quiet_optuna

__all__ = [
    "Objective",
    "Plan",
    "SearchStopped",
    "finish",
    "open_study",
    "open_study_storage",
    "prepare",
    "print_summary",
    "quiet_optuna",
    "run_slot",
    "run_trials",
    "search",
    "test_metrics",
    "trained",
    "write_run_files",
]


def search(cfg: RunConfig, command: str = "", attach: bool = False) -> dict:
    """Run (or resume) a search to its budget and write the study's outputs. Returns the summary.

    With `attach`, the study must already exist (the `worker` verb: another host joining).
    """
    start = time.monotonic()
    deadline = time.time() + cfg.study.timeout if cfg.study.timeout else math.inf
    plan = prepare(cfg)
    if cfg.tracking.enabled:  # a store that cannot work is refused before anything is written
        from automodel import tracking

        tracking.check_store(tracking.store(cfg))
    for warning in plan.data.warnings:
        console.warn(warning)
    if not cfg.quiet:
        for notice in plan.notices:
            console.notice(notice)
    try:
        slots = devices.slots(cfg.devices, cfg.workers, cfg.trials_per_device, cfg.trainer.threads)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    quiet_optuna()
    study = _open(plan, attach)
    tracker = _tracker(plan, study)
    if not cfg.quiet:
        console.banner(plan, study, slots)
    # The search process works the first slot itself: no wait for a worker to import torch.
    here = functools.partial(
        run_slot, plan, slots[0], 0, deadline, start, pinned=False, tracker=tracker
    )
    try:
        if len(slots) == 1:
            here()
        else:
            for problem in run_parallel(plan, slots, deadline, start, here):
                console.warn(problem)
            failure_guard(study, cfg)
        device = devices.bind(slots[0], pinned=False)
        summary = finish(plan, study, device, time.monotonic() - start, command, tracker)
    except BaseException as err:
        if tracker is not None:
            tracker.close(err)
        raise
    if tracker is not None:
        tracker.close()
    return summary


def _open(plan: Plan, attach: bool) -> optuna.Study:
    """The study (its creator queued the space's enqueued candidates), with its run files
    written and the trials of dead processes failed."""
    cfg = plan.cfg
    study = open_study(plan, must_exist=attach)
    write_run_files(plan)
    if not attach:  # this invocation judges convergence afresh (a joining host does not)
        converge.reset(study)
    stale = fail_dead_local_trials(
        study, include_unowned=cfg.study.storage is None, leases=outputs.leases(cfg.study_dir)
    )
    if stale and not cfg.quiet:
        print(f"marked {len(stale)} trial(s) left RUNNING by a dead process as failed: {stale}")
    return study


def _tracker(plan: Plan, study: optuna.Study):
    """The study's MLflow tracker, or None with tracking.enabled=false (mlflow never imported).

    It opens the store in the background, so the first trial does not wait for it.
    """
    cfg = plan.cfg
    if not cfg.tracking.enabled:
        return None
    from automodel import tracking

    tracker = tracking.Tracker(cfg)
    announce = functools.partial(console.announce, cfg.tracking.experiment)
    tracker.open(plan, study, on_open=None if cfg.quiet else announce)
    return tracker
