"""`python -m automodel status`: the studies under runs_dir, or the top trials of one."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from automodel.config import ConfigError, RunConfig
from automodel.errors import StorageError
from automodel.study import (
    best_trial,
    counts,
    most_common_failure,
    open_storage,
    open_study_storage,
    quiet_optuna,
    ranked,
)


def show(cfg: RunConfig, one_study: bool, top: int = 10) -> int:
    quiet_optuna()
    if one_study:
        return _show_study(cfg, top)
    root = Path(cfg.runs_dir)
    dirs = (
        sorted(p for p in root.iterdir() if p.is_dir() and _is_study_dir(p))
        if root.is_dir()
        else []
    )
    if not dirs:
        print(f"no studies under {root}/ yet; start one with: python -m automodel search")
        return 0
    print(
        f"{'study':<32} {'complete':>8} {'pruned':>7} {'failed':>7} {'running':>8}  {'best val':>9}  {'test':>7}"
    )
    for d in dirs:
        summary = _summary(d)
        c, best = _counts_and_best(d)
        test = next(iter(summary.get("test", {}).values()), None) if summary else None
        print(
            f"{d.name:<32} {c.get('complete', '-'):>8} {c.get('pruned', '-'):>7} {c.get('failed', '-'):>7} "
            f"{c.get('running', '-'):>8}  {_num(best):>9}  {_num(test):>7}"
        )
    return 0


def _is_study_dir(path: Path) -> bool:
    return (path / "study.journal").exists() or (path / "summary.json").exists()


def _summary(study_dir: Path) -> dict:
    try:
        return json.loads((study_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _load(storage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _counts_and_best(study_dir: Path) -> tuple[dict, float | None]:
    study = None
    if (study_dir / "study.journal").exists():
        try:
            study = _load(open_storage(None, study_dir), study_dir.name)
        except StorageError:  # one unreadable journal: its row says so, the others are listed
            return {"complete": "unreadable"}, None
    if study is None:  # an RDB study: the last summary is what we know here
        summary = _summary(study_dir)
        return summary.get("counts", {}), next(iter(summary.get("val", {}).values()), None)
    best = best_trial(study)
    return counts(study), best.value if best else None


def _show_study(cfg: RunConfig, top: int) -> int:
    study = None
    if cfg.study.storage is not None or (cfg.study_dir / "study.journal").exists():
        study = _load(open_study_storage(cfg), cfg.study.name)  # one-line errors
    if study is None:
        raise ConfigError(
            f"no study named {cfg.study.name!r} under {cfg.runs_dir}/ (or in study.storage)"
        )
    c = counts(study)
    print(
        f"study {cfg.study.name}: {c['complete']} complete, {c['pruned']} pruned, "
        f"{c['failed']} failed, {c['running']} running"
    )
    print(_selection(_summary(cfg.study_dir)))
    top_trials = ranked(study)[:top]
    if not top_trials:
        print("no completed trial yet")
    for rank, t in enumerate(top_trials, 1):
        params = " ".join(f"{k}={_num(v)}" for k, v in t.params.items())
        spread = t.user_attrs.get("cv_std")
        val = f"{t.value:.4f}" + ("" if spread is None else f"±{spread:.4f}")
        print(f"{rank:>3}. trial {t.number:<4} val={val}  epochs={t.last_step}  {params}")
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    if failed:
        cause, n = most_common_failure(failed)
        print(f"most common failure ({n}x): {cause}")
    _show_result(_summary(cfg.study_dir))
    return 0


def _selection(summary: dict) -> str:
    """How the last finished search chose and trained its model (from summary.json)."""
    if not summary:
        return "selection: not finished yet (no summary.json)"
    cv = summary.get("cv")
    how = "one validation split" if not cv else f"{cv['folds']}-fold cross-validation"
    if cv:
        how += " (" + ", ".join(f"{k} {v:.4f}±{cv['std'][k]:.4f}" for k, v in cv["mean"].items())
        how += ")"
    shipped = (
        "the best params refit on every non-test row"
        if summary.get("refit")
        else (f"trial {summary.get('best_trial')}'s own model")
    )
    test = ", ".join(f"{k} {_num(v)}" for k, v in summary.get("test", {}).items())
    return f"selection: {how}; shipped: {shipped} (test {test})"


def _show_result(summary: dict) -> None:
    """The last search's end, from its summary.json: why it stopped, the baseline beside it."""
    if summary.get("stop_reason"):
        print(f"last search stopped: {summary['stop_reason']}")
    base = summary.get("baseline")
    if not base:
        return
    metric = next(iter(base["test"]))
    searched = summary.get("test", {}).get(metric)
    print(
        f"baseline {base['model']}: val {metric} {_num(base['val'][metric])}, test {metric} "
        f"{_num(base['test'][metric])} (the search's {_num(searched)}; {base['seconds']:g} s)"
    )


def _num(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
