"""Tables side by side: automodel's default search vs gradient boosting vs AutoGluon.

For every table of the offline suite (benchmarks/tables.py) and seed, on the same rows and the
same test split (automodel's own seeded split, which the other two are handed):

- automodel: `python -m automodel search data=csv data.path=<t>.csv data.target=target
  seed=<s> study.timeout=<budget>`, its defaults otherwise; a fresh process, start-up included.
- HistGradientBoosting (scikit-learn) at default settings, fit on the training rows.
- AutoGluon (`TabularPredictor(...).fit(train, time_limit=<budget>)`, its default preset),
  handed the training and validation rows, run by another Python that has it
  (`--autogluon-python`; skipped when absent). Install it apart from automodel:
  `python -m venv /tmp/ag && /tmp/ag/bin/pip install "autogluon.tabular[lightgbm,catboost,xgboost]"`.

Prints per table and seed the test metric (accuracy, or RMSE for regression) and the seconds
each took, then wins/ties/losses of automodel against each peer (a tie: within 0.002
accuracy, or 0.5% RMSE) and the mean normalised score (per pair: 1 for the best of the three,
0 for the worst).

    python benchmarks/tabular.py                               # 60 s, seeds 0,1,2, every table
    python benchmarks/tabular.py --tables iris,diabetes --seeds 0 --budget 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sidebyside as sbs
import tables

AUTOGLUON = r"""
import json, sys, time
import pandas as pd
from autogluon.tabular import TabularPredictor
train, test, problem, budget, workdir, out = sys.argv[1:]
start = time.time()
metric = "root_mean_squared_error" if problem == "regression" else "accuracy"
predictor = TabularPredictor(label="target", problem_type=problem, eval_metric=metric,
                             path=workdir, verbosity=0)
predictor.fit(pd.read_csv(train), time_limit=float(budget))
pred = predictor.predict(pd.read_csv(test).drop(columns=["target"]))
json.dump({"pred": [str(p) if problem != "regression" else float(p) for p in pred],
           "seconds": time.time() - start}, open(out, "w"))
"""


def splits(name: str, seed: int) -> dict:
    """automodel's split of the table: cells, targets, column names, classes."""
    from automodel import data as datalib
    from automodel.config import DataConfig
    from automodel.data import table

    cfg = DataConfig(name=name, source="csv", path=str(tables.path(name)), target="target")
    raw = table.load(cfg)
    out = datalib.load_raw_splits(cfg, seed)
    out["names"] = [c["name"] for c in raw.columns]
    out["classes"] = list(raw.classes)
    out["task"] = raw.task
    out["cfg"] = cfg
    return out


def score(task: str, predicted: np.ndarray, y: np.ndarray) -> float:
    if task == "regression":
        return float(np.sqrt(np.mean((predicted.astype(float) - y.astype(float)) ** 2)))
    return float(np.mean(predicted == y))


def run_automodel(name: str, seed: int, budget: float, workdir: Path, extra: list[str]) -> dict:
    cmd = [
        *(sys.executable, "-m", "automodel", "search", "data=csv"),
        *(f"data.path={tables.path(name)}", "data.target=target", f"seed={seed}"),
        *(f"study.timeout={budget}", f"runs_dir={workdir / 'runs'}", "quiet=true", *extra),
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=sbs.ROOT, capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"}
    summary = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    shipped = summary.get("ensemble") if summary.get("shipped") == "ensemble" else summary
    metric = "rmse" if "rmse" in summary["test"] else "accuracy"
    return {
        "test": shipped["test"][metric],
        "seconds": time.monotonic() - start,
        "stop": summary.get("stop_reason", ""),
        "baseline": (summary.get("baseline") or {}).get("test", {}).get(metric),
    }


def run_boosting(s: dict, seed: int) -> dict:
    import torch
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from automodel import data as datalib
    from automodel.runtime.evaluation import to_units

    data = datalib.load(s["cfg"], seed)
    start = time.monotonic()
    if s["task"] == "regression":
        model = HistGradientBoostingRegressor(random_state=seed)
    else:
        model = HistGradientBoostingClassifier(random_state=seed)
    model.fit(data.x_train.numpy(), data.y_train.numpy())
    predicted = model.predict(data.x_test.numpy())
    if s["task"] == "regression":  # targets are normalised (maybe log1p) for the networks
        spec = data.spec
        predicted = to_units(
            torch.from_numpy(predicted), spec.target_mean, spec.target_std, spec.target_transform
        ).numpy()
    return {"test": score(s["task"], predicted, s["y_test"]), "seconds": time.monotonic() - start}


def run_autogluon(python: str, s: dict, budget: float, workdir: Path) -> dict:
    import pandas as pd

    def write(x, y, path):
        frame = pd.DataFrame(x, columns=s["names"]).replace({"": None})
        labels = y if s["task"] == "regression" else [s["classes"][int(i)] for i in y]
        frame.assign(target=labels).to_csv(path, index=False)

    x_fit = np.concatenate([s["x_train"], s["x_val"]])
    y_fit = np.concatenate([s["y_train"], s["y_val"]])
    write(x_fit, y_fit, workdir / "train.csv")
    write(s["x_test"], s["y_test"], workdir / "test.csv")
    problem = (
        "regression"
        if s["task"] == "regression"
        else "binary"
        if len(s["classes"]) == 2
        else "multiclass"
    )
    script = workdir / "ag.py"
    script.write_text(AUTOGLUON)
    out = workdir / "ag.json"
    start = time.monotonic()
    proc = subprocess.run(
        [python, str(script), str(workdir / "train.csv"), str(workdir / "test.csv"), problem,
         str(budget), str(workdir / "ag"), str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"}
    result = json.loads(out.read_text())
    pred = np.asarray(result["pred"])
    if s["task"] != "regression":
        index = {c: i for i, c in enumerate(s["classes"])}
        pred = np.array([index[p] for p in pred])
    return {"test": score(s["task"], pred, s["y_test"]), "seconds": time.monotonic() - start}


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(sbs.ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def compare(task: str, a: float, b: float) -> str:
    """win, tie or loss of `a` against `b`."""
    if task == "regression":
        if abs(a - b) <= 0.005 * max(abs(b), 1e-12):
            return "tie"
        return "win" if a < b else "loss"
    if abs(a - b) <= 0.002:
        return "tie"
    return "win" if a > b else "loss"


def normalised(task: str, scores: dict[str, float]) -> dict[str, float]:
    values = list(scores.values())
    best, worst = (min(values), max(values)) if task == "regression" else (max(values), min(values))
    if best == worst:
        return dict.fromkeys(scores, 1.0)
    return {k: (v - worst) / (best - worst) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(tables.SUITE))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=60.0)
    # Where the README and the issue install it: a default path, not a file written there.
    parser.add_argument("--autogluon-python", default="/tmp/ag/bin/python")  # noqa: S108
    parser.add_argument("--extra", default="", help="more automodel overrides, space-separated")
    args = parser.parse_args()
    names, seeds = args.tables.split(","), [int(s) for s in args.seeds.split(",")]
    ag = args.autogluon_python if Path(args.autogluon_python).is_file() else None
    if ag is None:
        print(f"AutoGluon skipped: no python at {args.autogluon_python}", file=sys.stderr)
    rows, records = [], []
    for name in names:
        for seed in seeds:
            s = splits(name, seed)
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                result = {
                    "automodel": run_automodel(name, seed, args.budget, work, args.extra.split())
                }
                result["hgb"] = run_boosting(s, seed)
                if ag:
                    result["autogluon"] = run_autogluon(ag, s, args.budget, work)
            records.append((name, seed, s["task"], result))
            cells = [name, seed, "rmse" if s["task"] == "regression" else "acc"]
            for key in ("automodel", "hgb", "autogluon"):
                r = result.get(key, {})
                cells += [r.get("test", r.get("error", "-")), r.get("seconds", "-")]
                if key == "automodel":  # why the search ended: the budget or convergence
                    cells.append(r.get("stop") or "-")
            rows.append(cells)
            print(sbs.table(_headers(), [cells]).splitlines()[-1], flush=True)
    print(f"\ntables side by side, budget {args.budget:g} s, {sbs.load()}\n")
    print(sbs.table(_headers(), rows))
    print()
    print(summary(records))


def _headers() -> list[str]:
    return ["table", "seed", "metric", "automodel", "s", "stop", "HGB", "s", "AutoGluon", "s"]


def summary(records: list) -> str:
    lines = []
    for peer in ("hgb", "autogluon"):
        counts = {"win": 0, "tie": 0, "loss": 0}
        for _, _, task, r in records:
            if "test" in r.get(peer, {}) and "test" in r["automodel"]:
                counts[compare(task, r["automodel"]["test"], r[peer]["test"])] += 1
        n = sum(counts.values())
        if n:
            share = (counts["win"] + counts["tie"]) / n
            lines.append(
                f"automodel vs {peer}: {counts['win']} wins, {counts['tie']} ties, "
                f"{counts['loss']} losses ({share:.0%} wins or ties of {n})"
            )
    means: dict[str, list[float]] = {}
    for _, _, task, r in records:
        scores = {k: v["test"] for k, v in r.items() if "test" in v}
        if len(scores) >= 2:
            for k, v in normalised(task, scores).items():
                means.setdefault(k, []).append(v)
    lines.append(
        "mean normalised score: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in means.items())
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
