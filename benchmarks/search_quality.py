"""Search quality per budget: `python -m automodel search` against the classic Optuna example.

Both get the same wall-clock budget on the same machine (all its cores) and the same MNIST-1D
splits, and are scored by the held-out test accuracy of the model each picked (by validation
accuracy). Each run is a fresh process, so start-up counts against the budget for both.

- automodel: `python -m automodel search data=mnist1d seed=<s> study.timeout=<budget>`, its
  default search in every other respect.
- the Optuna example approach (optuna-examples `pytorch/pytorch_simple.py`, rewritten here from
  its description): an MLP of 1-3 layers of 4-128 units with dropout 0.2-0.5 per layer, Adam,
  RMSprop or SGD with a learning rate in 1e-5..1e-1 (log), 10 epochs of a DataLoader loop with
  batch 128, TPE (seeded) and Optuna's default median pruner, `study.optimize(timeout=...)`.

Optuna's timeout and automodel's both stop *starting* trials at the budget; the trials running
then finish, so the table reports the wall time each approach really took.

    python benchmarks/search_quality.py                      # 300 s budget, seeds 0,1,2
    python benchmarks/search_quality.py --budget 120 --seeds 0
    python benchmarks/search_quality.py --quick              # 45 s, one seed: a smoke run
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

BATCH_SIZE = 128
EPOCHS = 10


def run_automodel(seed: int, budget: float, workdir: Path, extra: list[str]) -> dict:
    runs = workdir / f"automodel-{seed}"
    cmd = [
        *(sys.executable, "-m", "automodel", "search", "data=mnist1d", f"seed={seed}"),
        *(f"study.timeout={budget}", f"runs_dir={runs}", "quiet=true", *extra),
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=sbs.ROOT, env=_env(), capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"automodel search failed:\n{proc.stderr[-2000:]}")
    summary = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    c = summary["counts"]
    return {
        "test": summary["test"]["accuracy"],
        "val": summary["val"]["accuracy"],
        "trials": f"{c['complete']}+{c['pruned']}p",
        "wall": wall,
        "best": f"{summary['family']} #{summary['best_trial']}",
    }


def run_baseline(seed: int, budget: float, workdir: Path) -> dict:
    out = workdir / f"baseline-{seed}.json"
    cmd = [sys.executable, __file__, "--baseline-run", str(seed), "--budget", str(budget)]
    start = time.monotonic()
    proc = subprocess.run(
        [*cmd, "--out", str(out)], cwd=sbs.ROOT, env=_env(), capture_output=True, text=True
    )
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"baseline failed:\n{proc.stderr[-2000:]}")
    return {**json.loads(out.read_text()), "wall": wall}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(sbs.ROOT)}


def baseline_main(seed: int, budget: float, out: Path) -> None:
    """The Optuna example's approach on MNIST-1D; writes the best trial's scores to `out`."""
    start = time.monotonic()
    import optuna
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from automodel import data as datalib
    from automodel.config import DataConfig

    data = datalib.load(DataConfig(name="mnist1d"), seed)  # automodel's splits for this seed
    train_set = TensorDataset(data.x_train.flatten(1), data.y_train)
    val_set = TensorDataset(data.x_val.flatten(1), data.y_val)
    best = {"val": -1.0, "model": None}

    def define_model(trial):
        layers, width = [], data.x_train[0].numel()
        for i in range(trial.suggest_int("n_layers", 1, 3)):
            units = trial.suggest_int(f"n_units_l{i}", 4, 128)
            p = trial.suggest_float(f"dropout_l{i}", 0.2, 0.5)
            layers += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(p)]
            width = units
        layers += [nn.Linear(width, data.spec.n_classes), nn.LogSoftmax(dim=1)]
        return nn.Sequential(*layers)

    def accuracy(model, dataset) -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in DataLoader(dataset, batch_size=BATCH_SIZE):
                correct += (model(x).argmax(1) == y).sum().item()
        return correct / len(dataset)

    def objective(trial):
        model = define_model(trial)
        name = trial.suggest_categorical("optimizer", ["Adam", "RMSprop", "SGD"])
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        optimizer = getattr(torch.optim, name)(model.parameters(), lr=lr)
        loader = DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True)
        for epoch in range(EPOCHS):
            model.train()
            for x, y in loader:
                optimizer.zero_grad()
                loss = F.nll_loss(model(x), y)
                loss.backward()
                optimizer.step()
            value = accuracy(model, val_set)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        if value > best["val"]:  # what a user keeps to ship: the best trial's model
            best.update(val=value, model=model)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.manual_seed(seed)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
    )  # the default pruner: MedianPruner
    study.optimize(objective, timeout=max(1.0, budget - (time.monotonic() - start)))
    test = accuracy(best["model"], TensorDataset(data.x_test.flatten(1), data.y_test))
    states = [t.state.name for t in study.trials]
    out.write_text(
        json.dumps(
            {
                "test": test,
                "val": best["val"],
                "trials": f"{states.count('COMPLETE')}+{states.count('PRUNED')}p",
                "best": f"mlp #{study.best_trial.number}",
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per search")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--quick", action="store_true", help="45 s budget, seed 0")
    parser.add_argument(
        "--automodel-args", default="", help="extra overrides for automodel, space-separated"
    )
    parser.add_argument(
        "--only", choices=["automodel", "optuna example"], help="run one approach (for tuning)"
    )
    parser.add_argument("--baseline-run", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_run is not None:
        baseline_main(args.baseline_run, args.budget, args.out)
        return
    if args.quick:
        args.budget, args.seeds = 45.0, "0"
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = args.automodel_args.split()
    print(
        f"search quality on mnist1d: {args.budget:g} s budget per search, seeds {seeds}; "
        f"{sbs.load()}\n",
        flush=True,
    )
    headers = ["approach", "seed", "test acc", "val acc", "trials", "best", "wall s"]
    results: dict[str, list[dict]] = {"optuna example": [], "automodel": []}
    if args.only:
        results = {args.only: []}
    rows = []
    with tempfile.TemporaryDirectory(prefix="search-quality-") as tmp:
        for i, seed in enumerate(seeds):
            order = list(results) if i % 2 == 0 else list(results)[::-1]
            for name in order:
                if name == "automodel":
                    r = run_automodel(seed, args.budget, Path(tmp), extra)
                else:
                    r = run_baseline(seed, args.budget, Path(tmp))
                results[name].append(r)
                rows.append([name, seed, r["test"], r["val"], r["trials"], r["best"], r["wall"]])
                print(sbs.table(headers, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(sbs.table(headers, rows))
    medians = {k: statistics.median(r["test"] for r in v) for k, v in results.items()}
    print("\nmedian test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in medians.items()))
    if len(medians) == 2:
        print(
            f"automodel - optuna example: {medians['automodel'] - medians['optuna example']:+.4f}"
        )
    print(sbs.load())


if __name__ == "__main__":
    main()
