"""The exported script's command line: predict, evaluate, train and explain on files, and
reading them.

Inputs are .npy rows, table files (by column name for a table), or image files; labels come
from --labels or from the input itself (a table's target column, a folder per class). Table
files are read as the search read them: delimited text (CSV, TSV, ...) with the delimiter
detected among , ; tab | and decimal commas detected (inputs.sniff_delimiter,
inputs.decimal_commas), in --encoding; or Parquet, where pyarrow is installed.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import io
import os
import sys
from pathlib import Path

import numpy as np
import torch

from automodel.runtime.api import WEIGHTS, evaluate, load_model, predict, train
from automodel.runtime.explain import explain, explain_row, show, show_row
from automodel.runtime.importance import REPEATS
from automodel.runtime.inputs import (
    DELIMITERS,
    IMAGE_SUFFIXES,
    cell_text,
    decimal_commas,
    point_decimal,
    read_image,
    sniff_delimiter,
)
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


def read_input(
    path: str | Path, **reading
) -> tuple[list[str], object, np.ndarray | None]:
    """(names, raw rows, labels or None) from a file or a folder.

    .npy: rows of raw values. A table file (see read_table; `reading`: its encoding,
    delimiter, decimal): rows by column name (COLUMNS) or in order, with the labels when it
    has the target column. An image file, or a folder of them (sorted by path; with a
    folder per class, the labels too).
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
    header, rows = read_table(path, **reading)
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


def read_labels(path: str | Path, **reading) -> np.ndarray:
    """Labels from a .npy file or a one-column table file (a header row is optional)."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    is_value = _is_number if TASK == "regression" else _is_label
    _, rows = read_table(path, is_value=is_value, **reading)
    return np.asarray([row[0] for row in rows])


def _is_label(value: str) -> bool:
    return value in CLASSES or value.strip().lstrip("-").isdigit()


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


PARQUET_SUFFIXES = (".parquet", ".pq")
# The delimiter is detected on the text's start, as the search does.
SAMPLE_CHARS = 64 * 1024


def read_table(
    path, is_value=_is_number, encoding="utf-8", delimiter=None, decimal=None
) -> tuple[list[str] | None, list]:
    """(header or None, rows of stripped text cells) from Parquet or delimited text; the
    first row is a header when it does not hold values (Parquet always has one)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"{path} {'is a folder' if path.is_dir() else 'does not exist'}"
        )
    if path.suffix.lower() in PARQUET_SUFFIXES:
        header, rows = _read_parquet(path)
        return header, [row for row in rows if any(row)]
    rows = _read_delimited(path, encoding, delimiter, decimal)
    if rows and (COLUMNS is not None or not all(is_value(v) for v in rows[0])):
        return rows[0], rows[1:]
    return None, rows


def _read_delimited(path: Path, encoding: str, delimiter, decimal) -> list:
    # A BOM is not part of the first column's name (Excel writes one).
    name = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        with open(path, newline="", encoding=name) as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not {encoding} text (byte {err.object[err.start]:#04x} at offset "
            f"{err.start}); give its encoding, for example --encoding latin-1"
        ) from None
    sample = text[:SAMPLE_CHARS]
    delimiter = delimiter or sniff_delimiter(sample, cut=len(sample) >= SAMPLE_CHARS)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows = [[cell.strip() for cell in row] for row in reader]
    rows = [row for row in rows if any(row)]
    wanted = len(COLUMNS) if COLUMNS is not None else INPUT_SHAPE[0]
    if rows and len(rows[0]) == 1 and wanted > 1 and IMAGE_MODE is None:
        _refuse_one_column(path, delimiter, rows[0][0])
    if decimal_commas((c for row in rows[1:] for c in row), delimiter, decimal):
        rows = [[point_decimal(c) for c in row] for row in rows]
    return rows


def _refuse_one_column(path: Path, delimiter: str, first: str) -> None:
    """A table that reads as one column under a delimiter another one would split."""
    other = next((d for d in DELIMITERS if d != delimiter and d in first), None)
    if other is not None:
        shown = {"\t": "tab"}
        raise ValueError(
            f"{path} reads as one column {first[:60]!r} with delimiter "
            f"{shown.get(delimiter, repr(delimiter))}; it holds "
            f"{shown.get(other, repr(other))}: give --delimiter {shown.get(other, other)}"
        )


def _read_parquet(path: Path) -> tuple[list[str], list]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(
            f"reading {path} needs pyarrow: pip install pyarrow (or give a CSV file)"
        ) from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:  # pyarrow's errors derive from these
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} is not a readable Parquet file: {first}") from None
    columns = [[cell_text(v) for v in column.to_pylist()] for column in table.columns]
    return list(table.column_names), [list(row) for row in zip(*columns)]


def reading_options(args) -> dict:
    """--encoding, --delimiter and --decimal, checked: the keywords of read_table."""
    try:
        codecs.lookup(args.encoding)
    except LookupError:
        raise ValueError(
            f"--encoding {args.encoding!r} is not an encoding Python knows; for example "
            "utf-8, latin-1, cp1252, utf-16"
        ) from None
    delimiter = "\t" if args.delimiter in ("tab", "\\t") else args.delimiter
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise ValueError(
            f"--delimiter must be one character such as , ; | or tab, got {delimiter!r}"
        )
    if args.decimal not in (None, ".", ","):
        raise ValueError(f"--decimal must be . or , got {args.decimal!r}")
    return {"encoding": args.encoding, "delimiter": delimiter, "decimal": args.decimal}


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


def _labelled(path, labels_path, reading: dict) -> tuple[object, object]:
    """Rows and their labels: from --labels, else from the input itself."""
    _, rows, labels = read_input(path, **reading)
    if labels_path is not None:
        labels = read_labels(labels_path, **reading)
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
    names, rows, _ = read_input(args.input, **reading_options(args))
    predictions, probabilities = predict(rows, load_model(args.weights))
    if args.output is None:
        _write_predictions(names, predictions, probabilities, sys.stdout)
        return
    with open(args.output, "w", newline="") as f:
        _write_predictions(names, predictions, probabilities, f)
    print(f"wrote {len(predictions)} predictions to {args.output}", file=sys.stderr)


def _evaluate_command(args) -> None:
    rows, labels = _labelled(args.input, args.labels, reading_options(args))
    for name, value in evaluate(rows, labels, load_model(args.weights)).items():
        print(f"{name} {value}")


def _train_command(args) -> None:
    if args.val_input is None and args.val_labels is not None:
        raise ValueError("--val-labels needs --val-input")
    reading = reading_options(args)
    val_rows = val_labels = None
    if args.val_input is not None:
        val_rows, val_labels = _labelled(args.val_input, args.val_labels, reading)
    rows, labels = _labelled(args.input, args.labels, reading)
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
        names, rows, _ = read_input(args.input, **reading_options(args))
        result = explain_row(rows, args.row, model)
        show_row(result, names[args.row], args.output, sys.stdout)
        return
    rows, labels = _labelled(args.input, args.labels, reading_options(args))
    report = explain(rows, labels, model, repeats=args.repeats, seed=args.seed)
    show(report, args.output, sys.stdout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="A network found by an automodel search: predict with it, "
        "evaluate it, or retrain it with its recorded recipe.",
        epilog="examples:\n"
        "  python best_model.py predict --input X.npy --output predictions.csv\n"
        "  python best_model.py evaluate --input X.csv --labels y.csv\n"
        "  python best_model.py predict --input rows.tsv --encoding latin-1\n"
        "  python best_model.py train --input X.npy --labels y.npy "
        "--val-input Xv.npy --val-labels yv.npy\n"
        "  python best_model.py explain --input X.csv --labels y.csv\n"
        "  python best_model.py explain --input X.csv --row 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    rows = (
        "raw inputs: .npy, a delimited text file (.csv, .tsv, ...; a header row is "
        "optional for plain numbers) or .parquet (needs pyarrow)"
    )
    if IMAGE_MODE is not None:
        rows += (
            ", or image files (a file, or a folder: a folder per class gives labels)"
        )
    labels = (
        "labels: .npy or a one-column table (default: from the input, if it has them)"
    )
    weights = "weights to load (default: weights.pt next to this file)"
    p = commands.add_parser("predict", help="predictions (and class probabilities)")
    p.add_argument("--input", required=True, help=rows)
    p.add_argument("--output", help="CSV to write (default: standard output)")
    p.set_defaults(run=_predict_command)
    e = commands.add_parser("evaluate", help="print every metric on labelled inputs")
    e.add_argument("--input", required=True, help=rows)
    e.add_argument("--labels", help=labels)
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
    for command in (p, e):
        command.add_argument("--weights", default=str(WEIGHTS), help=weights)
    for command in (p, e, t, x):
        _reading_arguments(command)
    return parser


def _reading_arguments(command: argparse.ArgumentParser) -> None:
    """How table files are read, as the search's data.encoding, delimiter and decimal."""
    command.add_argument(
        "--encoding", default="utf-8", help="text encoding of table files: %(default)s"
    )
    command.add_argument(
        "--delimiter", help="cell delimiter (, ; | or tab; default: detected)"
    )
    command.add_argument(
        "--decimal",
        help="decimal mark, . or , (default: a comma when the file is not "
        "comma-delimited and writes its numbers only with commas)",
    )


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
