"""EXPERIMENTAL stacked training: k candidates at once (experimental/stacked.py) against one at a
time (`train.fit`), side by side.

The candidates share an architecture and differ in learning rate (a log grid); both ways
train each for the same epochs and batch size on the same data, on one thread (a worker's
share). Reports candidates trained per minute, the ratio, and the best validation accuracy
of each way (they should agree: the same models, initial weights and batches).

    python benchmarks/stacked.py                 # k = 1, 4, 8; 3 interleaved repeats
    python benchmarks/stacked.py --quick
"""

from __future__ import annotations

import argparse
import functools
import time

import sidebyside as sbs
import torch
from experimental import stacked  # benchmarks/experimental/: like sidebyside, beside this file

from automodel import data as datalib
from automodel import models, train
from automodel.config import DataConfig

ARCHS = {
    "mlp/mnist1d": ("mlp", "mnist1d", {"depth": 2, "width_l0": 256, "width_l1": 128}),
    "small mlp/digits": ("mlp", "digits", {"depth": 1, "width": 64}),
    "cnn/mnist1d": (
        "cnn",
        "mnist1d",
        {"blocks": 2, "channels": 32, "kernel_size": 5, "head_width": 64},
    ),
}


def candidates(case: str, k: int, data) -> tuple[list, list[float]]:
    family, _, params = ARCHS[case]
    built = []
    for i in range(k):
        torch.manual_seed(i)
        built.append(models.create(family, params, data.spec))
    return built, [1e-3 * 2 ** (i / 2) for i in range(k)]


def one_at_a_time(case: str, k: int, data, epochs: int) -> dict:
    built, lrs = candidates(case, k, data)
    start = time.perf_counter()
    best = [
        train.fit(m, data, train.Recipe.from_params({"lr": lr}, epochs, seed=0)).best_value
        for m, lr in zip(built, lrs, strict=True)
    ]
    return {"per_min": k / (time.perf_counter() - start) * 60, "best": max(best)}


def together(case: str, k: int, data, epochs: int) -> dict:
    built, lrs = candidates(case, k, data)
    start = time.perf_counter()
    results = stacked.fit_stacked(built, data, lrs, epochs=epochs, batch_size=64, seed=0)
    seconds = time.perf_counter() - start
    return {"per_min": k / seconds * 60, "best": max(r.best_value for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default="1,4,8", help="candidates trained together")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="k = 4, 1 epoch, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.ks, args.epochs, args.repeats = "4", 1, 1
    torch.set_num_threads(1)
    ks = [int(k) for k in args.ks.split(",")]
    datasets = {name: datalib.load(DataConfig(name=name), seed=0) for _, name, _ in ARCHS.values()}
    print(
        f"stacked training, batch 64, {args.epochs} epochs, 1 thread, {args.repeats} "
        f"interleaved repeats; {sbs.load()}\n",
        flush=True,
    )
    headers = ["model/data", "k", "one at a time /min", "stacked /min", "speed-up"]
    headers += ["best val (one / stacked)"]
    rows = []
    for case, (_, name, _) in ARCHS.items():
        data = datasets[name]
        for k in ks:
            runs = {
                "one": functools.partial(one_at_a_time, case, k, data, args.epochs),
                "stacked": functools.partial(together, case, k, data, args.epochs),
            }
            for run in runs.values():  # warm-up: first-call costs stay out
                candidates(case, 1, data)
                run()
            res = sbs.interleaved(runs, args.repeats)
            a, b = sbs.median(res["one"], "per_min"), sbs.median(res["stacked"], "per_min")
            best = f"{res['one'][0]['best']:.4f} / {res['stacked'][0]['best']:.4f}"
            rows.append([case, k, a, b, b / a, best])
            print(sbs.table(headers, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(sbs.table(headers, rows))
    print(f"\ncandidates per minute, medians; {sbs.load()}")


if __name__ == "__main__":
    main()
