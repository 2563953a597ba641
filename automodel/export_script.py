r"""The fixed parts of an exported best_model.py: its imports and everything after `Model`.

`export.render` writes the provenance docstring, then IMPORTS, then the generated constants
(INPUT_SHAPE, MEAN, STD, CLASSES, COLUMNS, the recipe), `make_optimizer` and `Model`, then
RUNTIME. RUNTIME only reads those names; no value is ever substituted into it. It is formatted
for ruff's default line length (88) so that the generated file is stable under `ruff format`.

RUNTIME reproduces automodel's own numerics: `prepare` is data.prepare's float32 normalisation,
`evaluate` is train.evaluate's batched accuracy, `train` is train.fit's loop (seed before the
model is built, seeded permutation batches, the final single-row batch dropped, per-epoch
schedule, best-validation-epoch weights kept).
"""

IMPORTS = """\
from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
"""

RUNTIME = r'''
HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights.pt"
EVAL_BATCH_SIZE = 2048  # as the search evaluated


def load_model(weights: str | Path = WEIGHTS) -> Model:
    """The trained network, in eval mode.

    weights_only=True: the weights file can hold tensors only, never code.
    """
    model = Model()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def prepare(rows) -> torch.Tensor:
    """Raw rows -> model inputs: reshaped to INPUT_SHAPE, then (x - MEAN) / STD.

    The same float32 operations as the search's, so the inputs match it bit for bit.
    """
    x = np.asarray(rows, dtype=np.float32)
    size = math.prod(INPUT_SHAPE)
    if x.ndim == 0 or math.prod(x.shape[1:] if x.ndim > 1 else x.shape) != size:
        raise ValueError(
            f"each input row needs {size} values (reshaped to {INPUT_SHAPE}), "
            f"got an array of shape {x.shape}"
        )
    x = x.reshape(-1, *INPUT_SHAPE)
    # One value per feature of a table, else one per channel of a sequence or an image.
    per = INPUT_SHAPE if len(INPUT_SHAPE) == 1 else (-1,) + (1,) * (x.ndim - 2)
    mean = np.asarray(MEAN, dtype=np.float32).reshape(per)
    std = np.asarray(STD, dtype=np.float32).reshape(per)
    return torch.from_numpy((x - mean) / std)


def predict(rows, model: nn.Module | None = None) -> tuple[list[str], np.ndarray]:
    """The predicted class name of each raw row, and the class probabilities.

    Probabilities have one column per name in CLASSES, in that order.
    """
    model = load_model() if model is None else model
    scores = _scores(model, prepare(rows))
    labels = [CLASSES[i] for i in scores.argmax(1).tolist()]
    return labels, torch.softmax(scores, dim=1).numpy()


def evaluate(rows, labels, model: nn.Module | None = None) -> float:
    """The accuracy on raw rows and their labels, computed as the search computed it."""
    model = load_model() if model is None else model
    x = prepare(rows)
    return _accuracy(model, x, _targets(labels, len(x)))


def train(
    rows,
    labels,
    val_rows=None,
    val_labels=None,
    *,
    epochs: int = EPOCHS,
    seed: int = SEED,
    log=print,
) -> tuple[Model, float | None]:
    """Train a new Model from scratch with the recorded recipe.

    The search's own loop: the seed is set just before the model is built (same initial
    weights), the optimizer is built the same way, batches follow a seeded permutation, a
    final batch of a single row is dropped (batch norm needs two), the schedule steps once
    an epoch, and with validation rows the weights of the best validation epoch are kept.
    On a CPU, with the same data and seed, it reproduces the trial.

    Returns the model (in eval mode) and its best validation accuracy (None without
    validation rows, in which case the last epoch's weights are kept).
    """
    x = prepare(rows)
    y = _targets(labels, len(x))
    val = None
    if val_rows is not None:
        val_x = prepare(val_rows)
        val = val_x, _targets(val_labels, len(val_x))
    n = len(x)
    if BATCH_SIZE > n:
        raise ValueError(f"BATCH_SIZE {BATCH_SIZE} exceeds the {n} training rows")
    torch.manual_seed(seed)
    model = Model()
    optimizer = make_optimizer(model)
    schedule = None
    if SCHEDULE == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    order = torch.Generator()
    order.manual_seed(seed)
    n_used = n - 1 if n % BATCH_SIZE == 1 else n
    best, best_state = -math.inf, None
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=order)
        total = torch.zeros(())
        for i in range(0, n_used, BATCH_SIZE):
            idx = perm[i : min(i + BATCH_SIZE, n_used)]
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        train_loss = float(total) / n_used
        if not math.isfinite(train_loss):
            raise ValueError(f"the training loss became {train_loss} in epoch {epoch}")
        if schedule is not None:
            schedule.step()
        line = f"epoch {epoch}/{epochs}  train_loss {train_loss:.4f}"
        if val is not None:
            value = _accuracy(model, *val)
            line += f"  val_accuracy {value:.4f}"
            if value > best:
                best, best_state = value, copy.deepcopy(model.state_dict())
        log(line)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), (best if val is not None else None)


def read_rows(path: str | Path) -> np.ndarray:
    """Raw input rows from a .npy file or a .csv file (a header row is optional)."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    header, rows = _read_csv(path)
    if header is not None and COLUMNS is not None:
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}")
        rows = [[row[header.index(c)] for c in COLUMNS] for row in rows]
    return np.asarray(rows, dtype=np.float64)


def read_labels(path: str | Path) -> np.ndarray:
    """Labels from a .npy file or a one-column .csv file (a header row is optional)."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    _, rows = _read_csv(path, is_value=_is_label)
    return np.asarray([row[0] for row in rows])


def encode_labels(labels) -> np.ndarray:
    """Class indices (int64) from class names in CLASSES or from indices."""
    values = np.asarray(labels).reshape(-1)
    if values.dtype.kind in "iuf":
        y = values.astype(np.int64)
        if (y != values).any():
            raise ValueError("numeric labels must be whole class indices")
    else:
        y = np.array([_label_index(str(v)) for v in values], dtype=np.int64)
    bad = (y < 0) | (y >= len(CLASSES))
    if bad.any():
        last = len(CLASSES) - 1
        raise ValueError(f"label {y[bad][0]} is not a class index 0..{last}")
    return y


def _targets(labels, n: int) -> torch.Tensor:
    y = encode_labels(labels)
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} input rows")
    return torch.from_numpy(y)


def _label_index(value: str) -> int:
    if value in CLASSES:
        return CLASSES.index(value)
    try:
        return int(value)
    except ValueError:
        known = ", ".join(map(repr, CLASSES))
        raise ValueError(f"unknown label {value!r}; classes: {known}") from None


def _is_label(value: str) -> bool:
    return value in CLASSES or value.strip().lstrip("-").isdigit()


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, is_value=_is_number) -> tuple[list[str] | None, list]:
    """(header or None, rows); the first row is a header when it does not hold values."""
    if path.suffix != ".csv":
        raise ValueError(f"expected a .npy or a .csv file, got {str(path)!r}")
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if rows and not all(is_value(v) for v in rows[0]):
        return rows[0], rows[1:]
    return None, rows


def _scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    starts = range(0, len(x), EVAL_BATCH_SIZE)
    with torch.inference_mode():
        return torch.cat([model(x[i : i + EVAL_BATCH_SIZE]) for i in starts])


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((_scores(model, x).argmax(1) == y).float().mean())


def _write_predictions(labels: list[str], probabilities: np.ndarray, out) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", *CLASSES])
    for label, row in zip(labels, probabilities):
        writer.writerow([label, *(f"{p:.6g}" for p in row)])


def _predict_command(args) -> None:
    labels, probabilities = predict(read_rows(args.input), load_model(args.weights))
    if args.output is None:
        _write_predictions(labels, probabilities, sys.stdout)
        return
    with open(args.output, "w", newline="") as f:
        _write_predictions(labels, probabilities, f)
    print(f"wrote {len(labels)} predictions to {args.output}", file=sys.stderr)


def _evaluate_command(args) -> None:
    rows, labels = read_rows(args.input), read_labels(args.labels)
    print(f"accuracy {evaluate(rows, labels, load_model(args.weights))}")


def _train_command(args) -> None:
    if (args.val_input is None) != (args.val_labels is None):
        raise ValueError("give both --val-input and --val-labels, or neither")
    val_rows = val_labels = None
    if args.val_input is not None:
        val_rows, val_labels = read_rows(args.val_input), read_labels(args.val_labels)
    model, best = train(
        read_rows(args.input),
        read_labels(args.labels),
        val_rows,
        val_labels,
        epochs=args.epochs,
        seed=args.seed,
        log=lambda line: print(line, file=sys.stderr),
    )
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, out)
    if best is not None:
        print(f"best val_accuracy {best}")
    print(f"wrote {out}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="A network found by an automodel search: predict with it, "
        "evaluate it, or retrain it with its recorded recipe.",
        epilog="examples:\n"
        "  python best_model.py predict --input X.npy --output predictions.csv\n"
        "  python best_model.py evaluate --input X.csv --labels y.csv\n"
        "  python best_model.py train --input X.npy --labels y.npy "
        "--val-input Xv.npy --val-labels yv.npy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    rows = "raw input rows: .npy, or .csv (a header row is optional)"
    labels = "labels: .npy or one-column .csv of class names or indices"
    weights = "weights to load (default: weights.pt next to this file)"
    p = commands.add_parser("predict", help="predicted class and class probabilities")
    p.add_argument("--input", required=True, help=rows)
    p.add_argument("--output", help="CSV to write (default: standard output)")
    p.add_argument("--weights", default=str(WEIGHTS), help=weights)
    p.set_defaults(run=_predict_command)
    e = commands.add_parser("evaluate", help="print the accuracy on labelled rows")
    e.add_argument("--input", required=True, help=rows)
    e.add_argument("--labels", required=True, help=labels)
    e.add_argument("--weights", default=str(WEIGHTS), help=weights)
    e.set_defaults(run=_evaluate_command)
    t = commands.add_parser("train", help="retrain with the recorded recipe and seed")
    t.add_argument("--input", required=True, help=rows)
    t.add_argument("--labels", required=True, help=labels)
    t.add_argument("--val-input", help="validation rows: keep the best epoch's weights")
    t.add_argument("--val-labels", help="labels of the validation rows")
    t.add_argument("--epochs", type=int, default=EPOCHS, help="default: %(default)s")
    t.add_argument("--seed", type=int, default=SEED, help="default: %(default)s")
    t.add_argument("--output", default="retrained.pt", help="default: %(default)s")
    t.set_defaults(run=_train_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
