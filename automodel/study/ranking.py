"""Reading a study's results: trials by state, the best trial, failures by reason."""

from __future__ import annotations

import math
from collections import Counter

import optuna
from optuna.trial import TrialState

from automodel.study.attrs import FAIL_ATTR, VAL_LOSS_ATTR, is_surplus


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state; surplus trials (never run) are counted apart from real failures."""
    trials = study.get_trials(deepcopy=False)
    c = Counter("surplus" if is_surplus(t) else t.state for t in trials)
    return {
        "complete": c[TrialState.COMPLETE],
        "pruned": c[TrialState.PRUNED],
        "failed": c[TrialState.FAIL],
        "running": c[TrialState.RUNNING],
        "surplus": c["surplus"],
    }


def rank_key(value: float, val_loss: float | None, number: int, sign: int = 1) -> tuple:
    """Sort key, best first: the better value (`sign` +1: higher is better, -1: lower), then
    the lower validation loss, then the earlier trial.

    Accuracy on a few hundred validation rows ties often (many trials reach 284/288); the loss
    tells apart a model that is right with confidence from one that is right by a hair.
    """
    return (-sign * value, math.inf if val_loss is None else val_loss, number)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    ranking = ranked(study)
    return ranking[0] if ranking else None


def ranked(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials, best first (see `rank_key`)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = sign_of(study)
    return sorted(
        complete, key=lambda t: rank_key(t.value, t.user_attrs.get(VAL_LOSS_ATTR), t.number, sign)
    )


def sign_of(study: optuna.Study) -> int:
    """+1 when higher values are better (accuracy), -1 when lower are (rmse)."""
    return 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1


def most_common_failure(trials: list[optuna.trial.FrozenTrial]) -> tuple[str, int]:
    reasons = Counter(
        t.user_attrs.get(FAIL_ATTR, "unknown error") for t in trials if t.state == TrialState.FAIL
    )
    return reasons.most_common(1)[0] if reasons else ("", 0)
