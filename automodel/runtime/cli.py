"""The exported script's command line: predict, evaluate, train and explain on files, and
reading them.

Inputs are .npy rows, .csv rows (by column name for a table), or image files; labels come
from --labels or from the input itself (a table's target column, a folder per class).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np
import torch

from automodel.runtime.api import WEIGHTS, evaluate, load_model, predict, train
from automodel.runtime.explain import explain, explain_row, show, show_row
from automodel.runtime.importance import REPEATS
from automodel.runtime.inputs import IMAGE_SUFFIXES, read_image
from automodel.runtime.loop import NonFiniteLoss
from automodel.runtime.placeholders import (
    CLASSES,
    COLUMNS,
    EPOCHS,
    IMAGE_MODE,
    INPUT_SHAPE,
    METRIC,
    SEED,
    TARGET,
    TASK,
)


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


def read_images(paths) -> np.ndarray:
    """Image files -> raw rows of pixel values (channels first), as the search read them:
    converted to IMAGE_MODE and resized (bilinear) to INPUT_SHAPE's height and width."""
    height, width = INPUT_SHAPE[1:]
    rows = [read_image(path, IMAGE_MODE, (width, height)) for path in paths]
    return np.stack(rows).astype(np.float32)


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
        # Where labels could have come from: a table's target column, class folders.
        where = (
            f" (no {TARGET!r} column)"
            if TARGET is not None
            else " (not a folder per class)"
            if IMAGE_MODE is not None and Path(path).is_dir()
            else ""
        )
        raise ValueError(f"{path} holds no labels{where}; give --labels")
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


def _explain_command(args) -> None:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    model = load_model(args.weights)
    if args.row is not None:  # one prediction: no labels needed
        names, rows, _ = read_input(args.input)
        result = explain_row(rows, args.row, model)
        show_row(result, names[args.row], args.output, sys.stdout)
        return
    rows, labels = _labelled(args.input, args.labels)
    report = explain(rows, labels, model, repeats=args.repeats, seed=args.seed)
    show(report, args.output, sys.stdout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="A network found by an automodel search: predict with it, "
        "evaluate it, or retrain it with its recorded recipe.",
        epilog="examples:\n"
        "  python best_model.py predict --input X.npy --output predictions.csv\n"
        "  python best_model.py evaluate --input X.csv --labels y.csv\n"
        "  python best_model.py train --input X.npy --labels y.npy "
        "--val-input Xv.npy --val-labels yv.npy\n"
        "  python best_model.py explain --input X.csv --labels y.csv\n"
        "  python best_model.py explain --input X.csv --row 3",
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
    # An ensemble's members each keep their own (EPOCHS and SEED are None there).
    own = "default: %(default)s" if EPOCHS is not None else "default: each member's own"
    t.add_argument("--epochs", type=int, default=EPOCHS, help=own)
    own = (
        "default: %(default)s"
        if SEED is not None
        else "default: each member's own; given, member i starts from it + i"
    )
    t.add_argument("--seed", type=int, default=SEED, help=own)
    t.add_argument("--output", default="retrained.pt", help="default: %(default)s")
    t.set_defaults(run=_train_command)
    x = commands.add_parser("explain", help="which inputs the predictions rely on")
    x.add_argument("--input", required=True, help=rows)
    x.add_argument("--labels", help=labels)
    x.add_argument(
        "--row",
        type=int,
        help="explain this row's prediction alone (from 0; no labels)",
    )
    x.add_argument(
        "--repeats",
        type=int,
        default=REPEATS,
        help="shuffles per column of a table (default: %(default)s)",
    )
    x.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the shuffles and the rows read (importance.json's seed; "
        "default: %(default)s)",
    )
    x.add_argument("--output", help="a table's report as JSON, or the saliency as .npy")
    x.add_argument("--weights", default=str(WEIGHTS), help=weights)
    x.set_defaults(run=_explain_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except (OSError, ValueError, NonFiniteLoss) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
