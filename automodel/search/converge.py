"""Stopping a search once more trials are unlikely to help, and saying why a search stopped.

The rule (`study.stop_when_converged`, on by default) is patience on the best value: the
search stops when none of the last `patience` finished trials (complete or pruned, in the
order they finished) beat the best value by more than `converge_tolerance` of it. Patience
defaults to PER_DIMENSION trials per searched entry of the space, at least MIN_PATIENCE, so a
larger space gets more room before it is called done. The tolerance is relative so that one
rule serves accuracy and an RMSE in any unit; it ignores gains under 0.1%.

Why not Optuna's terminator (`optuna.terminator`): benchmarks/stop_rules.py replays recorded
searches under both (docs/performance.md has the figures). The terminator, with the
evaluators a single validation split allows, stopped none of the recorded table searches
within 100 trials, spent 0.3-0.6 s of GP fitting per check (as long as a trial on a small
table), and is deprecated since Optuna 4.9, to be removed in 6.0. This rule stopped the
table searches after about a third of their trials, shipping the same test metric but for
one row of one table.

The decision lives in the shared study (a user attribute), not in one process: whichever
worker sees the rule hold records it, and every worker stops at its next check, even if a
trial that finishes later would have reopened the rule for it. Each search invocation clears
the record first, so a rerun with more patience searches on.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from automodel.config import RunConfig, StudyConfig
from automodel.spaces import Space
from automodel.study import FINISHED, is_surplus, sign_of

STOP_ATTR = "automodel.converged"  # on the study: the decision of this invocation, or None
PER_DIMENSION = 3
MIN_PATIENCE = 20
REASONS = ("n_trials", "timeout", "converged")


def patience_for(study_cfg: StudyConfig, space: Space) -> int:
    """Finished trials without a new best that end the search."""
    if study_cfg.converge_patience is not None:
        return study_cfg.converge_patience
    searched = sum(1 for e in space.entries if e.type != "fixed")
    return max(MIN_PATIENCE, PER_DIMENSION * searched)


def stagnation(
    trials: list[optuna.trial.FrozenTrial], sign: int, tolerance: float
) -> tuple[int, optuna.trial.FrozenTrial | None]:
    """(finished trials since the last new best, that best trial).

    A new best must beat the best so far by more than `tolerance` * |best|; smaller gains
    still move the best (later trials must beat it) but do not reset the count. Trials are
    taken in the order they finished, which is the order the workers saw them.
    """
    finished = [t for t in trials if t.state in FINISHED and not is_surplus(t)]
    finished.sort(key=lambda t: (t.datetime_complete or t.datetime_start, t.number))
    best, best_trial, since = -math.inf, None, len(finished)
    for i, t in enumerate(finished):
        if t.state != TrialState.COMPLETE or t.value is None or not math.isfinite(t.value):
            continue
        value = sign * t.value
        if best_trial is None or value > best + tolerance * abs(best):
            since = len(finished) - 1 - i
        if best_trial is None or value > best:
            best, best_trial = value, t
    return since, best_trial


def should_stop(study: optuna.Study, cfg: RunConfig, space: Space, metric: str) -> bool:
    """Whether this worker stops here: the study is marked converged, or now is."""
    s = cfg.study
    if not s.stop_when_converged:
        return False
    if study.user_attrs.get(STOP_ATTR):
        return True
    patience = patience_for(s, space)
    trials = study.get_trials(deepcopy=False)
    since, best = stagnation(trials, sign_of(study), s.converge_tolerance)
    if best is None or since < patience:
        return False
    study.set_user_attr(
        STOP_ATTR, {"best_trial": best.number, "patience": patience, "finished": len(trials)}
    )
    if not cfg.quiet:
        print(
            f"converged: no val_{metric} better than trial {best.number}'s {best.value:.4f} "
            f"(by more than {s.converge_tolerance:g} of it) in the last {since} finished trials; "
            "stopping (study.stop_when_converged=false searches to the budget)",
            flush=True,
        )
    return True


def reset(study: optuna.Study) -> None:
    """Forget a previous invocation's decision: this one judges the study afresh."""
    if study.user_attrs.get(STOP_ATTR):
        study.set_user_attr(STOP_ATTR, None)


def stop_reason(study: optuna.Study, cfg: RunConfig, wall: float) -> str:
    """Why the search ended: `converged`, `n_trials` (the budget was met) or `timeout`."""
    if study.user_attrs.get(STOP_ATTR):
        return "converged"
    done = sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED) if not is_surplus(t))
    if done >= cfg.study.n_trials or not cfg.study.timeout or wall < cfg.study.timeout:
        return "n_trials"
    return "timeout"
