"""Ensembles of the best trials against the best single trial, from the same searches.

For every data set (the offline small-table suite of benchmarks/tables.py, mnist1d, digits)
and seed: one search (`python -m automodel search ... study.timeout=<budget>`, defaults
otherwise, a fresh process) that keeps its best `ensemble.candidates` trials. Then, from
that search's kept checkpoints, the ensemble selected in k greedy steps for each k of
`--sizes`, its members refit on every non-test row when the search refit its single model
(study.refit, the default: as the search ships an ensemble), measured on the test split; the
best single trial's test metric (its refit's) comes from the same search's summary.json. Also the prediction time per 1,000 rows of the two
exported scripts (`predict` of best_model.py, one thread, median of repeats, alternating).

Prints, per data set and seed, the single trial's and each ensemble's test metric (accuracy,
or RMSE for regression), what the study would ship at each size (an ensemble only when it
ranks above the best trial on validation), then per size: wins/ties/losses against the
single trial on test (a tie: the same accuracy, or RMSE within 0.5%), the mean gain
(accuracy points; % lower RMSE), and the latency ratio.

    python benchmarks/ensemble.py                 # 8 data sets x 3 seeds, 35 s each: ~25 min
    python benchmarks/ensemble.py --quick         # iris and diabetes, seed 0, 15 s
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sidebyside as sbs
import tables
import torch

DATASETS = (*tables.SMALL, "mnist1d", "digits")
# mnist1d's CNN trials take about ten times a table's MLP trials: twice the budget, so that
# a search completes a few (both contenders still come from the same search).
BUDGET_SCALE = {"mnist1d": 2}


def data_args(name: str) -> list[str]:
    """The data's settings; everything else is the default (a table: the tabular space)."""
    if name in ("mnist1d", "digits"):
        return [f"data={name}"]
    return ["data=csv", f"data.path={tables.path(name)}", "data.target=target"]


def run_search(name: str, seed: int, budget: float, runs: Path, extra: list[str]) -> Path:
    """One search in a fresh process; returns its study folder."""
    cmd = [
        *(sys.executable, "-m", "automodel", "search", *data_args(name)),
        f"seed={seed}",
        *(f"study.timeout={budget}", f"runs_dir={runs}", "quiet=true"),
        *("tracking.enabled=false", f"study.name={name}-{seed}", *extra),
    ]
    env = {**os.environ, "PYTHONPATH": str(sbs.ROOT)}
    proc = subprocess.run(cmd, cwd=sbs.ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
    return Path(proc.stdout.strip().splitlines()[-1]).parent


def ensembles(study_dir: Path, sizes: list[int]) -> dict:
    """The ensemble of each size from the study's kept trials, and the exported scripts."""
    import optuna

    from automodel import config, export, search
    from automodel.checkpoint import Checkpoint
    from automodel.export import ensemble as rendering
    from automodel.search import ensembling, trained
    from automodel.search import refit as refitting
    from automodel.study import ranked
    from automodel.study_export import searched_with

    base = config.to_run_config(config.compose([f"runs_dir={study_dir.parent}"]))
    base.study.name = study_dir.name
    saved = searched_with(base)
    plan = search.prepare(saved)
    summary = json.loads((study_dir / "summary.json").read_text())
    study = optuna.load_study(study_name=saved.study.name, storage=search.open_study_storage(saved))
    cpu = torch.device("cpu")
    trials = ranked(study)[: saved.ensemble.candidates]
    pairs = [trained(plan, t, cpu) for t in trials]
    best = Checkpoint.load(study_dir / "best_model.pt")
    model = best.build_model()
    out = {"summary": summary, "sizes": {}}
    metric = plan.data.spec.metric
    refits: dict = {}  # trial -> its refit (checkpoint, model), shared by the sizes
    rows = refitting.refit_rows(plan, cpu) if summary.get("refit") else None
    for k in sizes:
        chosen = ensembling.choose(plan, pairs, size=k)
        if rows is not None:  # as the search ships it: every member refit
            ensembling.refit(plan, chosen, trials, cpu, refits, rows)
        ensembling.measure(plan, chosen)
        out["sizes"][k] = {
            "test": chosen.test[metric],
            "val": chosen.val[metric],
            "members": len(chosen.members),
            "ships": ensembling.beats(plan, chosen, best, model),
            "chosen": chosen,
        }
    # The scripts a user would ship: the single trial's and the largest ensemble's.
    scripts = study_dir.parent / "scripts"
    for folder in ("single", "ensemble"):
        (scripts / folder).mkdir(parents=True)
    prov = export.provenance(study_dir.name, "benchmark")
    single = export.write(scripts / "single", best.to_dict(), prov, model=model)
    largest = out["sizes"][max(sizes)]["chosen"]
    scores = {"val": largest.val, "test": largest.test}
    joined = rendering.write(
        scripts / "ensemble", largest.members, largest.weights, scores, prov, largest.models
    )
    out["latency"] = latency(single, joined, plan)
    out["latency"]["members"] = len(largest.members)
    return out


def latency(single: Path, joined: Path, plan, repeats: int = 7) -> dict:
    """Milliseconds per 1,000 raw rows through each script's `predict`, one thread."""
    from automodel import data as datalib

    raw = datalib.load_raw_splits(plan.cfg.data, plan.cfg.seed)["x_test"]
    rows = raw[np.arange(1000) % len(raw)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fns = {}
        for name, folder in (("single", single), ("ensemble", joined)):
            script = runpy.run_path(str(folder / "best_model.py"))
            model = script["load_model"]()
            script["predict"](rows, model)  # warm-up

            def timed(script=script, model=model) -> dict:
                start = time.perf_counter()
                script["predict"](rows, model)
                return {"ms": (time.perf_counter() - start) * 1000}

            fns[name] = timed
        results = sbs.interleaved(fns, repeats)
    finally:
        torch.set_num_threads(threads)
    return {name: sbs.median(r, "ms") for name, r in results.items()}


def compare(task: str, ensemble: float, single: float) -> str:
    if task == "regression":
        if abs(ensemble - single) <= 0.005 * max(abs(single), 1e-12):
            return "tie"
        return "win" if ensemble < single else "loss"
    if abs(ensemble - single) < 1e-9:
        return "tie"
    return "win" if ensemble > single else "loss"


def gain(task: str, ensemble: float, single: float) -> float:
    """Accuracy points gained, or % lower RMSE."""
    if task == "regression":
        return 100 * (single - ensemble) / single
    return 100 * (ensemble - single)


def report(records: list[dict], sizes: list[int]) -> str:
    lines = []
    for k in sizes:
        for label, pick in (("ensemble", False), ("shipped", True)):
            counts = {"win": 0, "tie": 0, "loss": 0}
            gains: dict[str, list[float]] = {"classification": [], "regression": []}
            for r in records:
                e = r["sizes"][k]
                test = e["test"] if (e["ships"] or not pick) else r["single"]
                counts[compare(r["task"], test, r["single"])] += 1
                gains[r["task"]].append(gain(r["task"], test, r["single"]))
            n = sum(counts.values())
            share = (counts["win"] + counts["tie"]) / n
            means = ", ".join(
                f"{task} {statistics.mean(g):+.2f} {'points' if task != 'regression' else '%'}"
                for task, g in gains.items()
                if g
            )
            lines.append(
                f"size {k:>2} {label:<8}: {counts['win']} wins, {counts['tie']} ties, "
                f"{counts['loss']} losses ({share:.0%} wins or ties of {n}); mean gain {means}"
            )
    ratios = [r["latency"]["ensemble"] / r["latency"]["single"] for r in records]
    within = sum(
        r["latency"]["ensemble"] <= (r["latency"]["members"] + 1) * r["latency"]["single"]
        for r in records
    )
    lines.append(
        f"latency (largest size): ensemble/single median {statistics.median(ratios):.2f}x, "
        f"max {max(ratios):.2f}x; within (members + 1) x single in {within} of {len(records)}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=35.0)
    parser.add_argument("--sizes", default="3,5,10")
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--extra", default="", help="more automodel overrides, space-separated")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="iris and diabetes, seed 0, 15 s")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.seeds, args.budget = "iris,diabetes", "0", 15.0
    sizes = sorted(int(k) for k in args.sizes.split(","))
    extra = [f"ensemble.size={max(sizes)}", f"ensemble.candidates={args.candidates}"]
    extra += args.extra.split()
    records, rows = [], []
    started = time.monotonic()
    for name in args.datasets.split(","):
        budget = args.budget * BUDGET_SCALE.get(name, 1)
        for seed in (int(s) for s in args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    study_dir = run_search(name, seed, budget, Path(tmp), extra)
                except RuntimeError as err:  # no trial completed in the budget, ...
                    print(f"{name} {seed}: {err}", flush=True)
                    continue
                found = ensembles(study_dir, sizes)
            summary = found["summary"]
            metric = "rmse" if "rmse" in summary["test"] else "accuracy"
            task = "regression" if metric == "rmse" else "classification"
            record = {
                "data": name,
                "seed": seed,
                "task": task,
                "complete": summary["counts"]["complete"],
                "single": summary["test"][metric],
                "single_val": summary["val"][metric],
                "sizes": {
                    k: {key: v for key, v in e.items() if key != "chosen"}
                    for k, e in found["sizes"].items()
                },
                "latency": found["latency"],
            }
            records.append(record)
            cells = [name, seed, metric[:4], record["complete"], record["single"]]
            for k in sizes:
                e = record["sizes"][k]
                cells += [e["test"], f"{e['members']}{'*' if e['ships'] else ''}"]
            cells += [record["latency"]["single"], record["latency"]["ensemble"]]
            rows.append(cells)
            print(sbs.table(headers(sizes), [cells]).splitlines()[-1], flush=True)
            if args.json:  # after every search: a long run that breaks off keeps its figures
                Path(args.json).write_text(json.dumps(records, indent=1))
    minutes = (time.monotonic() - started) / 60
    print(f"\nensembles vs the best trial, budget {args.budget:g} s per search, {sbs.load()}, ")
    print(f"{minutes:.1f} min in all (* : the study ships the ensemble)\n")
    print(sbs.table(headers(sizes), rows))
    print()
    print(report(records, sizes))


def headers(sizes: list[int]) -> list[str]:
    cells = ["data", "seed", "metric", "trials", "single"]
    for k in sizes:
        cells += [f"ens{k}", "members"]
    return [*cells, "ms single", "ms ensemble"]


if __name__ == "__main__":
    main()
