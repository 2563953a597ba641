"""Trainer throughput: automodel's `train.fit` against the textbook PyTorch loop, side by side.

The textbook loop is the one of the PyTorch tutorials: a `DataLoader` over a `TensorDataset`
(batch 64, shuffled), `optimizer.zero_grad()`, `loss.item()` every step, the default
(for-loop) Adam, and an evaluation pass over a validation `DataLoader` every epoch. Both train
the same model from the same initial weights on the same data, with the same batch size,
learning rate and number of epochs; the table reports training samples per second (whole
epochs, evaluation included) and the accuracy each reached, so a speed-up that costs accuracy
would show.

    python benchmarks/trainer_throughput.py            # 10 epochs, 5 repeats, 1 thread
    python benchmarks/trainer_throughput.py --quick    # 3 epochs, 3 repeats: a smoke run
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time

import sidebyside as sbs
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from automodel import data as datalib
from automodel import models, train
from automodel.config import DataConfig

# The known-good first trials of search_spaces/*.yaml, without their training params.
MODELS = {
    "mlp": {"depth": 2, "width_l0": 256, "width_l1": 128, "activation": "relu", "dropout": 0.1},
    "cnn": {
        "blocks": 3,
        "channels_l0": 32,
        "channels_l1": 64,
        "channels_l2": 64,
        "kernel_size": 5,
        "pooling": "max",
        "activation": "gelu",
        "batch_norm": True,
        "dropout": 0.1,
        "head_width": 128,
    },
}
# The same MLP without dropout: CPU dropout draws its masks with a slow generator (a quarter
# of the MLP's step), a cost both loops share; this row shows the loops without it.
MODELS["mlp-nodrop"] = {**MODELS["mlp"], "dropout": 0.0}
CASES = [
    ("mlp", "mnist1d"),
    ("mlp-nodrop", "mnist1d"),
    ("cnn", "mnist1d"),
    ("mlp", "digits"),
    ("cnn", "digits"),
]
LR = 2e-3


def textbook_fit(model: nn.Module, data, epochs: int, batch_size: int) -> float:
    """What the tutorials write; returns the last epoch's validation accuracy."""
    train_loader = DataLoader(
        TensorDataset(data.x_train, data.y_train), batch_size=batch_size, shuffle=True
    )
    val_loader = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=batch_size)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        running_loss = 0.0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x).argmax(1) == y).sum().item()
        accuracy = correct / len(data.y_val)
    return accuracy


def automodel_fit(model: nn.Module, data, epochs: int, batch_size: int, compile=False) -> float:
    recipe = train.Recipe.from_params({"lr": LR, "batch_size": batch_size}, epochs, seed=0)
    return train.fit(model, data, recipe, compile=compile).history[-1].value


def compiled_fit(model: nn.Module, data, epochs: int, batch_size: int) -> float:
    return automodel_fit(model, data, epochs, batch_size, compile=True)


def measure(fit, family: str, data, epochs: int, batch_size: int, seed: int) -> dict:
    torch.manual_seed(seed)  # the same initial weights for both loops
    model = models.create(family.split("-")[0], MODELS[family], data.spec)
    start = time.perf_counter()
    val = fit(model, data, epochs, batch_size)
    seconds = time.perf_counter() - start
    test = train.evaluate(model, data.x_test, data.y_test, data.spec)["accuracy"]
    return {"samples_per_s": epochs * len(data.x_train) / seconds, "val": val, "test": test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs, 3 repeats")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a worker's share)")
    parser.add_argument(
        "--cases",
        default=",".join(f"{f}/{d}" for f, d in CASES),
        help="comma-separated model/data pairs (default: all four)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also measure train.fit(compile=True)"
    )
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 3, 3
    if args.compile:  # compile cold, as a search's new architectures do: no on-disk cache hits
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))
    torch.set_num_threads(args.threads)
    cases = [tuple(c.split("/")) for c in args.cases.split(",")]
    datasets = {name: datalib.load(DataConfig(name=name), seed=0) for _, name in cases}
    print(
        f"trainer throughput: {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.threads} thread(s), {args.repeats} interleaved repeats; {sbs.load()}\n"
    )
    headers = ["model/data", "textbook samples/s", "automodel samples/s", "speed-up", "range"]
    if args.compile:
        headers += ["compiled samples/s", "speed-up", "range"]
    headers += ["val acc", "test acc"]
    rows, notes = [], []
    for family, name in cases:
        data = datasets[name]
        fits = {"textbook": textbook_fit, "automodel": automodel_fit}
        if args.compile:
            fits["compiled"] = compiled_fit
        warm = {}  # first-call costs (lazy imports, kernel caches, compiling) stay out
        for key, fit in fits.items():
            start = time.perf_counter()
            measure(fit, family, data, 1, args.batch_size, seed=0)
            warm[key] = time.perf_counter() - start
        if args.compile:
            notes.append(
                f"{family}/{name}: the first compiled 1-epoch fit took "
                f"{warm['compiled'] - warm['automodel']:.1f} s longer than the eager one (compiling)"
            )
        runs = {
            k: functools.partial(measure, f, family, data, args.epochs, args.batch_size, 0)
            for k, f in fits.items()
        }
        res = sbs.interleaved(runs, args.repeats)
        base = res["textbook"]
        row = [f"{family}/{name}", sbs.median(base, "samples_per_s")]
        for key in fits:
            if key == "textbook":
                continue
            ours = res[key]
            ratios = sorted(
                b["samples_per_s"] / a["samples_per_s"] for a, b in zip(base, ours, strict=True)
            )
            row += [
                sbs.median(ours, "samples_per_s"),
                sbs.median(ours, "samples_per_s") / sbs.median(base, "samples_per_s"),
                f"{ratios[0]:.2f}..{ratios[-1]:.2f}",
            ]
        row += [
            " / ".join(f"{sbs.median(res[k], 'val'):.4f}" for k in fits),
            " / ".join(f"{sbs.median(res[k], 'test'):.4f}" for k in fits),
        ]
        rows.append(row)
        print(sbs.table(headers, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(sbs.table(headers, rows))
    print("\n".join(["", *notes, sbs.load()]))
    print(
        "samples/s: training rows x epochs / wall seconds of the whole fit (evaluation "
        "included); speed-up: ratio of the medians, range: per-repeat ratios. Accuracies: "
        "textbook / automodel (/ compiled), medians; val is the last epoch's, test is the returned model's "
        "(automodel restores its best epoch)."
    )


if __name__ == "__main__":
    main()
