"""Stop rules replayed on recorded searches: when each would have stopped, and what it shipped.

Run searches to their budget with every trial's weights kept and the stop rule off, then
replay: for every rule and study, walk the finished trials in the order they finished, find
the first point where the rule says stop, and evaluate on the test split the trial that the
search would then have shipped (the best so far, ranked as the search ranks). Prints per study
and rule: where it stopped (finished trials), the seconds the search would have taken, and
the shipped trial's test metric next to the full search's.

    python benchmarks/stop_rules.py record --tables iris,wine,... --budget 60 --runs /tmp/r
    python benchmarks/stop_rules.py record --digits --runs /tmp/r     # the default digits search
    python benchmarks/stop_rules.py replay --runs /tmp/r

Rules: `patience:N` and `patience:auto` (automodel's rule, search/converge.py, at tolerance
--tolerance), `terminator` (Optuna's Terminator with EMMREvaluator and MedianErrorEvaluator,
the pairing its docs give for a single validation split; its default error evaluator needs
cross-validation scores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import sidebyside as sbs
import tables


def record(args) -> None:
    runs = Path(args.runs)
    common = [
        *("study.stop_when_converged=false", "study.keep_top_k=100000"),
        *("tracking.enabled=false", "baseline=false", "quiet=true", f"runs_dir={runs}"),
    ]
    jobs = [
        [
            *("data=csv", f"data.path={tables.path(name)}", "data.target=target"),
            f"study.timeout={args.budget}",
        ]
        for name in (args.tables.split(",") if args.tables else [])
    ]
    if args.digits:
        jobs.append([])  # the default search: digits, 100 trials, no time limit
    env = {**os.environ, "PYTHONPATH": str(sbs.ROOT), "OMP_NUM_THREADS": "1"}
    for job in jobs:
        start = time.monotonic()
        cmd = [sys.executable, "-m", "automodel", "search", *job, *common, *args.extra.split()]
        proc = subprocess.run(cmd, cwd=sbs.ROOT, env=env, capture_output=True, text=True)
        last = (proc.stdout.strip() or proc.stderr.strip() or "?").splitlines()[-1]
        print(f"{time.monotonic() - start:7.1f} s  {last}  ({sbs.load()})", flush=True)


def _study(study_dir: Path):
    import optuna

    from automodel.study import open_storage, quiet_optuna

    quiet_optuna()
    storage = open_storage(None, study_dir)
    return optuna.load_study(study_name=study_dir.name, storage=storage)


def _finished(study) -> list:
    from automodel.study import FINISHED, is_surplus

    trials = [t for t in study.get_trials(deepcopy=False) if t.state in FINISHED]
    trials = [t for t in trials if not is_surplus(t)]
    return sorted(trials, key=lambda t: (t.datetime_complete, t.number))


def _shipped(prefix: list, sign: int):
    from optuna.trial import TrialState

    from automodel.study import VAL_LOSS_ATTR, rank_key

    complete = [t for t in prefix if t.state == TrialState.COMPLETE]
    key = lambda t: rank_key(t.value, t.user_attrs.get(VAL_LOSS_ATTR), t.number, sign)  # noqa: E731
    return min(complete, key=key)


def _patience_rule(patience: int | None, tolerance: float, space):
    from automodel.config import StudyConfig
    from automodel.search import converge

    n = converge.patience_for(StudyConfig(converge_patience=patience), space)

    def rule(prefix: list, sign: int, direction) -> bool:
        since, best = converge.stagnation(prefix, sign, tolerance)
        return best is not None and since >= n

    rule.label = f"patience {n}" + (" (auto)" if patience is None else "")
    return rule


def _terminator_rule():
    import optuna
    from optuna.terminator import EMMREvaluator, MedianErrorEvaluator, Terminator

    with warnings.catch_warnings():  # deprecated in Optuna 4.9, removed in 6.0
        warnings.simplefilter("ignore")
        emmr = EMMREvaluator(seed=0)
        terminator = Terminator(emmr, MedianErrorEvaluator(emmr), min_n_trials=20)
    cost = []

    def rule(prefix: list, sign: int, direction) -> bool:
        if sum(t.state.name == "COMPLETE" for t in prefix) < 20:
            return False
        study = optuna.create_study(direction=direction)
        study.add_trials(prefix)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stop = terminator.should_terminate(study)
        cost.append(time.perf_counter() - start)
        return stop

    rule.label = "terminator"
    rule.cost = cost
    return rule


def _test_metric(study_dir: Path, trial_number: int, cache: dict) -> float:
    """The test metric of a kept trial, on the data the study's config.yaml names."""
    import torch
    import yaml

    from automodel import data, outputs
    from automodel.checkpoint import Checkpoint
    from automodel.config import DataConfig
    from automodel.search import test_metrics

    if "data" not in cache:
        settings = yaml.safe_load((study_dir / "config.yaml").read_text())
        cache["data"] = data.load(DataConfig(**settings["data"]), settings["seed"])
    dataset = cache["data"]
    ckpt = Checkpoint.load(outputs.trial_checkpoint(study_dir, trial_number))
    model = ckpt.build_model(torch.device("cpu"))
    return test_metrics(model, dataset, 2048)[dataset.spec.metric]


def replay(args) -> None:
    from automodel import spaces

    rows = []
    for study_dir in sorted(p for p in Path(args.runs).iterdir() if (p / "study.journal").exists()):
        study = _study(study_dir)
        finished = _finished(study)
        if not finished:
            continue
        sign = 1 if study.direction.name == "MAXIMIZE" else -1
        space = spaces.load(study_dir / "search_space.yaml")
        t0 = min(t.datetime_start for t in finished)
        rules = [_patience_rule(int(p) if p != "auto" else None, args.tolerance, space)
                 for p in args.patience.split(",")]  # fmt: skip
        if args.terminator:
            rules.append(_terminator_rule())
        cache: dict = {}
        full = _shipped(finished, sign)
        full_test = _test_metric(study_dir, full.number, cache)
        end = (finished[-1].datetime_complete - t0).total_seconds()
        rows.append([study_dir.name, "none (budget)", len(finished), f"{end:.1f}",
                     full.number, f"{full.value:.4f}", f"{full_test:.4f}"])  # fmt: skip
        for rule in rules:
            stop = next(
                (k for k in range(1, len(finished) + 1)
                 if rule(finished[:k], sign, study.direction)),
                len(finished),
            )  # fmt: skip
            shipped = _shipped(finished[:stop], sign)
            seconds = (finished[stop - 1].datetime_complete - t0).total_seconds()
            test = _test_metric(study_dir, shipped.number, cache)
            label = rule.label
            if getattr(rule, "cost", None):
                label += f" ({sum(rule.cost) / len(rule.cost):.2f} s/check)"
            rows.append([study_dir.name, label, stop, f"{seconds:.1f}", shipped.number,
                         f"{shipped.value:.4f}", f"{test:.4f}"])  # fmt: skip
            print(sbs.table(_HEADERS, [rows[-1]]).splitlines()[-1], flush=True)
    print(f"\nstop rules replayed, tolerance {args.tolerance:g}, {sbs.load()}\n")
    print(sbs.table(_HEADERS, rows))


_HEADERS = ["study", "rule", "stopped at", "s", "shipped", "val", "test"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="search to the budget, every trial's weights kept")
    r.add_argument("--tables", default=",".join(tables.SUITE))
    r.add_argument("--digits", action="store_true", help="also the default digits search")
    r.add_argument("--budget", type=float, default=60.0)
    r.add_argument("--extra", default="", help="more automodel overrides, space-separated")
    r.add_argument("--runs", required=True)
    p = sub.add_parser("replay", help="where each rule stops and what it ships")
    p.add_argument("--runs", required=True)
    p.add_argument("--patience", default="auto,10,30,50")
    p.add_argument("--tolerance", type=float, default=0.001)
    p.add_argument("--terminator", action="store_true", help="also Optuna's Terminator")
    args = parser.parse_args()
    record(args) if args.command == "record" else replay(args)


if __name__ == "__main__":
    main()
