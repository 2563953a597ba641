r"""The fixed parts of an exported best_model.py: its imports and everything after `Model`.

`export.render` writes the provenance docstring, then IMPORTS, then the generated constants
(TASK, INPUT_SHAPE, MEAN, STD, CLASSES, TARGET_MEAN, TARGET_STD, COLUMNS, TARGET, IMAGE_MODE,
the recipe), `make_optimizer`, `make_loss`, `new_model` and `Model`, then RUNTIME. RUNTIME only
reads those names; no value is ever substituted into it. It is formatted for ruff's default
line length (88) so that the generated file is stable under `ruff format`.

RUNTIME reproduces automodel's own numerics: `encode` is data.table's encoding of CSV cells,
`read_images` is data.images' reading of image files, `prepare` is data.prepare's float32
normalisation, `evaluate` is train.evaluate's batched metrics (metrics.py), `train` is
train.fit's loop (seed before the model is built, seeded permutation batches, augmentation
drawn from the same generator, the final single-row batch dropped, per-epoch schedule,
best-validation-epoch weights kept).
"""

IMPORTS = """\
from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
"""

RUNTIME = r'''
HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights.pt"
EVAL_BATCH_SIZE = 2048  # as the search evaluated
# The metric the search selected on: the higher accuracy, or the lower rmse.
METRIC = "accuracy" if TASK == "classification" else "rmse"
# CSV cells that count as missing (after stripping spaces), as in the search.
MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "?")
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def load_model(weights: str | Path = WEIGHTS) -> Model:
    """The trained network, in eval mode.

    weights_only=True: the weights file can hold tensors only, never code.
    """
    model = Model()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def prepare(rows) -> torch.Tensor:
    """Raw rows -> model inputs: table cells encoded (COLUMNS), reshaped to INPUT_SHAPE,
    then (x - MEAN) / STD.

    The same float32 operations as the search's, so the inputs match it bit for bit.
    """
    x = np.asarray(encode(rows) if COLUMNS is not None else rows, dtype=np.float32)
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


def encode(rows) -> np.ndarray:
    """Raw table cells, one per entry of COLUMNS and in that order -> numeric features.

    numeric: the number, or its fill value when the cell is missing (then a 0/1 missing
    indicator when the column has one); onehot: a 0/1 feature per level (all 0 for a
    missing or unseen level); hash: a 0/1 feature per bucket, picked by the text's CRC-32.
    """
    rows = [list(row) for row in rows]
    out = np.zeros((len(rows), math.prod(INPUT_SHAPE)), dtype=np.float64)
    for i, row in enumerate(rows):
        if len(row) != len(COLUMNS):
            names = [c[0] for c in COLUMNS]
            raise ValueError(f"row {i} has {len(row)} cells; expected one per {names}")
        j = 0
        for cell, (name, kind, *settings) in zip(row, COLUMNS):
            text = str(cell).strip()
            missing = text in MISSING
            if kind == "numeric":
                fill, indicator = settings
                out[i, j] = fill if missing else _number(text, name, i)
                if indicator:
                    out[i, j + 1] = float(missing)
                j += 1 + indicator
            elif kind == "onehot":
                levels = settings[0]
                if text in levels:
                    out[i, j + levels.index(text)] = 1.0
                j += len(levels)
            else:
                buckets = settings[0]
                if not missing:
                    out[i, j + zlib.crc32(text.encode("utf-8")) % buckets] = 1.0
                j += buckets
    return out


def _number(text: str, column: str, row: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(
            f"column {column!r}, row {row}: {text!r} is not a finite number"
        )
    return value


def read_images(paths) -> np.ndarray:
    """Image files -> raw rows of pixel values (channels first), as the search read them:
    converted to IMAGE_MODE and resized (bilinear) to INPUT_SHAPE's height and width."""
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(
            "reading image files needs Pillow: pip install pillow"
        ) from None
    height, width = INPUT_SHAPE[1:]
    rows = []
    for path in paths:
        with Image.open(path) as image:
            if image.mode != IMAGE_MODE:
                image = image.convert(IMAGE_MODE)
            if image.size != (width, height):
                image = image.resize((width, height), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
        rows.append(pixels.reshape(height, width, -1).transpose(2, 0, 1).reshape(-1))
    return np.stack(rows).astype(np.float32)


def predict(rows, model: nn.Module | None = None) -> tuple[list, np.ndarray | None]:
    """Predictions for raw rows: (class names, class probabilities) for a classifier, with
    one probability column per name in CLASSES; (numbers, None) for a regression."""
    model = load_model() if model is None else model
    scores = _scores(model, prepare(rows))
    if TASK == "regression":
        values = scores[:, 0].double().numpy() * TARGET_STD + TARGET_MEAN
        return values.tolist(), None
    labels = [CLASSES[i] for i in scores.argmax(1).tolist()]
    return labels, torch.softmax(scores, dim=1).numpy()


def evaluate(rows, labels, model: nn.Module | None = None) -> dict[str, float]:
    """Every metric on raw rows and their labels, computed as the search computed it."""
    model = load_model() if model is None else model
    x = prepare(rows)
    return _metrics(model, x, targets(labels, len(x)))


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
    """Train a new Model with the recorded recipe.

    The search's own loop: the seed is set just before the model is built (same initial
    weights), the optimizer and the loss are built the same way, batches follow a seeded
    permutation (and augmentation draws from the same generator), a final batch of a single
    row is dropped (batch norm needs two), the schedule steps once an epoch, and with
    validation rows the weights of the best validation epoch are kept. On a CPU, with the
    same data and seed, it reproduces the trial.

    Returns the model (in eval mode) and its best validation METRIC (None without
    validation rows, in which case the last epoch's weights are kept).
    """
    x = prepare(rows)
    y = targets(labels, len(x))
    val = None
    if val_rows is not None:
        val_x = prepare(val_rows)
        val = val_x, targets(val_labels, len(val_x))
    n = len(x)
    if BATCH_SIZE > n:
        raise ValueError(f"BATCH_SIZE {BATCH_SIZE} exceeds the {n} training rows")
    torch.manual_seed(seed)
    model = new_model()
    # Channels-last for 2D convolutions, as the search trained (faster, and the same floats).
    conv2d = any(isinstance(m, nn.Conv2d) for m in model.modules())
    layout = torch.channels_last if conv2d else torch.contiguous_format
    model.to(memory_format=layout)
    if x.dim() == 4:
        x = x.contiguous(memory_format=layout)
        if val is not None:
            val = val[0].contiguous(memory_format=layout), val[1]
    optimizer = make_optimizer(model)
    schedule = None
    if SCHEDULE == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = make_loss()
    order = torch.Generator()
    order.manual_seed(seed)
    n_used = n - 1 if n % BATCH_SIZE == 1 else n
    best = -math.inf if METRIC == "accuracy" else math.inf
    best_state = None
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=order)
        total = torch.zeros(())
        for i in range(0, n_used, BATCH_SIZE):
            idx = perm[i : min(i + BATCH_SIZE, n_used)]
            batch = x[idx].contiguous(memory_format=layout) if x.dim() == 4 else x[idx]
            batch = augment(batch, order) if AUGMENT != "none" else batch
            out = model(batch)
            loss = loss_fn(out.squeeze(1) if TASK == "regression" else out, y[idx])
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
            value = _metrics(model, *val)[METRIC]
            line += f"  val_{METRIC} {value:.4f}"
            if value > best if METRIC == "accuracy" else value < best:
                best, best_state = value, copy.deepcopy(model.state_dict())
        log(line)
    model.to(memory_format=torch.contiguous_format)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), (best if val is not None else None)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """AUGMENT of a batch of images, drawn per sample: a random crop of the image padded by
    an eighth of its height ("crop"), a horizontal flip with probability 1/2 ("flip")."""
    if AUGMENT in ("crop", "crop_flip"):
        n, _, h, w = x.shape
        pad = max(1, h // 8)
        padded = nn.functional.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded[batch, rows, cols].permute(0, 3, 1, 2)
    if AUGMENT in ("flip", "crop_flip"):
        flip = torch.rand(len(x), generator=generator, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def read_input(path: str | Path) -> tuple[list[str], object, np.ndarray | None]:
    """(names, raw rows, labels or None) from a file or a folder.

    .npy: rows of raw values. .csv: rows by column name (COLUMNS) or in order, with the
    labels when it has the target column. An image file, or a folder of them (sorted by
    path; with a folder per class, the labels too).
    """
    path = Path(path)
    if IMAGE_MODE is not None and (
        path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES
    ):
        files, labels = _image_files(path)
        return [str(f) for f in files], read_images(files), labels
    if path.suffix == ".npy":
        rows = np.load(path, allow_pickle=False)
        return [str(i) for i in range(len(rows))], rows, None
    header, rows = _read_csv(path)
    labels = None
    if header is not None and TARGET is not None and TARGET in header:
        labels = [row[header.index(TARGET)] for row in rows]
    if COLUMNS is not None:
        names = [c[0] for c in COLUMNS]
        missing = [c for c in names if header is None or c not in header]
        if missing:
            raise ValueError(f"{path} needs a header row with the columns {missing}")
        rows = [[row[header.index(c)] for c in names] for row in rows]
    else:
        rows = np.asarray(rows, dtype=np.float64)
    return [str(i) for i in range(len(rows))], rows, labels


def _image_files(path: Path) -> tuple[list[Path], list[str] | None]:
    if path.is_file():
        return [path], None
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files under {path}")
    folders = {f.parent.name for f in files}
    if all(f.parent.parent == path for f in files) and folders <= set(CLASSES):
        return files, [f.parent.name for f in files]  # a folder per class
    return files, None


def read_labels(path: str | Path) -> np.ndarray:
    """Labels from a .npy file or a one-column .csv file (a header row is optional)."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    is_value = _is_number if TASK == "regression" else _is_label
    _, rows = _read_csv(path, is_value=is_value)
    return np.asarray([row[0] for row in rows])


def targets(labels, n: int) -> torch.Tensor:
    """What the model learns: class indices, or regression targets normalised with the
    training split's TARGET_MEAN and TARGET_STD (float32, as in the search)."""
    if TASK == "regression":
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        y = ((y - TARGET_MEAN) / TARGET_STD).astype(np.float32)
    else:
        y = encode_labels(labels)
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} input rows")
    return torch.from_numpy(y)


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
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row]
    if rows and (COLUMNS is not None or not all(is_value(v) for v in rows[0])):
        return [h.strip() for h in rows[0]], rows[1:]
    return None, rows


def _scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    starts = range(0, len(x), EVAL_BATCH_SIZE)
    with torch.inference_mode():
        return torch.cat([model(x[i : i + EVAL_BATCH_SIZE]) for i in starts])


def _metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    scores = _scores(model, x)
    if TASK == "regression":
        diff = (scores.squeeze(1) - y).double()
        y = y.double()
        sse = float((diff * diff).sum())
        sst = float(((y - y.mean()) ** 2).sum())
        return {
            "rmse": math.sqrt(sse / len(diff)) * TARGET_STD,
            "mae": float(diff.abs().mean()) * TARGET_STD,
            "r2": 1.0 - sse / sst if sst > 0 else 0.0,
        }
    predicted = scores.argmax(1)
    accuracy = float((predicted == y).float().mean())
    # Macro F1 over the classes that occur in the labels or the predictions.
    classes = torch.unique(torch.cat([y, predicted]))
    hit = (predicted == y).unsqueeze(0)
    is_y = y.unsqueeze(0) == classes.unsqueeze(1)
    is_pred = predicted.unsqueeze(0) == classes.unsqueeze(1)
    tp = (is_y & hit).sum(1).double()
    f1 = 2 * tp / (is_y.sum(1) + is_pred.sum(1)).double()
    return {"accuracy": accuracy, "f1_macro": float(f1.mean())}


def _write_predictions(names, predictions, probabilities, out) -> None:
    writer = csv.writer(out, lineterminator="\n")
    first = ["input"] if IMAGE_MODE is not None else []
    if probabilities is None:
        writer.writerow([*first, "prediction"])
        for name, value in zip(names, predictions):
            writer.writerow([*([name] if first else []), repr(value)])
        return
    writer.writerow([*first, "label", *CLASSES])
    for name, label, row in zip(names, predictions, probabilities):
        cells = [f"{p:.6g}" for p in row]
        writer.writerow([*([name] if first else []), label, *cells])


def _labelled(path, labels_path) -> tuple[object, object]:
    """Rows and their labels: from --labels, else from the input itself."""
    _, rows, labels = read_input(path)
    if labels_path is not None:
        labels = read_labels(labels_path)
    if labels is None:
        where = f"a {TARGET!r} column" if TARGET is not None else "a folder per class"
        raise ValueError(f"{path} holds no labels ({where}); give --labels")
    return rows, labels


def _predict_command(args) -> None:
    names, rows, _ = read_input(args.input)
    predictions, probabilities = predict(rows, load_model(args.weights))
    if args.output is None:
        _write_predictions(names, predictions, probabilities, sys.stdout)
        return
    with open(args.output, "w", newline="") as f:
        _write_predictions(names, predictions, probabilities, f)
    print(f"wrote {len(predictions)} predictions to {args.output}", file=sys.stderr)


def _evaluate_command(args) -> None:
    rows, labels = _labelled(args.input, args.labels)
    for name, value in evaluate(rows, labels, load_model(args.weights)).items():
        print(f"{name} {value}")


def _train_command(args) -> None:
    if args.val_input is None and args.val_labels is not None:
        raise ValueError("--val-labels needs --val-input")
    val_rows = val_labels = None
    if args.val_input is not None:
        val_rows, val_labels = _labelled(args.val_input, args.val_labels)
    rows, labels = _labelled(args.input, args.labels)
    model, best = train(
        rows,
        labels,
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
        print(f"best val_{METRIC} {best}")
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
    rows = "raw inputs: .npy, or .csv (a header row is optional for plain numbers)"
    if IMAGE_MODE is not None:
        rows += (
            ", or image files (a file, or a folder: a folder per class gives labels)"
        )
    labels = (
        "labels: .npy or a one-column .csv (default: from the input, when it has them)"
    )
    weights = "weights to load (default: weights.pt next to this file)"
    p = commands.add_parser("predict", help="predictions (and class probabilities)")
    p.add_argument("--input", required=True, help=rows)
    p.add_argument("--output", help="CSV to write (default: standard output)")
    p.add_argument("--weights", default=str(WEIGHTS), help=weights)
    p.set_defaults(run=_predict_command)
    e = commands.add_parser("evaluate", help="print every metric on labelled inputs")
    e.add_argument("--input", required=True, help=rows)
    e.add_argument("--labels", help=labels)
    e.add_argument("--weights", default=str(WEIGHTS), help=weights)
    e.set_defaults(run=_evaluate_command)
    t = commands.add_parser("train", help="retrain with the recorded recipe and seed")
    t.add_argument("--input", required=True, help=rows)
    t.add_argument("--labels", help=labels)
    t.add_argument(
        "--val-input", help="validation inputs: keep the best epoch's weights"
    )
    t.add_argument("--val-labels", help="labels of the validation inputs")
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
