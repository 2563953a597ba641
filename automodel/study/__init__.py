"""The Optuna side of a search: storage, opening a study (and refusing a foreign one), trial
owners and stale-trial cleanup, sampler and pruner tables, ranking.

    storage.py      the journal file (default; many processes, torn writes repaired) or a database
    identity.py     load_or_create: create once (race-safe), join, refuse other settings
    owners.py       who runs a trial (host, boot, PID namespace, pid, start time); dead owners
    algorithms.py   samplers and pruners by name
    ranking.py      counts by state, the best trial, the most common failure
    attrs.py        the names of the user attributes trials carry
"""

from __future__ import annotations

import logging

import optuna

from automodel.study.algorithms import make_pruner, make_sampler
from automodel.study.attrs import (
    FAIL_ATTR,
    FINISHED,
    METRIC_ATTR,
    SURPLUS_ATTR,
    TRAINED_WITH_ATTR,
    VAL_LOSS_ATTR,
    WORKER_ATTR,
    Surplus,
    is_surplus,
)
from automodel.study.identity import TRAINER_KEYS, load_or_create
from automodel.study.owners import (
    Owner,
    fail_dead_local_trials,
    fail_trial,
    lease,
    running_elsewhere,
    worker_id,
)
from automodel.study.ranking import (
    best_trial,
    counts,
    most_common_failure,
    rank_key,
    ranked,
    sign_of,
)
from automodel.study.storage import (
    HEARTBEAT_SECONDS,
    has_heartbeat,
    open_storage,
    open_study_storage,
    storage_label,
)

__all__ = [
    "FAIL_ATTR",
    "FINISHED",
    "HEARTBEAT_SECONDS",
    "METRIC_ATTR",
    "SURPLUS_ATTR",
    "TRAINED_WITH_ATTR",
    "TRAINER_KEYS",
    "VAL_LOSS_ATTR",
    "WORKER_ATTR",
    "Owner",
    "Surplus",
    "best_trial",
    "counts",
    "fail_dead_local_trials",
    "fail_trial",
    "has_heartbeat",
    "is_surplus",
    "lease",
    "load_or_create",
    "make_pruner",
    "make_sampler",
    "most_common_failure",
    "open_storage",
    "open_study_storage",
    "quiet_optuna",
    "rank_key",
    "ranked",
    "running_elsewhere",
    "sign_of",
    "storage_label",
    "worker_id",
]


def quiet_optuna() -> None:
    # Our progress lines replace Optuna's per-trial INFO logs; failures are reported by us.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
