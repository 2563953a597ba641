"""The names of what a study records on its trials, and the trial states a budget counts."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_ATTR = "worker"  # the process that runs a trial: see study.owners.Owner
FAIL_ATTR = "fail_reason"
METRIC_ATTR = "metric"  # the name of the metric a trial's value is (accuracy, rmse)
SURPLUS_ATTR = "surplus"  # set on a trial dropped because other workers filled the budget
VAL_LOSS_ATTR = "val_loss"  # validation loss at the best epoch: breaks accuracy ties
# What retrains a trial to the same weights: seed, epochs, threads, compile, device type, ...
# (search.trial.Objective writes it; search.trial.trained and the export verb read it).
TRAINED_WITH_ATTR = "trained_with"


class Surplus(RuntimeError):
    """Concurrent workers started the whole budget first; this trial is recorded, not run."""


def is_surplus(trial: optuna.trial.FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(SURPLUS_ATTR))
