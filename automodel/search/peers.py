"""A worker among others on one study: their dead trials, waiting on their live ones, and a
trial of this worker that one of them ended.

    fail_stale(study, leases)      free the places of trials whose owner is provably gone
    say_waiting(study, since)      every WAIT_REPORT_SECONDS of waiting: which trials, whose
    run_one(study, objective, cb)  one trial; one ended by another process is a warning
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError

from automodel.search.console import warn
from automodel.study import FAIL_ATTR, fail_dead_local_trials, has_heartbeat, running_elsewhere

# After how long a worker waiting on other processes' trials says which (and again as often).
WAIT_REPORT_SECONDS = 30.0


def run_one(study: optuna.Study, objective, callbacks: list) -> None:
    """One trial; one that another process ended meanwhile (it judged this one dead) is a
    warning, and the worker goes on."""
    objective.trial_id = None
    try:
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
    except (ValueError, UpdateFinishedTrialError) as err:
        # Optuna refuses to record a trial that another process finished: "Cannot tell a
        # FAIL trial" (ValueError) or, for the storage's own check, UpdateFinishedTrialError.
        ended = isinstance(err, UpdateFinishedTrialError) or str(err).startswith("Cannot tell a")
        if not ended or objective.trial_id is None:
            raise
        trial = study._storage.get_trial(objective.trial_id)
        if not trial.state.is_finished():
            raise
        why = trial.user_attrs.get(FAIL_ATTR, "no reason recorded")
        warn(
            f"trial {trial.number} was ended ({trial.state.name.lower()}: {why}) by another "
            "process while this one ran it; going on"
        )


def say_waiting(study: optuna.Study, since: float | None) -> float:
    """Every WAIT_REPORT_SECONDS of waiting, one line naming the trials waited for."""
    now = time.monotonic()
    if since is None:
        return now
    if now - since < WAIT_REPORT_SECONDS:
        return since
    others = running_elsewhere(study)
    print(
        f"waiting for {len(others)} trial(s) running in other processes: {', '.join(others)}",
        file=sys.stderr,
        flush=True,
    )
    return now


def fail_stale(study: optuna.Study, leases: Path) -> None:
    """Free the places of trials whose worker died: on this machine by process identity and
    lease, elsewhere by heartbeat (a database)."""
    fail_dead_local_trials(study, include_unowned=False, leases=leases)
    if has_heartbeat(study):
        optuna.storages.fail_stale_trials(study)
