"""The study read once for every plot: trials by state, the best, the metric, the range shown.

Every study plot draws from one `View`, so they agree on which trial is best (the search's own
ranking, ties broken by validation loss), on what the axis is called, and on the part of the
value axis worth looking at.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from automodel import errors
from automodel import study as studylib

FENCE = 1.5  # Tukey's: values beyond 1.5 IQR from the quartiles are outliers, off the axis
IMPORTANCE_SEED = 0  # fANOVA's random forest: the same study draws the same bars


@dataclass(frozen=True)
class View:
    study: optuna.Study
    metric: str  # the validation metric the trials' values are: accuracy, rmse, ...
    sign: int  # +1 when higher is better
    complete: list[FrozenTrial]
    pruned: list[FrozenTrial]
    failed: int
    best: FrozenTrial | None
    # fANOVA importances, most important first; None with the reason when they cannot be had.
    importances: dict[str, float] | None = None
    no_importances: str = ""
    params: list[str] = field(default_factory=list)  # most important first, then the others

    @property
    def label(self) -> str:
        return f"validation {self.metric}"

    def value_range(self, anchors: list[float] | None = None, extra=()) -> tuple[float, float]:
        """The y-range worth showing: from the weakest typical value to the best one.

        `anchors` are the values that set the range (default: the complete trials' values),
        `extra` points must also fit on the better side (a curve's best epoch). The weak end
        is the lowest anchor inside Tukey's fence (1.5 interquartile ranges beyond the lower
        quartile), for a minimised metric the mirror: a trial stuck at chance would otherwise
        squash every good one into the top tenth of the plot.
        """
        if anchors is None:
            anchors = [t.value for t in self.complete]
        values = np.array(_finite(anchors)) * self.sign  # higher is better from here on
        if not len(values):
            raise ValueError("no finite trial value to plot")
        q1, q3 = np.quantile(values, [0.25, 0.75])
        weak = float(values[values >= q1 - FENCE * (q3 - q1)].min())
        strong = float(np.concatenate([values, np.array(_finite(extra)) * self.sign]).max())
        pad = 0.06 * (strong - weak) or 0.01 * max(abs(strong), 1.0)
        low, high = sorted(((weak - pad) * self.sign, (strong + pad) * self.sign))
        return low, high


def read(study: optuna.Study) -> View:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and _finite([t.value])]
    best = studylib.best_trial(study)
    if len({t.value for t in complete}) < 2:  # no variance to explain
        importances, no_importances = None, "fewer than two complete trials with distinct values"
    else:
        importances, no_importances = _importances(study)
    searched = {name for t in complete for name in t.params}
    ranked = [name for name in importances or () if name in searched]
    return View(
        study=study,
        metric=(best.user_attrs.get(studylib.METRIC_ATTR) if best else None) or "objective",
        sign=studylib.sign_of(study),
        complete=complete,
        pruned=[t for t in trials if t.state == TrialState.PRUNED],
        failed=sum(t.state == TrialState.FAIL for t in trials),
        best=best,
        importances=importances,
        no_importances=no_importances,
        params=ranked + sorted(searched - set(ranked)),
    )


def _importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """fANOVA over the params every complete trial has (Optuna's default); (None, why) if not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
            )
    except Exception as err:  # a param Optuna cannot rank, ...
        return None, errors.reason(err)
    if not found:
        return None, "no param that every complete trial has"
    if len(found) == 1:  # it explains everything by definition
        return None, f"a single param to rank ({next(iter(found))})"
    return {k: float(v) for k, v in found.items()}, ""


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]
