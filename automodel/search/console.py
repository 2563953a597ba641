"""What a search prints: the banner, one line per finished trial, the MLflow run, the summary.

Progress goes to stdout (quiet=true silences it); warnings and errors go to stderr.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from automodel.config import RunConfig
from automodel.devices import Slot
from automodel.search.plan import Plan
from automodel.study import FAIL_ATTR, best_trial, counts, is_surplus


class Progress:
    """A study callback: one line per finished trial with counts, best so far, time used and
    left."""

    def __init__(self, cfg: RunConfig, start: float, metric: str = "accuracy"):
        self.cfg = cfg
        self.start = start
        self.metric = metric

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.cfg.quiet or is_surplus(trial):
            return
        c = counts(study)
        best = best_trial(study)
        done = c["complete"] + c["pruned"]
        elapsed = time.monotonic() - self.start
        if trial.state == TrialState.COMPLETE:
            what = f"complete  val_{self.metric}={trial.value:.4f}"
        elif trial.state == TrialState.PRUNED:
            what = f"pruned at epoch {trial.last_step}"
        else:
            what = f"FAILED ({trial.user_attrs.get(FAIL_ATTR, 'unknown error')})"
        best_text = f"best={best.value:.4f} (#{best.number})" if best else "best=-"
        left = _time_left(self.cfg, done, elapsed)
        print(
            f"[{done:>3}/{self.cfg.study.n_trials}] trial {trial.number:<3} {what:<34} {best_text}  "
            f"| {c['pruned']} pruned, {c['failed']} failed | {_clock(elapsed)} used{left}",
            flush=True,
        )


def _time_left(cfg: RunConfig, done: int, elapsed: float) -> str:
    estimates = []
    if cfg.study.timeout:
        estimates.append(max(0.0, cfg.study.timeout - elapsed))
    if done:
        estimates.append(elapsed / done * max(0, cfg.study.n_trials - done))
    return f", ~{_clock(min(estimates))} left" if estimates else ""


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def banner(plan: Plan, study: optuna.Study, slots: list[Slot]) -> None:
    """The search's first line: the study, what is done, the data, where trials run."""
    cfg, dataset = plan.cfg, plan.data
    c = counts(study)
    where = (
        slots[0].label
        if len(slots) == 1
        else f"{len(slots)} workers on {', '.join(sorted({s.label for s in slots}))}"
    )
    rows = f"{len(dataset.x_train)} train / {len(dataset.x_val)} val"
    if plan.folds is not None:
        rows = f"{plan.k}-fold cross-validation over {plan.folds.n_rows} rows"
    print(
        f"study {cfg.study.name}: {c['complete'] + c['pruned']} of {cfg.study.n_trials} trials "
        f"done, family {plan.space.family}, data {cfg.data.name} ({dataset.spec.task}, "
        f"{rows} / {len(dataset.x_test)} test), "
        f"{where} ({slots[0].threads} thread{'s' if slots[0].threads > 1 else ''} each), "
        f"outputs in {cfg.study_dir}/",
        flush=True,
    )


def announce(experiment: str, tracker) -> None:
    """The study's MLflow run, once the tracker has opened it (its `on_open`)."""
    # From the tracker's thread, between progress lines: one write, so lines stay whole.
    sys.stdout.write(
        f"mlflow: run {tracker.parent_id} in experiment {experiment} at "
        f"{tracker.store.shown} (browse: python -m automodel ui)\n"
    )
    sys.stdout.flush()


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def notice(message: str) -> None:
    """What the search adapted on its own (a space fitted to the data): not a problem."""
    print(f"notice: {message}", file=sys.stderr, flush=True)


def print_summary(summary: dict) -> None:
    """The search's last lines: the best trial's metrics and params, and where its files are."""
    params = "  ".join(f"{k}={_fmt(v)}" for k, v in summary["params"].items())
    c = summary["counts"]
    val = "  ".join(f"{k} {v:.4f}" for k, v in summary["val"].items())
    if summary.get("cv"):
        spread = summary["cv"]["std"]
        val = "  ".join(f"{k} {v:.4f} ±{spread[k]:.4f}" for k, v in summary["val"].items())
        val += f"  (mean of {summary['cv']['folds']} folds)"
    test = "  ".join(f"{k} {v:.4f}" for k, v in summary["test"].items())
    if summary.get("refit"):
        test += "  (the best params refit on every non-test row)"
    stopped = f"; stopped: {summary['stop_reason']}" if summary.get("stop_reason") else ""
    print(
        f"\nbest trial {summary['best_trial']} of study {summary['study']} "
        f"({c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed{stopped}):\n"
        f"  val  {val}\n"
        f"  test {test}\n"
        + _ensemble_lines(summary)
        + (f"  {baseline_line(summary)}\n" if summary.get("baseline") else "")
        + f"  params: {params}\n"
        + _importance(summary.get("importance"))
        + f"  outputs: {Path(summary['weights']).parent}/ (summary.json, best_model.pt, best_params.json)"
        + (f"\n  export: {summary['export']}/best_model.py" if summary.get("export") else ""),
        file=sys.stdout,
        flush=True,
    )


def _importance(entry: dict | None, shown: int = 5) -> str:
    """One line: the inputs the best model relies on most (summary.json's `importance`)."""
    if not entry:
        return ""
    what = (
        f"how much {entry['metric']} worsens when shuffled"
        if entry["method"] == "permutation"
        else "mean |gradient x input|"
    )
    top = ", ".join(f"{t['name']} {t['mean']:.3g}" for t in entry["top"][:shown])
    return f"  importance ({what}): {top}\n"


def _ensemble_lines(summary: dict) -> str:
    """The ensemble's metrics, and whether it is what the export holds."""
    e = summary.get("ensemble")
    if not e:
        return ""
    members = ", ".join(f"{t} (x{w})" for t, w in zip(e["members"], e["weights"], strict=True))
    shipped = (
        "shipped"
        if summary.get("shipped") == "ensemble"
        else "not shipped: no better than the best trial on validation"
    )
    if summary.get("shipped") != "ensemble" and str(summary.get("export_error", "")).startswith(
        "ensemble:"
    ):
        shipped = "not shipped: it could not be exported"
    lines = [f"  ensemble of trials {members}, {shipped}:"]
    for split in ("val", "test"):
        values = "  ".join(f"{k} {v:.4f}" for k, v in (e[split] or {}).items())
        lines.append(f"    {split:<4} {values}")
    return "\n".join(lines) + "\n"


def baseline_line(summary: dict) -> str:
    """`baseline HistGradientBoosting: test accuracy 0.9650 (shipped: 0.9720)`: the selection
    metric (the first of the task's) on the test split, beside the shipped model's."""
    base = summary["baseline"]
    metric, value = next(iter(base["test"].items()))
    shipped = summary["ensemble"] if summary.get("shipped") == "ensemble" else summary
    return f"baseline {base['model']}: test {metric} {value:.4f} (shipped: {shipped['test'][metric]:.4f})"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
