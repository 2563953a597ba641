"""The end of a search explains the shipped model: `<study>/importance.json`, the saliency
maps beside it, and the short entry that summary.json holds.

    explain(model, dataset, study_dir, seed)  -> summary entry; writes the files
    clear(study_dir)                          -> explain=false: no stale files left behind
    feature_groups(spec.columns, n)           -> the runtime's groups, from a DataSpec

The algorithms are the runtime's (automodel.runtime.importance), which the exported script's
`explain` command runs as they are: on the test rows, with the same seed, it prints these
numbers. Only the test split is read, once the search has chosen: nothing here steers it.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from automodel import outputs, train
from automodel.data import Dataset
from automodel.data.table import entries
from automodel.runtime import importance as runtime
from automodel.runtime.importance import permutation, saliency, saliency_by_class

__all__ = [
    "FILE",
    "clear",
    "explain",
    "feature_groups",
    "permutation",
    "saliency",
    "saliency_by_class",
    "summary_entry",
]

FILE = "importance.json"
BY_CLASS = "saliency_by_class.npy"  # (classes, *input_shape); one map for a regression
EXAMPLES = "saliency_examples.npy"  # (runtime.EXAMPLES, *input_shape)
TOP = 10  # columns or positions summary.json lists
POSITIONS = 20  # positions importance.json lists (every one is in the .npy maps)


def feature_groups(columns, n_features: int) -> list[tuple[str, list[int]]]:
    """`runtime.importance.feature_groups` for DataSpec.columns (dicts, or None)."""
    return runtime.feature_groups(None if columns is None else entries(columns), n_features)


def explain(
    model: torch.nn.Module, dataset: Dataset, study_dir: Path, *, seed: int, batch_size: int
) -> dict:
    """Explain `model` on the test split; write importance.json (and, for images and
    sequences, the saliency maps beside it). Returns the summary.json entry.

    Tables (one-dimensional inputs) get permutation importance per raw column, in the
    study's metric; images and sequences gradient x input saliency per position and class.
    """
    start = time.perf_counter()
    if len(dataset.spec.input_shape) == 1:
        report = _permutation(model, dataset, seed, batch_size)
    else:
        report = _saliency(model, dataset, study_dir, seed)
    report["seconds"] = round(time.perf_counter() - start, 3)
    outputs.write_json(study_dir / FILE, report)
    return summary_entry(report)


def summary_entry(report: dict) -> dict:
    """What summary.json says of an importance report: its method and metric, and the top
    columns (or positions) with their means, most important first."""
    ranked = report["columns"] if report["method"] == "permutation" else report["positions"]
    return {
        "method": report["method"],
        "metric": report["metric"],
        "top": [{"name": r["name"], "mean": r["mean"]} for r in ranked[:TOP]],
    }


def clear(study_dir: Path) -> None:
    """Remove what an earlier explained run wrote, so no file contradicts summary.json."""
    for name in (FILE, BY_CLASS, EXAMPLES):
        (study_dir / name).unlink(missing_ok=True)


def _permutation(model, dataset: Dataset, seed: int, batch_size: int) -> dict:
    spec = dataset.spec
    groups = feature_groups(spec.columns, spec.input_shape[0])

    def predict(x: torch.Tensor) -> torch.Tensor:
        return train.predict_logits(model, x, batch_size)

    return runtime.permutation_report(
        predict,
        dataset.x_test,
        dataset.y_test,
        spec.task,
        groups,
        seed=seed,
        target_std=spec.target_std,
    )


def _saliency(model, dataset: Dataset, study_dir: Path, seed: int) -> dict:
    spec = dataset.spec
    rows = runtime.subsample(len(dataset.x_test), runtime.SALIENCY_ROWS, seed)
    x = _gather(dataset.x_test, rows, next(model.parameters()).device)
    y = dataset.y_test[rows.to(dataset.y_test.device)]
    maps, by_class = runtime.class_maps(model, x, y, spec.task, spec.n_classes)
    _save_npy(study_dir / BY_CLASS, by_class)
    _save_npy(study_dir / EXAMPLES, maps[: runtime.EXAMPLES])
    shown = y[: runtime.EXAMPLES].cpu()
    if spec.task == "regression":
        labels = (shown.double() * spec.target_std + spec.target_mean).tolist()
    else:
        labels = [spec.classes[i] for i in shown.tolist()]
    return {
        "method": "saliency",
        "metric": None,
        "rows": len(rows),
        "seed": seed,
        "input_shape": list(spec.input_shape),
        "classes": list(spec.classes) if spec.task == "classification" else None,
        "positions": runtime.top_positions(maps, POSITIONS),
        "by_class": BY_CLASS,
        # Indices into the test split (as load_raw_splits orders it) and their labels.
        "examples": {"file": EXAMPLES, "rows": rows[: runtime.EXAMPLES].tolist(), "labels": labels},
    }


def _gather(x, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The rows of a split held as a tensor, or read from a data.lazy.Rows one by one."""
    if isinstance(x, torch.Tensor):
        return x[rows.to(x.device)].to(device)
    return torch.stack([x[i] for i in rows.tolist()]).to(device)


def _save_npy(path: Path, array: torch.Tensor) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array.numpy().astype(np.float32), allow_pickle=False)
    outputs.write_atomic(path, buffer.getvalue())
