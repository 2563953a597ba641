"""The exported script's functions: load the model, prepare raw rows, predict, evaluate and
retrain with the recorded recipe.

They read the constants that export writes above them in best_model.py (`placeholders`
stands in for them here) and run the search's own code with them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from automodel.runtime.evaluation import (
    TASKS,
    better,
    compute,
    from_units,
    model_outputs,
    slices,
    to_units,
    worst,
)
from automodel.runtime.inputs import encode_cells
from automodel.runtime.loop import (
    in_layout,
    memory_format,
    restore,
    snapshot,
    train_epochs,
)
from automodel.runtime.placeholders import (
    AUGMENT,
    BATCH_SIZE,
    CLASSES,
    COLUMNS,
    EPOCHS,
    INPUT_SHAPE,
    KEEP,
    L1,
    LABEL_SMOOTHING,
    LOSS,
    LR,
    MEAN,
    METRIC,
    MOMENTUM,
    OPTIMIZER,
    SCHEDULE,
    SCHEDULE_EPOCHS,
    SEED,
    STD,
    TARGET_MEAN,
    TARGET_STD,
    TARGET_TRANSFORM,
    TASK,
    WEIGHT_DECAY,
    Model,
    new_model,
)
from automodel.runtime.recipe import new_loss, new_optimizer, new_schedule

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
    """Raw table cells, one per entry of COLUMNS and in that order -> numeric features."""
    return encode_cells(rows, COLUMNS)


def predict(rows, model: nn.Module | None = None) -> tuple[list, np.ndarray | None]:
    """Predictions for raw rows: (class names, class probabilities) for a classifier, with
    one probability column per name in CLASSES; (numbers, None) for a regression."""
    model = load_model() if model is None else model
    scores = model_outputs(model, slices(prepare(rows), EVAL_BATCH_SIZE))
    if TASK == "regression":
        values = to_units(scores[:, 0], TARGET_MEAN, TARGET_STD, TARGET_TRANSFORM)
        return values.numpy().tolist(), None
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
    """Train a new Model with the recorded recipe, in the search's own training loop.

    The seed is set just before the model is built (the same initial weights), and seeds
    the batch order and the augmentation; with validation rows the weights of the best
    validation epoch are kept, unless KEEP is "last" (a refit: the search trained on every
    non-test row for EPOCHS epochs and kept the last weights; or a fold of a cross-validated
    trial, kept at the epoch where the folds' mean was best; validation rows are then only
    reported). On a CPU, with the same data and seed, it reproduces the search's model.

    Returns the model (in eval mode) and its best validation METRIC (None without
    validation rows, in which case the last epoch's weights are kept).
    """
    x, y, val = labelled_rows(rows, labels, val_rows, val_labels)
    recipe = {
        "optimizer": OPTIMIZER,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "momentum": MOMENTUM,
        "schedule": SCHEDULE,
        "batch_size": BATCH_SIZE,
        "epochs": epochs,
        "schedule_epochs": SCHEDULE_EPOCHS,
        "label_smoothing": LABEL_SMOOTHING,
        "loss": LOSS,
        "augment": AUGMENT,
        "l1": L1,
        "keep": KEEP,
        "seed": seed,
    }
    torch.manual_seed(seed)
    return fit(new_model(), recipe, x, y, val, log=log)


def labelled_rows(rows, labels, val_rows=None, val_labels=None) -> tuple:
    """(x, y, (val_x, val_y) or None): raw rows and labels as the model learns them."""
    x = prepare(rows)
    val = None
    if val_rows is not None:
        val_x = prepare(val_rows)
        val = val_x, targets(val_labels, len(val_x))
    return x, targets(labels, len(x)), val


def fit(
    model: nn.Module, recipe: dict, x, y, val=None, *, log=print
) -> tuple[nn.Module, float | None]:
    """Train `model` (just built, after seeding torch with recipe["seed"]) with `recipe`:
    the names and values of a trial's training recipe (OPTIMIZER, LR, ... in lower case).

    Returns the model in eval mode, with the weights of its best validation epoch when
    `val` (inputs, targets) is given, and that epoch's METRIC (else the last epoch's, None).
    """
    layout = memory_format(model)
    model.to(memory_format=layout)
    x = in_layout(x, layout)
    if val is not None:
        val = in_layout(val[0], layout), val[1]
    optimizer = new_optimizer(
        model.parameters(),
        recipe["optimizer"],
        recipe["lr"],
        recipe["weight_decay"],
        recipe["momentum"],
        True,
    )
    epochs = recipe["epochs"]
    run = train_epochs(
        model,
        x,
        y,
        optimizer,
        new_loss(TASK, recipe["loss"], recipe["label_smoothing"]),
        epochs=epochs,
        batch_size=recipe["batch_size"],
        seed=recipe["seed"],
        augmentation=recipe["augment"],
        # Over the epochs the search's schedule spanned, when more (a refit stops inside it).
        schedule=new_schedule(
            optimizer, recipe["schedule"], max(epochs, recipe["schedule_epochs"])
        ),
        l1=recipe["l1"],
    )
    direction = TASKS[TASK][1]
    best, best_state = worst(direction), None
    for epoch, train_loss, _ in run:
        line = f"epoch {epoch}/{epochs}  train_loss {train_loss:.4f}"
        if val is not None:
            value = _metrics(model, *val)[METRIC]
            line += f"  val_{METRIC} {value:.4f}"
            if better(direction, value, best):
                best = value
                best_state = snapshot(model) if recipe["keep"] == "best" else None
        log(line)
    restore(model, best_state)
    return model.eval(), (best if val is not None else None)


def targets(labels, n: int) -> torch.Tensor:
    """What the model learns: class indices, or regression targets (their log1p when
    TARGET_TRANSFORM says so) normalised with the training split's TARGET_MEAN and
    TARGET_STD (float32, as in the search)."""
    if TASK == "regression":
        y = from_units(
            np.asarray(labels, dtype=np.float64).reshape(-1), TARGET_TRANSFORM
        )
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


def _metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    scores = model_outputs(model, slices(x, EVAL_BATCH_SIZE))
    return compute(TASK, scores, y, TARGET_STD, TARGET_MEAN, TARGET_TRANSFORM)
