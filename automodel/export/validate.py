"""A checkpoint's values, checked before any of them is written into code.

    checkpoint(raw) -> Checked: the family, data spec, table columns, recipe, trial, metrics

Unknown fields are refused (the script would silently lack them), names must be keys of the
tables the search builds from, numbers finite, shapes and statistics consistent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from automodel import models, train
from automodel.data import DataSpec
from automodel.export.literals import (
    ExportError,
    checked_float,
    checked_int,
    choice,
    float_literal,
    string,
)
from automodel.runtime.evaluation import TARGET_TRANSFORMS, TASKS
from automodel.runtime.inputs import COLUMN_SETTINGS, IMAGE_MODES
from automodel.runtime.recipe import AUGMENTS, KEEPS, LOSSES, OPTIMIZERS, SCHEDULES

SPEC_KEYS = {f.name for f in dataclasses.fields(DataSpec)}
RECIPE_KEYS = {f.name for f in dataclasses.fields(train.Recipe)}
METRICS = tuple(dict.fromkeys(m for _, _, reported in TASKS.values() for m in reported))


@dataclass(frozen=True)
class Checked:
    """A checkpoint that may be written as code."""

    family: str
    params: dict
    spec: DataSpec
    columns: list | None  # COLUMNS as nested lists of literal texts, for a table
    recipe: dict
    trial: int
    val: dict[str, float]  # every validation metric at the kept epoch
    test: dict[str, float]  # empty when not measured
    selection: tuple[str, ...] = ()  # how it was chosen and trained: cross-validation, refit


def checkpoint(raw: dict) -> Checked:
    """Check a checkpoint in its dict form (see automodel.checkpoint); raises ExportError."""
    spec = _spec(raw["spec"])
    recipe = _recipe(raw["recipe"])
    family = choice("family", raw["family"], models.FAMILIES)
    columns = _columns(spec)
    trial = checked_int("trial", raw["trial"])
    val, test = _metrics(raw.get("val")), _metrics(raw.get("test"))
    selection = _selection(raw.get("cv"), raw.get("refit"), recipe)
    return Checked(family, raw["params"], spec, columns, recipe, trial, val, test, selection)


def _selection(cv: dict | None, refit, recipe: dict) -> tuple[str, ...]:
    """Docstring lines on how the model was chosen (k-fold cross-validation: the validation
    metrics above are the folds' mean) and trained (a refit on every non-test row)."""
    lines = []
    if cv is not None:
        folds = checked_int("cv folds", cv.get("folds"), 2)
        std = _metrics(cv.get("std"))
        spread = ", ".join(f"{k} {float_literal(v)}" for k, v in std.items())
        lines.append(
            f"selected by {folds}-fold cross-validation: the validation metrics are the "
            f"folds' mean (standard deviation: {spread})"
        )
    if refit not in (None, True, False):
        raise ExportError(f"refit must be true or false, got {refit!r}")
    if refit:
        lines.append(
            f"refit: trained on every non-test row for {recipe['epochs']} epochs, the last "
            "weights kept (KEEP); it was never evaluated on validation rows"
        )
    return tuple(lines)


def _spec(raw: dict) -> DataSpec:
    """The data spec, every value checked (unknown fields are refused)."""
    _known("data spec", raw, SPEC_KEYS)
    spec = DataSpec.from_dict(raw)
    task = choice("task", spec.task, TASKS)
    choice("metric", spec.metric, (TASKS[task][0],))
    if not 1 <= len(spec.input_shape) <= 3:
        raise ExportError(f"input_shape must have 1 to 3 dims, got {spec.input_shape!r}")
    for n in spec.input_shape:
        checked_int("input_shape", n, low=1)
    low = 2 if task == "classification" else 0
    if checked_int("n_classes", spec.n_classes, low) != len(spec.classes):
        raise ExportError(
            f"n_classes is {spec.n_classes} but there are {len(spec.classes)} classes"
        )
    if task == "regression" and spec.classes:
        raise ExportError(f"a regression has no classes, got {list(spec.classes)!r}")
    for c in spec.classes:
        string(c)
    if len(set(spec.classes)) != len(spec.classes):
        raise ExportError(f"class names must be unique, got {list(spec.classes)!r}")
    _image_mode(spec)
    if spec.target is not None:
        string(spec.target)
    checked_float("target_mean", spec.target_mean)
    if checked_float("target_std", spec.target_std) <= 0:
        raise ExportError(f"target_std must be > 0, got {spec.target_std!r}")
    choice("target_transform", spec.target_transform, TARGET_TRANSFORMS)
    _statistics(spec)
    return spec


def _known(what: str, raw: dict, keys: set[str]) -> None:
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise ExportError(
            f"{what} field {unknown[0]!r} is not handled by the exporter; teach "
            "automodel/export to write it into the script"
        )


def _image_mode(spec: DataSpec) -> None:
    if spec.image_mode is None:
        return
    channels = IMAGE_MODES[choice("image_mode", spec.image_mode, IMAGE_MODES)]
    if len(spec.input_shape) != 3 or spec.input_shape[0] != channels:
        raise ExportError(
            f"image_mode {spec.image_mode} needs an input shape ({channels}, H, W), "
            f"got {spec.input_shape!r}"
        )


def _statistics(spec: DataSpec) -> None:
    channels = spec.input_shape[0]
    for key in ("mean", "std"):
        values = getattr(spec, key)
        if len(values) != channels:
            raise ExportError(f"{key} needs {channels} values, got {len(values)}")
        for v in values:
            checked_float(key, v)
    if any(s <= 0 for s in spec.std):
        raise ExportError(f"std must be > 0, got {list(spec.std)!r}")


def _columns(spec: DataSpec) -> list | None:
    """COLUMNS as nested literals: (name, "numeric", fill, indicator), (name, "onehot",
    (levels...)) or (name, "hash", buckets); every value checked, the features counted."""
    if spec.columns is None:
        return None
    if len(spec.input_shape) != 1:
        raise ExportError(f"columns need a table (1-dim input), got {spec.input_shape!r}")
    entries, n_features, names = [], 0, set()
    for c in spec.columns:
        if not isinstance(c, dict):
            raise ExportError(f"columns must name the features of a table, got {c!r}")
        kind = choice("column kind", c.get("kind"), COLUMN_SETTINGS)
        keys = {"name", "kind", *COLUMN_SETTINGS[kind]}
        if set(c) != keys:
            raise ExportError(f"a {kind} column has the keys {sorted(keys)}, got {c!r}")
        name = string(c["name"])
        if c["name"] in names:
            raise ExportError(f"column names must be unique, got {c['name']!r} twice")
        names.add(c["name"])
        entry, features = _column(kind, c)
        entries.append([name, string(kind), *entry])
        n_features += features
    if n_features != spec.input_shape[0]:
        raise ExportError(
            f"the columns encode {n_features} features, the model reads {spec.input_shape[0]}"
        )
    return entries


def _column(kind: str, c: dict) -> tuple[list, int]:
    """A column's settings as literals, and how many features it encodes."""
    if kind == "numeric":
        if not isinstance(c["indicator"], bool):
            raise ExportError(f"indicator must be true or false, got {c['indicator']!r}")
        fill = float_literal(checked_float("fill", c["fill"]))
        return [fill, repr(c["indicator"])], 1 + c["indicator"]
    if kind == "onehot":
        levels = list(c["levels"])
        if not levels or len(set(levels)) != len(levels):
            raise ExportError(f"onehot levels must be unique and not empty, got {levels!r}")
        return [[string(v) for v in levels]], len(levels)
    buckets = checked_int("buckets", c["buckets"], 1)
    return [str(buckets)], buckets


def _recipe(raw: dict) -> dict:
    _known("training recipe", raw, RECIPE_KEYS)
    epochs = checked_int("epochs", raw["epochs"], 1)
    return {
        "loss": choice("loss", raw.get("loss", "mse"), LOSSES),
        "augment": choice("augment", raw.get("augment", "none"), AUGMENTS),
        "optimizer": choice("optimizer", raw["optimizer"], OPTIMIZERS),
        "schedule": choice("schedule", raw["schedule"], SCHEDULES),
        "lr": checked_float("lr", raw["lr"]),
        "weight_decay": checked_float("weight_decay", raw["weight_decay"]),
        # Checkpoints written before l1 existed trained without it.
        "l1": checked_float("l1", raw.get("l1", 0.0)),
        "momentum": checked_float("momentum", raw["momentum"]),
        "label_smoothing": checked_float("label_smoothing", raw["label_smoothing"]),
        "batch_size": checked_int("batch_size", raw["batch_size"], 1),
        "epochs": epochs,
        # Checkpoints written before schedule_epochs existed: the schedule spanned `epochs`.
        "schedule_epochs": max(
            epochs, checked_int("schedule_epochs", raw.get("schedule_epochs", 0), 0)
        ),
        "seed": checked_int("seed", raw["seed"], 0),
        "keep": choice("keep", raw.get("keep", "best"), KEEPS),
    }


def _metrics(raw: dict | None) -> dict[str, float]:
    """Metric values by name: known names, finite numbers."""
    return {
        choice("metric", name, METRICS): checked_float(name, value)
        for name, value in (raw or {}).items()
    }
