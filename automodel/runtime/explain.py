"""The exported script's explanations: which inputs its predictions rely on, and why it
predicted what it did for one row. The search explains its model with the same functions
(importance), so on the test rows, with the same seed, `explain` gives the numbers of the
study's importance.json.

    explain(rows, labels)    tables: permutation importance per column, in METRIC;
                             images and sequences: saliency maps per class
    explain_row(rows, row)   tables: each column's contribution to the row's prediction;
                             images and sequences: the row's saliency map
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from automodel.runtime.api import EVAL_BATCH_SIZE, load_model, prepare, targets
from automodel.runtime.evaluation import TASKS, model_outputs, slices
from automodel.runtime.importance import (
    REPEATS,
    SALIENCY_ROWS,
    class_maps,
    contributions,
    feature_groups,
    permutation_report,
    reference,
    saliency,
    subsample,
    top_positions,
)
from automodel.runtime.inputs import _pillow
from automodel.runtime.placeholders import (
    CLASSES,
    COLUMNS,
    IMAGE_MODE,
    INPUT_SHAPE,
    MEAN,
    STD,
    TARGET_MEAN,
    TARGET_STD,
    TASK,
)

POSITIONS_SHOWN = 20  # positions printed for images and sequences


def explain(rows, labels, model=None, *, repeats: int = REPEATS, seed: int = 0) -> dict:
    """Which inputs matter, on labelled raw rows (a seeded subsample of large inputs).

    A table: permutation importance per raw column (`columns`: name, mean, std, most
    important first), in the metric the search selected on. Images and sequences: the
    positions with the largest mean saliency (`positions`) and the mean map of each class
    (`by_class`, an array of (classes, *INPUT_SHAPE); one map for a regression).
    """
    model = load_model() if model is None else model
    x = prepare(rows)
    y = targets(labels, len(x))
    if len(INPUT_SHAPE) == 1:
        groups = feature_groups(COLUMNS, INPUT_SHAPE[0])
        return permutation_report(
            _predictor(model),
            x,
            y,
            TASK,
            groups,
            repeats=repeats,
            seed=seed,
            target_std=TARGET_STD,
        )
    picked = subsample(len(x), SALIENCY_ROWS, seed)
    maps, by_class = class_maps(model, x[picked], y[picked], TASK, len(CLASSES))
    return {
        "method": "saliency",
        "rows": len(picked),
        "seed": seed,
        "positions": top_positions(maps, POSITIONS_SHOWN),
        "by_class": by_class.numpy(),
    }


def explain_row(rows, row: int, model=None) -> dict:
    """Why the model predicted what it did for raw row number `row` (from 0).

    A table: `columns` holds each column's value, its typical value (the training split's
    median or most common level) and its contribution: the prediction (the predicted
    class's probability, or the value) minus the prediction with that column at its
    typical value, largest first. Images and sequences: `map`, the row's saliency for the
    predicted class (or value), shaped like INPUT_SHAPE.
    """
    model = load_model() if model is None else model
    x = prepare(rows)
    if not 0 <= row < len(x):
        raise ValueError(
            f"--row {row} is out of range: the input has {len(x)} rows (0..{len(x) - 1})"
        )
    one = x[row : row + 1]
    if len(INPUT_SHAPE) == 1:
        groups = feature_groups(COLUMNS, INPUT_SHAPE[0])
        ref, typical = reference(COLUMNS, MEAN, STD)
        predicted, value, changes = contributions(
            _predictor(model), one, groups, ref, TASK, TARGET_STD
        )
        cells = list(rows[row])
        columns = [
            {
                "name": name,
                "value": _plain(cells[k]),
                "typical": typical[k],
                "contribution": change,
            }
            for k, ((name, _), change) in enumerate(zip(groups, changes))
        ]
        columns.sort(key=lambda c: -abs(c["contribution"]))
        return {"row": row, **_prediction(predicted, value), "columns": columns}
    out = model_outputs(model, [one])[0].double()
    if TASK == "regression":
        predicted, value = None, float(out[0]) * TARGET_STD
    else:
        predicted = int(out.argmax())
        value = float(torch.softmax(out, dim=0)[predicted])
    explained = torch.tensor([0 if predicted is None else predicted])
    saliency_map = saliency(model, one, explained, TASK)[0]
    return {"row": row, **_prediction(predicted, value), "map": saliency_map.numpy()}


def _predictor(model):
    """The model as `predict(x) -> outputs`, batched as the search evaluates."""
    return lambda x: model_outputs(model, slices(x, EVAL_BATCH_SIZE))


def _prediction(predicted: int | None, value: float | None) -> dict:
    if predicted is None:
        return {"prediction": value + TARGET_MEAN}
    return {"prediction": CLASSES[predicted], "probability": value}


def _plain(cell):
    """A raw cell as JSON holds it: numpy numbers become Python numbers."""
    return cell.item() if isinstance(cell, np.generic) else cell


def show(report: dict, output: str | None, out) -> None:
    """Print an `explain` report; write it to `output` (a table's as JSON, the per-class
    maps of images and sequences as .npy, by default saliency_by_class.npy)."""
    if report["method"] == "permutation":
        metric = report["metric"]
        moves = "falls" if TASKS[TASK][1] == "maximize" else "rises"
        print(
            f"permutation importance on {report['rows']} rows ({report['repeats']} "
            f"shuffles per column, seed {report['seed']}; {metric} "
            f"{report['score']:.6g} as they are): how much {metric} {moves} when a "
            "column is shuffled",
            file=out,
        )
        _table(["column", "mean", "std"], _rows(report["columns"], "mean", "std"), out)
        if output is not None:
            Path(output).write_text(json.dumps(report, indent=2) + "\n")
        return
    print(
        f"saliency (|gradient x input|) on {report['rows']} rows, seed {report['seed']}: "
        "the input positions that matter most",
        file=out,
    )
    _table(["position", "mean", "std"], _rows(report["positions"], "mean", "std"), out)
    path = Path(output or "saliency_by_class.npy")
    np.save(path, report["by_class"], allow_pickle=False)
    print(f"wrote the mean map of each class to {path}", file=out)


def show_row(result: dict, name: str, output: str | None, out) -> None:
    """Print an `explain --row` result; a table's goes to `output` as JSON too, a saliency
    map as .npy (by default saliency_row<N>.npy) and, for images, a PNG beside it."""
    what = f"row {result['row']}" + (f" ({name})" if name != str(result["row"]) else "")
    if "probability" in result:
        said = f"predicted {result['prediction']!r} (probability {result['probability']:.4g})"
    else:
        said = f"predicted {result['prediction']:.6g}"
    print(f"{what}: {said}", file=out)
    if "columns" in result:
        print(
            "contribution: the prediction minus the prediction with the column at its "
            "typical value",
            file=out,
        )
        lines = _rows(result["columns"], "value", "typical", "contribution")
        _table(["column", "value", "typical", "contribution"], lines, out)
        if output is not None:
            Path(output).write_text(json.dumps(result, indent=2) + "\n")
        return
    path = Path(output or f"saliency_row{result['row']}.npy")
    np.save(path, result["map"], allow_pickle=False)
    written = [path]
    if IMAGE_MODE is not None:
        written.append(path.with_suffix(".png"))
        save_heatmap(written[-1], result["map"])
    print(f"wrote its saliency map to {' and '.join(map(str, written))}", file=out)


def save_heatmap(path, saliency_map: np.ndarray) -> None:
    """A saliency map (C, H, W) as a grey PNG, brightest where the channels' sum is largest,
    scaled up (nearest pixel) so that a small image stays visible."""
    image_module = _pillow()
    total = saliency_map.sum(0)
    peak = total.max()
    scaled = total / peak if peak > 0 else total
    image = image_module.fromarray(np.round(scaled * 255).astype(np.uint8))
    factor = max(1, 256 // max(total.shape))
    size = (total.shape[1] * factor, total.shape[0] * factor)
    image.resize(size, image_module.NEAREST).save(path)


def _rows(entries: list[dict], *keys: str) -> list[list[str]]:
    return [[str(e["name"]), *(_cell(e[k]) for k in keys)] for e in entries]


def _cell(value) -> str:
    if value is None:
        return "(missing)"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _table(header: list[str], lines: list[list[str]], out) -> None:
    """Columns aligned: the first to the left, numbers to the right."""
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    for first, *rest in [header, *lines]:
        cells = [first.ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(rest, widths[1:])]
        print("  ".join(cells).rstrip(), file=out)
