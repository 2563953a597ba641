"""Small data: one validation split against k-fold cross-validation, with and without a refit.

For every small table of the offline suite (benchmarks/tables.py `SMALL`) and seed, two
searches run `python -m automodel search data=csv data.path=<t>.csv data.target=target
seed=<s> study.timeout=<budget>` in a fresh process, with the same wall-clock budget (the
trial count set out of reach, so the budget binds), one worker with one thread (the machine
is shared), no MLflow, no refit:

    holdout       data.cv_folds=0   (one validation split, as before k-fold existed)
    kfold         data.cv_folds=5   (selection by 5-fold cross-validation)

and each finished study is then finished again with study.refit=true (the same command with
study.n_trials = its finished trials: no new trial, the same best trial, now refit on every
non-test row), which gives `holdout+refit` and `kfold+refit` from the very same selection.

Reported per table and variant: the test metric of the shipped model (accuracy, or RMSE for
diabetes), mean and standard deviation over the seeds, and the mean |validation - test| gap
of the selected trial (its validation metric: the folds' mean with k-fold). `--digits` runs
the default digits search (`python -m automodel search seed=<s>`: 100 trials, no budget,
two workers) in the same four variants, and reports test accuracy per seed.

    python benchmarks/small_data.py                    # 30 s, seeds 0,1,2: about 25 minutes
    python benchmarks/small_data.py --quick            # 15 s, seed 0, iris and diabetes
    python benchmarks/small_data.py --digits           # the default digits search, 3 seeds
    python benchmarks/small_data.py --report runs/small_data.jsonl   # the table again

Every finished run is appended to `--out` (JSON lines), so a run can be reported again.
Every table searches the default space of `data=csv` (`tabular`), fitted to its rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sidebyside as sbs
import tables
import torch

MODES = {"holdout": ["data.cv_folds=0"], "kfold": ["data.cv_folds=5"]}
VARIANTS = ("holdout", "kfold", "holdout+refit", "kfold+refit")
SETTINGS = ["workers=1", "trainer.threads=1", "tracking.enabled=false", "quiet=true"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(sbs.ROOT), "OMP_NUM_THREADS": "1"}


def search(args: list[str], workdir: Path) -> dict:
    """One search in a fresh process; its summary.json plus the wall seconds, or an error."""
    cmd = [sys.executable, "-m", "automodel", "search", f"runs_dir={workdir}", *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=sbs.ROOT, capture_output=True, text=True, env=_env())
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}", "seconds": seconds}
    summary = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    return {**summary, "seconds": seconds}


def run_table(table: str, seed: int, mode: str, budget: float) -> list[dict]:
    """The `mode` search of `table` with refit off, then its study finished again with refit
    on: two records, `mode` and `mode+refit`."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        args = [
            *("data=csv", f"data.path={tables.path(table)}", "data.target=target"),
            *(f"seed={seed}", f"study.timeout={budget}", *SETTINGS),
            *MODES[mode],
        ]
        what = {"table": table, "seed": seed, "budget": budget}
        first = search([*args, "study.n_trials=100000", "study.refit=false"], workdir)
        out = [_record(first, **what, variant=mode)]
        if "error" not in first:
            done = first["counts"]["complete"] + first["counts"]["pruned"]
            again = search([*args, f"study.n_trials={done}", "study.refit=true"], workdir)
            out.append(_record(again, **what, variant=f"{mode}+refit"))
    return out


def run_digits(seed: int, mode: str) -> list[dict]:
    """The default digits search (100 trials, no budget, its defaults otherwise) with folds
    `mode` and no refit, then finished again with refit: two records."""
    with tempfile.TemporaryDirectory() as tmp:
        args, what = [f"seed={seed}", "quiet=true", *MODES[mode]], {"table": "digits", "seed": seed}
        first = search([*args, "study.refit=false"], Path(tmp))
        out = [_record(first, **what, variant=mode)]
        if "error" not in first:
            done = first["counts"]["complete"] + first["counts"]["pruned"]
            again = search([*args, f"study.n_trials={done}", "study.refit=true"], Path(tmp))
            out.append(_record(again, **what, variant=f"{mode}+refit"))
    return out


def _record(summary: dict, **what) -> dict:
    if "error" in summary:
        return {**what, **summary}
    metric = "rmse" if "rmse" in summary["test"] else "accuracy"
    c = summary["counts"]
    return {
        **what,
        "metric": metric,
        "val": summary["val"][metric],
        "test": summary["test"][metric],
        "folds": (summary.get("cv") or {}).get("folds", 0),
        "refit": summary.get("refit", False),
        "trials": f"{c['complete']}+{c['pruned']}",
        "seconds": round(summary["seconds"], 1),
    }


def report(records: list[dict], variants: list[str]) -> str:
    """The markdown table per dataset and variant, and the comparison with holdout."""
    ok = [r for r in records if "error" not in r]
    names = list(dict.fromkeys(r["table"] for r in ok))
    header = ["data", "metric", *(f"{v} test" for v in variants), *(f"{v} gap" for v in variants)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    summary = {v: {"worse": [], "delta": [], "gap": []} for v in variants}
    for name in names:
        by = {v: [r for r in ok if r["table"] == name and r["variant"] == v] for v in variants}
        metric = next(r["metric"] for r in ok if r["table"] == name)
        cells = [f"{_mean(by[v], 'test')} ± {_sd(by[v])}" for v in variants]
        gaps = [_gap(by[v]) for v in variants]
        lines.append(f"| {name} | {metric} | " + " | ".join(cells + gaps) + " |")
        _compare(summary, by, metric)
    lines.append("")
    for v in variants:
        s = summary[v]
        if not s["delta"]:
            continue
        lines.append(
            f"- {v}: mean change in error against holdout {statistics.fmean(s['delta']):+.1%} "
            f"(per dataset: 1 - accuracy, or RMSE; negative is better); worse than holdout by "
            f"more than the seeds' spread on: {', '.join(s['worse']) or 'none'}; mean gap "
            f"{statistics.fmean(s['gap']):.4f}"
        )
    failed = [r for r in records if "error" in r]
    for r in failed:
        lines.append(f"- failed: {r['table']} seed {r['seed']} {r['variant']}: {r['error']}")
    return "\n".join(lines)


def _compare(summary: dict, by: dict, metric: str) -> None:
    base = by.get("holdout") or []
    for v, rows in by.items():
        if not rows:
            continue
        summary[v]["gap"].append(statistics.fmean(abs(r["val"] - r["test"]) for r in rows))
        if not base:
            continue
        error = (lambda x: x) if metric == "rmse" else (lambda x: 1 - x)
        ours = statistics.fmean(error(r["test"]) for r in rows)
        theirs = statistics.fmean(error(r["test"]) for r in base)
        summary[v]["delta"].append(ours / theirs - 1 if theirs else 0.0)
        spread = max(_sd_value(rows), _sd_value(base))
        if ours - theirs > spread:
            summary[v]["worse"].append(rows[0]["table"])


def _mean(rows: list[dict], key: str) -> str:
    return f"{statistics.fmean(r[key] for r in rows):.4f}" if rows else "-"


def _sd_value(rows: list[dict]) -> float:
    return statistics.stdev(r["test"] for r in rows) if len(rows) > 1 else 0.0


def _sd(rows: list[dict]) -> str:
    return f"{_sd_value(rows):.4f}" if rows else "-"


def _gap(rows: list[dict]) -> str:
    return f"{statistics.fmean(abs(r['val'] - r['test']) for r in rows):.4f}" if rows else "-"


def digits_report(records: list[dict]) -> str:
    rows = [
        [
            r["variant"],
            r["seed"],
            r.get("test", r.get("error")),
            r.get("val", "-"),
            r.get("trials", "-"),
            r["seconds"],
        ]
        for r in records
    ]
    return sbs.table(["variant", "seed", "test acc", "val acc", "trials", "wall s"], rows)


def pruning(table: str, n_trials: int, seed: int = 0) -> list[list]:
    """Lockstep folds + the median pruner against folds one after another + Optuna's
    WilcoxonPruner (a fold per step), in this process: the same random params for both (a
    seeded RandomSampler), no pruning as the reference. Rows: fold-epochs trained, trials
    pruned, the best trial's mean validation metric and whether it is the reference's best."""
    import optuna

    from automodel import config, crossval, search, train
    from automodel.search.folds import candidates

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            *("data=csv", f"data.path={tables.path(table)}", "data.target=target"),
            *(f"runs_dir={tmp}", "data.cv_folds=5"),
        ]
        plan = search.prepare(config.to_run_config(config.compose(overrides)))
    device, metric = torch.device("cpu"), plan.data.spec.metric
    torch.set_num_threads(1)  # as a search's worker on a shared machine
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def lockstep(trial):
        fold_models, recipe, states = candidates(
            plan, trial.number, plan.space.sample(trial), device
        )

        def report(epoch):
            trial.set_user_attr("fold_epochs", plan.k * epoch.epoch)
            trial.report(epoch.value, epoch.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        result = crossval.fit_folds(fold_models, plan.folds, recipe, states, on_epoch_end=report)
        return result.metrics[metric]

    def one_by_one(trial):
        fold_models, recipe, states = candidates(
            plan, trial.number, plan.space.sample(trial), device
        )
        values = []
        for i, (model, fold) in enumerate(zip(fold_models, plan.folds.datasets, strict=True)):
            torch.set_rng_state(states[i][0])  # as it would start alone
            values.append(train.fit(model, fold, recipe).best_value)
            trial.set_user_attr("fold_epochs", recipe.epochs * (i + 1))
            trial.report(values[-1], i)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return statistics.fmean(values)

    runs = {
        "no pruning": (lockstep, optuna.pruners.NopPruner()),
        "lockstep + median": (
            lockstep,
            optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
        ),
        "folds in turn + Wilcoxon": (one_by_one, optuna.pruners.WilcoxonPruner(p_threshold=0.1)),
    }
    rows, reference = [], None
    for name, (objective, pruner) in runs.items():
        direction = plan.data.spec.direction
        sampler = optuna.samplers.RandomSampler(seed=seed)
        study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)
        start = time.process_time()
        study.optimize(objective, n_trials=n_trials)
        cost = sum(t.user_attrs.get("fold_epochs", 0) for t in study.trials)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
        reference = study.best_trial.number if reference is None else reference
        rows.append(
            [
                table,
                name,
                cost,
                pruned,
                study.best_value,
                study.best_trial.number == reference,
                time.process_time() - start,
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per search")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tables", default=",".join(tables.SMALL))
    parser.add_argument("--quick", action="store_true", help="15 s, seed 0, iris and diabetes")
    parser.add_argument("--digits", action="store_true", help="the default digits search")
    parser.add_argument("--pruning", type=int, metavar="TRIALS", help="compare the pruners")
    parser.add_argument("--out", default=str(sbs.ROOT / "runs" / "small_data.jsonl"))
    parser.add_argument("--report", help="print the table of a JSON-lines file and exit")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="holdout, kfold or both: rerun one after a change to it (the other's records "
        "from an earlier run in the same --out file complete the --report)",
    )
    args = parser.parse_args()
    if args.report:
        records = [json.loads(line) for line in Path(args.report).read_text().splitlines()]
        print(report(records, list(VARIANTS)))
        return
    if args.quick:
        args.budget, args.seeds, args.tables = 15.0, "0", "iris,diabetes"
    if args.pruning:
        print(sbs.load(), flush=True)
        rows = [r for t in args.tables.split(",") for r in pruning(t, args.pruning)]
        head = ["data", "pruning", "fold-epochs", "pruned", "best val", "same best", "cpu s"]
        print(sbs.table(head, rows))
        print(sbs.load())
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    modes = [m for m in MODES if m in args.modes.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(sbs.load(), flush=True)
    records = []
    jobs = (
        [(lambda s=s, m=m: run_digits(s, m)) for s in seeds for m in modes]
        if args.digits
        else [
            (lambda t=t, s=s, m=m: run_table(t, s, m, args.budget))
            for t in args.tables.split(",")
            for s in seeds
            for m in (modes if s % 2 == 0 else modes[::-1])  # drift hits both alike
        ]
    )
    for job in jobs:
        for record in job():
            records.append(record)
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    print(sbs.load())
    print(digits_report(records) if args.digits else report(records, list(VARIANTS)))


if __name__ == "__main__":
    main()
