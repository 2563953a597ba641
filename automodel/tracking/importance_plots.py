"""Pictures of what the best model relies on, from the study's importance.json: a bar chart
of the columns of a table, heat maps of the saliency of images and sequences.

    draw(study_dir, out_dir)   -> the PNG files written (none without importance.json)
    log(parent, study_dir)     -> importance.json and its pictures on the parent run,
                                  under importance/

matplotlib's object API (Figure, not pyplot), imported when drawing: no global state, so
drawing from the tracker's thread leaves the caller's figures alone.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np

from automodel.importance import FILE

BARS = 20  # columns drawn, most important first
GRID = 5  # heat maps per row of a grid


def log(parent, study_dir: Path) -> None:
    """Put importance.json and its pictures on the parent run (nothing when the search did
    not explain its model)."""
    if not (study_dir / FILE).is_file():
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "importance"
        draw(study_dir, out)
        parent.client.log_artifact(parent.id, str(study_dir / FILE), "importance")
        parent.client.log_artifacts(parent.id, str(out), "importance")


def draw(study_dir: Path, out_dir: Path) -> list[Path]:
    """Draw the pictures of `study_dir`'s importance.json into `out_dir`."""
    path = study_dir / FILE
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    if report["method"] == "permutation":
        return [_bars(report, out_dir / "columns.png")]
    by_class = np.load(study_dir / report["by_class"], allow_pickle=False)
    titles = report["classes"] or ["every row"]
    written = [_maps(by_class, titles, out_dir / "saliency_by_class.png", "mean per class")]
    examples = report["examples"]
    rows = np.load(study_dir / examples["file"], allow_pickle=False)
    titles = [
        f"test row {r}: {label}"
        for r, label in zip(examples["rows"], examples["labels"], strict=True)
    ]
    written.append(_maps(rows, titles, out_dir / "saliency_examples.png", "single rows"))
    return written


def _bars(report: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    columns = report["columns"][:BARS][::-1]  # barh draws bottom-up: most important on top
    fig = Figure(figsize=(7, 1.2 + 0.3 * len(columns)))
    ax = fig.subplots()
    names = [c["name"] for c in columns]
    ax.barh(names, [c["mean"] for c in columns], xerr=[c["std"] for c in columns], color="C0")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"how much {report['metric']} worsens when the column is shuffled")
    shown = f"top {BARS} of {len(report['columns'])}" if len(report["columns"]) > BARS else "all"
    ax.set_title(
        f"permutation importance on {report['rows']} test rows ({shown} columns; "
        f"mean and std of {report['repeats']} shuffles)",
        fontsize=9,
    )
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _maps(maps: np.ndarray, titles: list[str], path: Path, what: str) -> Path:
    """Images (n, C, H, W): a grid of heat maps (channels summed). Sequences (n, C, L): one
    heat map, a row per map."""
    from matplotlib.figure import Figure

    total = maps.sum(1)  # |gradient x input| summed over channels
    if total.ndim == 2:  # sequences
        fig = Figure(figsize=(8, 1 + 0.35 * len(total)))
        ax = fig.subplots()
        image = ax.imshow(total, aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_yticks(range(len(titles)), titles, fontsize=7)
        ax.set_xlabel("position")
        fig.colorbar(image, ax=ax)
        ax.set_title(f"saliency |gradient x input|, {what}", fontsize=9)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        return path
    cols = min(GRID, len(total))
    rows = math.ceil(len(total) / cols)
    fig = Figure(figsize=(2.2 * cols, 2.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, heat, title in zip(axes[: len(total)], total, titles, strict=True):
        ax.imshow(heat, cmap="magma", interpolation="nearest")
        ax.set_title(str(title), fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(total) :]:
        ax.axis("off")
    fig.suptitle(f"saliency |gradient x input|, {what}", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
