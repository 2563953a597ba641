"""The generated parts of best_model.py: its docstring, the data's constants, the recipe.

    docstring(checked, provenance)  where the model comes from, its metrics, how to use it
    data(checked)                   what a raw row is and how it becomes the model's input
    recipe(checked)                 the training recipe as constants, and `new_model`

Every value is checked (validate) and written as a literal; free text as escaped text.
"""

from __future__ import annotations

import inspect
import math
import textwrap

from automodel.export.literals import (
    LINE_LENGTH,
    assign,
    choice,
    doc,
    float_literal,
    string,
    tuple_lines,
    tuple_of,
    width,
)
from automodel.export.validate import Checked
from automodel.models import pretrained
from automodel.runtime.recipe import AUGMENTS, KEEPS, OPTIMIZERS, SCHEDULES

TORCHVISION_FAMILIES = ("pretrained",)  # their exported Model builds a torchvision backbone


def docstring(checked: Checked, prov: dict) -> str:
    spec, trial = checked.spec, checked.trial
    lines = [
        f'"""Trial {trial} of automodel study {doc(prov["study"])}: '
        f"a {checked.family} for {doc(spec.name)}, as plain PyTorch.",
        "",
        f"study: {doc(prov['study'])}",
        f"trial: {trial}",
    ]
    for metrics, label in ((checked.val, "validation"), (checked.test, "test")):
        for name, value in metrics.items():
            lines.append(f"{label} {name}: {float_literal(value)}")
        if not metrics:
            lines.append(f"{label}: not measured")
    for line in checked.selection:
        lines += textwrap.wrap(line, LINE_LENGTH, break_long_words=False, break_on_hyphens=False)
    if prov.get("mlflow_run_id"):
        lines.append(f"mlflow run: {doc(prov['mlflow_run_id'])}")
    lines += [
        f"versions: automodel {doc(prov['automodel'])}, torch {doc(prov['torch'])}",
        f"exported: {doc(prov['date'])}",
        f"command: {doc(prov.get('command') or '(not recorded)')}",
    ]
    if prov.get("search_command") and prov["search_command"] != prov.get("command"):
        lines.append(f"searched with: {doc(prov['search_command'])}")
    return "\n".join(lines + usage(checked))


def usage(checked: Checked) -> list[str]:
    spec = checked.spec
    needs = "torch and numpy" + (", and Pillow to read image files" if spec.image_mode else "")
    if checked.family in TORCHVISION_FAMILIES:
        needs += "; torchvision for its backbone"
    # With a CSV or image files, the labels come with the inputs (target column, class folders).
    if spec.image_mode is not None:
        x, xv, y, yv = "images/", "val_images/", "", ""
    elif spec.columns is not None:
        x, xv, y, yv = "X.csv", "Xv.csv", "", ""
    else:
        x, xv, y, yv = "X.npy", "Xv.npy", " --labels y.npy", " --val-labels yv.npy"
    lines = [
        "",
        f"Usage (needs {needs}):",
        f"    python best_model.py predict --input {x} [--output predictions.csv]",
        f"    python best_model.py evaluate --input {x}{y}",
        f"    python best_model.py train --input {x}{y} \\",
        f"        [--val-input {xv}{yv}] [--output retrained.pt]",
        "",
        "    from best_model import load_model, predict",
    ]
    if spec.task == "classification":
        lines += ["    labels, probabilities = predict(rows)", ""]
        labels = "Labels are class names or indices."
    else:
        lines += ["    values, _ = predict(rows)", ""]
        labels = "Labels are the target's numbers."
    text = _inputs_text(checked, labels) + " The weights in weights.pt load with weights_only=True."
    wrapped = textwrap.wrap(text, LINE_LENGTH, break_long_words=False, break_on_hyphens=False)
    return [*lines, *wrapped, '"""']


def _inputs_text(checked: Checked, labels: str) -> str:
    spec = checked.spec
    if spec.columns is not None:
        names = ", ".join(doc(c["name"]) for c in spec.columns)
        target = doc(spec.target) if spec.target is not None else "the target"
        return (
            f"Inputs are raw CSV rows with the columns {names}, read by name from a header row "
            "and encoded here as the search encoded them (missing cells imputed, categories "
            f"one-hot or hashed). {labels} A column {target} in the input CSV gives them too."
        )
    if spec.image_mode is not None:
        return (
            "Inputs are image files (a file, or a folder of them; with a folder per class it "
            f"gives the labels too), read in mode {spec.image_mode} at {spec.input_shape[1]}x"
            f"{spec.input_shape[2]}, or their raw pixel values as .npy rows "
            f"({math.prod(spec.input_shape)} values each). {labels}"
        )
    return (
        f"Inputs are raw rows as the dataset gives them: {math.prod(spec.input_shape)} "
        f"values each (.npy, or .csv with one column per value), reshaped here to "
        f"{spec.input_shape} and normalised with the training split's statistics. {labels}"
    )


def data(checked: Checked) -> str:
    spec = checked.spec
    per = "feature" if len(spec.input_shape) == 1 else "channel"
    lines = [
        f"TASK = {string(spec.task)}",
        f"METRIC = {string(spec.metric)}  # the validation metric the search selected on",
    ]
    if checked.columns is not None:
        lines += [
            "# Raw CSV cells are encoded by COLUMNS, one entry per column in input order:",
            '# (name, "numeric", fill value when missing, adds a missing indicator),',
            '# (name, "onehot", levels) or (name, "hash", buckets). The settings were fitted on',
            "# the training split.",
            *tuple_lines("COLUMNS = ", checked.columns, 0, ""),
            f"TARGET = {string(spec.target) if spec.target is not None else None}"
            "  # the CSV column that holds the labels",
        ]
    else:
        lines += ["COLUMNS = None  # inputs are numbers, not CSV cells to encode", "TARGET = None"]
    if spec.image_mode is not None:
        lines.append(f"IMAGE_MODE = {string(spec.image_mode)}  # image files are read in this mode")
    else:
        lines.append("IMAGE_MODE = None  # inputs are not image files")
    lines += [
        f"# Raw rows are reshaped to INPUT_SHAPE and normalised per {per} as (x - MEAN) / STD,",
        "# in float32, with the training split's statistics, exactly as during the search.",
        f"INPUT_SHAPE = {tuple_of([str(n) for n in spec.input_shape])}",
        assign("MEAN", [float_literal(v) for v in spec.mean]),
        assign("STD", [float_literal(v) for v in spec.std]),
        assign("CLASSES", [string(c) for c in spec.classes]),
    ]
    if spec.task == "regression" and spec.target_transform == "log1p":
        lines += [
            "# The model predicts (log1p(y) - TARGET_MEAN) / TARGET_STD (training split",
            "# statistics); predictions and metrics are back in y's own units.",
            f"TARGET_MEAN = {float_literal(spec.target_mean)}",
            f"TARGET_STD = {float_literal(spec.target_std)}",
            'TARGET_TRANSFORM = "log1p"  # the training split\'s target is skewed to the right',
        ]
    elif spec.task == "regression":
        lines += [
            "# The model predicts (y - TARGET_MEAN) / TARGET_STD (training split statistics).",
            f"TARGET_MEAN = {float_literal(spec.target_mean)}",
            f"TARGET_STD = {float_literal(spec.target_std)}",
            'TARGET_TRANSFORM = "none"  # or log1p, for a target skewed to the right',
        ]
    else:
        lines.append("TARGET_MEAN, TARGET_STD = 0.0, 1.0  # regression only")
        lines.append('TARGET_TRANSFORM = "none"')
    return "\n".join(lines)


def recipe(checked: Checked) -> str:
    r = checked.recipe
    regression = checked.spec.task == "regression"
    loss = f"{string(r['loss'])}  # on the normalised target" if regression else "None"
    lines = [
        f"# The training recipe of trial {checked.trial}, as the search ran it (`train` "
        "reproduces it).",
        f"OPTIMIZER = {string(r['optimizer'])}  # {_summary(OPTIMIZERS[r['optimizer']])}",
        f"LR = {float_literal(r['lr'])}",
        f"WEIGHT_DECAY = {float_literal(r['weight_decay'])}",
        f"L1 = {float_literal(r['l1'])}  # times the sum of |w| over the weights, in the loss",
        f"MOMENTUM = {float_literal(r['momentum'])}"
        + ("" if r["optimizer"] == "sgd" else "  # sgd only"),
        f"SCHEDULE = {string(r['schedule'])}  # {_summary(SCHEDULES[r['schedule']])}",
        f"BATCH_SIZE = {r['batch_size']}",
        f"EPOCHS = {r['epochs']}",
        f"SCHEDULE_EPOCHS = {r['schedule_epochs']}  # the epochs SCHEDULE spans",
        f"LABEL_SMOOTHING = {float_literal(r['label_smoothing'])}"
        + ("  # classification only" if regression else ""),
        f"LOSS = {loss}" + ("" if regression else "  # classification: cross-entropy"),
        f"AUGMENT = {string(r['augment'])}  # {AUGMENTS[r['augment']]}",
        f"SEED = {r['seed']}  # seeds the initial weights and the batch order",
        f"KEEP = {string(r['keep'])}  # {KEEPS[r['keep']]}",
        "",
        "",
        _new_model(checked.family, checked.params),
    ]
    return "\n".join(lines)


def _summary(builder) -> str:
    """The first line of a recipe table entry's docstring, for a comment."""
    return inspect.getdoc(builder).splitlines()[0]


NEW_MODEL = '''def new_model() -> Model:
    """A freshly initialised Model (seed torch first to get the search's initial weights)."""
    return Model()'''
NEW_PRETRAINED = '''def new_model() -> Model:
    """A new Model whose backbone starts from the PRETRAINED weights, as in the search
    (seed torch first to get the search's initial head)."""
    model = Model()
    model[0].load_pretrained(PRETRAINED)
    return model'''


def _new_model(family: str, params: dict) -> str:
    """`new_model`, what `train` starts from: a fresh Model, or for a pretrained backbone the
    Model with the backbone's pretrained weights (from the same place as in the search)."""
    weights = params.get("weights", pretrained.PARAMS["weights"].default)
    if family != "pretrained" or weights == "none":
        return NEW_MODEL
    if weights == "hub":
        name = params.get("backbone", pretrained.PARAMS["backbone"].default)
        file = pretrained.hub_path(choice("backbone", name, pretrained.BACKBONES)).name
        lines = [
            "# The backbone's pretrained weights: torchvision's file in the torch hub cache.",
            'HUB_CHECKPOINTS = Path(torch.hub.get_dir()) / "checkpoints"',
            f"PRETRAINED = HUB_CHECKPOINTS / {string(file)}",
        ]
    else:
        lines = ["# The backbone's pretrained weights, as the search loaded them."]
        one = f"PRETRAINED = Path({string(weights)})"
        lines += (
            [one]
            if width(one) <= LINE_LENGTH
            else ["PRETRAINED = Path(", f"    {string(weights)}", ")"]
        )
    return "\n".join([*lines, "", "", NEW_PRETRAINED])
