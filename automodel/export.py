"""Export a trained candidate as code: `best_model.py` (torch and numpy only) plus its weights.

    render(checkpoint, provenance) -> the source of best_model.py
    write(study_dir, checkpoint, provenance) -> <study_dir>/export/, replaced whole or not at all

The architecture is rendered from the trained module tree: one constructor call per layer,
with literal arguments read from the layer's attributes, for layer types listed in `LAYERS`.
Nothing that came from a config reaches the source as text: names are checked against
allowlists, numbers must be finite ints or floats, and free text (class names, the study name,
the command line) is written as an escaped string literal (`_str`) or escaped docstring text
(`_doc`), so it can never end a string or start a line of code. Every rendered layer is
rebuilt from its own source and compared with the trained one, and `write` loads the written
script and checks that it reproduces the trained model's outputs before it replaces anything.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import math
import numbers
import os
import runpy
import shutil
import tempfile
import textwrap
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from automodel import __version__, models
from automodel.data import DataSpec
from automodel.export_script import IMPORTS, RUNTIME
from automodel.models import pretrained, resnet
from automodel.models.blocks import ACTIVATIONS, FastDropout

EXPORT_DIR = "export"
SCRIPT = "best_model.py"
WEIGHTS = "weights.pt"
_BACKUP = "export.old"
_TMP_PREFIX = "export.tmp-"
LINE_LENGTH = 88  # ruff's and black's default: the script is formatted for it

TASKS = ("classification", "regression")
METRICS = ("accuracy", "f1_macro", "rmse", "mae", "r2")
SELECTED = {"classification": "accuracy", "regression": "rmse"}  # what the search ranks by
# DataSpec's fields, plus "columns" (optional: a table's column names, in input order).
SPEC_KEYS = {f.name for f in dataclasses.fields(DataSpec)} | {"columns"}
RECIPE_KEYS = {
    "loss",
    "augment",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "batch_size",
    "schedule",
    "label_smoothing",
    "epochs",
    "seed",
}
SCHEDULES = ("constant", "cosine")
TORCHVISION_FAMILIES = ("pretrained",)  # their exported Model builds a torchvision backbone
AUGMENTS = {  # as train.augment applies them to each training batch of images
    "none": "no augmentation",
    "flip": "random horizontal flips",
    "crop": "random crops of the padded image",
    "crop_flip": "random crops of the padded image and horizontal flips",
}
LOSSES = {  # regression losses on the normalised targets, as train.make_loss builds them
    "mse": "nn.MSELoss()",
    "huber": "nn.HuberLoss()",
}


class ExportError(ValueError):
    """The checkpoint cannot be written as code (an unknown layer, a value that is not allowed)."""


@dataclass(frozen=True)
class Layer:
    """How to write one layer type as a constructor call with literal arguments.

    `positional` names the attributes passed by position. `keywords` maps attribute names to
    the constructor's default: the argument is left out when the value equals it (a callable
    default is computed from the layer; `ALWAYS` writes it). `choices` lists the strings an
    attribute may hold. `source` is the class definition of a custom block (torch-only, `nn`
    in scope), written once into the script.
    """

    positional: tuple[str, ...] = ()
    keywords: dict = field(default_factory=dict)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str | None = None


ALWAYS = object()
_INPLACE = {"inplace": False}
_CONV = Layer(
    ("in_channels", "out_channels"),
    {
        "kernel_size": ALWAYS,
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "groups": 1,
        "bias": True,
        "padding_mode": "zeros",
    },
    {"padding": ("same", "valid"), "padding_mode": ("zeros", "reflect", "replicate", "circular")},
)
_NORM = Layer(
    ("num_features",),
    {"eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True},
)


def _kernel(layer: nn.Module):
    return layer.kernel_size


_MAX_POOL = Layer(
    ("kernel_size",),
    {"stride": _kernel, "padding": 0, "dilation": 1, "return_indices": False, "ceil_mode": False},
)
_AVG_POOL = Layer(
    ("kernel_size",),
    {"stride": _kernel, "padding": 0, "ceil_mode": False, "count_include_pad": True},
)

# Layer types the exporter can write. A family that builds anything else fails to export
# with an error naming the layer: add its entry here (and a test family shape in the tests).
LAYERS: dict[type[nn.Module], Layer] = {
    nn.Linear: Layer(("in_features", "out_features"), {"bias": True}),
    nn.Conv1d: _CONV,
    nn.Conv2d: _CONV,
    nn.BatchNorm1d: _NORM,
    nn.BatchNorm2d: _NORM,
    nn.LayerNorm: Layer(("normalized_shape",), {"eps": 1e-5, "elementwise_affine": True}),
    nn.ReLU: Layer(keywords=_INPLACE),
    nn.GELU: Layer(keywords={"approximate": "none"}, choices={"approximate": ("none", "tanh")}),
    nn.SiLU: Layer(keywords=_INPLACE),
    nn.Tanh: Layer(),
    nn.Sigmoid: Layer(),
    nn.LeakyReLU: Layer(keywords={"negative_slope": 0.01, **_INPLACE}),
    nn.ELU: Layer(keywords={"alpha": 1.0, **_INPLACE}),
    nn.Dropout: Layer(keywords={"p": 0.5, **_INPLACE}),
    nn.MaxPool1d: _MAX_POOL,
    nn.MaxPool2d: _MAX_POOL,
    nn.AvgPool1d: _AVG_POOL,
    nn.AvgPool2d: _AVG_POOL,
    nn.AdaptiveAvgPool1d: Layer(("output_size",)),
    nn.AdaptiveAvgPool2d: Layer(("output_size",)),
    nn.Flatten: Layer(keywords={"start_dim": 1, "end_dim": -1}),
    nn.Unflatten: Layer(("dim", "unflattened_size")),
    nn.Identity: Layer(),
}

# Custom blocks of the families, written into the script once as classes.
LAYERS[resnet.ResBlock] = Layer(
    ("dims", "in_channels", "out_channels"),
    {"stride": 1, "activation": "relu", "batch_norm": True},
    {"activation": tuple(ACTIVATIONS)},
    source=inspect.getsource(resnet.ResBlock),
)
LAYERS[resnet.ResLinear] = Layer(
    ("width",),
    {"activation": "relu", "dropout": 0.0, "batch_norm": True},
    {"activation": tuple(ACTIVATIONS)},
    source=inspect.getsource(resnet.ResLinear),
)
LAYERS[FastDropout] = Layer(("p",), source=inspect.getsource(FastDropout))
# The pretrained family's backbone: the script builds it with torchvision (random weights, then
# weights.pt), so it needs torchvision; `new_model` loads the pretrained weights it started from.
LAYERS[pretrained.Backbone] = Layer(
    ("name", "in_channels"),
    {"finetune": "full"},
    {"name": pretrained.BACKBONES, "finetune": ("head", "full")},
    source=inspect.getsource(pretrained.Backbone),
)

OPTIMIZERS: dict[str, str] = {  # the search's construction (train.make_optimizer), on CPU
    "adam": "torch.optim.Adam(params, lr=LR, weight_decay=WEIGHT_DECAY, fused=True)",
    "adamw": "torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, fused=True)",
    "sgd": (
        "torch.optim.SGD(\n"
        "        params,\n"
        "        lr=LR,\n"
        "        momentum=MOMENTUM,\n"
        "        weight_decay=WEIGHT_DECAY,\n"
        "        nesterov={nesterov},\n"
        "        fused=True,\n"
        "    )"
    ),
    "rmsprop": "torch.optim.RMSprop(params, lr=LR, weight_decay=WEIGHT_DECAY, foreach=True)",
}
_OPTIMIZER_DOCS = {
    "adam": "Adam with fused kernels, as the search built it.",
    "adamw": "AdamW with fused kernels, as the search built it.",
    "sgd": "SGD with fused kernels (Nesterov momentum when MOMENTUM > 0), as the search built it.",
    "rmsprop": "RMSprop with foreach kernels (it has no fused ones), as the search built it.",
}


# ---------------------------------------------------------------------------- public API


def provenance(
    study: str, command: str, mlflow_run_id: str | None = None, search_command: str | None = None
) -> dict:
    """Where an export comes from: the study, the commands, the versions, the date (UTC)."""
    return {
        "study": study,
        "command": command,
        "search_command": search_command,
        "mlflow_run_id": mlflow_run_id,
        "automodel": __version__,
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def render(checkpoint: dict, provenance: dict) -> str:
    """The source of best_model.py for `checkpoint` (see search.checkpoint). Raises ExportError."""
    spec = _spec(checkpoint["spec"])
    recipe = _recipe(checkpoint["recipe"])
    family = _choice("family", checkpoint["family"], tuple(models.FAMILIES))
    columns = _columns(spec)
    trial = _int("trial", checkpoint["trial"])
    with torch.random.fork_rng(devices=[]):  # building layers draws from torch's generator
        model = _model(checkpoint, spec)
        blocks: dict[str, str] = {}
        layers = _layers(model, torch.zeros(1, *spec.input_shape), 12, blocks)
    n_params = sum(p.numel() for p in model.parameters())
    # (text, holds a def or class): ruff puts two blank lines around those, one elsewhere.
    parts = [
        (_docstring(checkpoint, spec, family, provenance), False),
        (IMPORTS, False),
        (_data_section(spec, columns), False),
        (_recipe_section(recipe, trial, spec, _new_model(family, checkpoint["params"])), True),
        *((source, True) for source in blocks.values()),
        (_model_class(family, spec, n_params, layers), True),
        (RUNTIME, True),
    ]
    out = parts[0][0].strip("\n") + "\n"
    for (_, defs_before), (text, defs) in itertools.pairwise(parts):
        out += ("\n\n" if defs or defs_before else "\n") + text.strip("\n") + "\n"
    return out


def write(study_dir: Path, checkpoint: dict, provenance: dict) -> Path:
    """Write `<study_dir>/export/` (best_model.py, weights.pt); returns its path.

    Everything is written and checked in a temporary folder first, which then replaces the
    previous export by renames: an interrupted export leaves the previous one (or, killed
    between the two renames, its backup, which `recover` puts back on the next call).
    """
    study_dir = Path(study_dir)
    recover(study_dir)
    source = render(checkpoint, provenance)
    with torch.random.fork_rng(devices=[]):
        model = _model(checkpoint, _spec(checkpoint["spec"]))
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=study_dir))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the export is meant to be shipped
        _write_bytes(tmp / SCRIPT, source.encode("utf-8"))
        _save_weights(tmp / WEIGHTS, model.state_dict())
        check(tmp, model)
        _swap(tmp, study_dir / EXPORT_DIR, study_dir / _BACKUP)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return study_dir / EXPORT_DIR


def recover(study_dir: Path) -> None:
    """Clean up after an export that was killed: restore its backup, drop its temporary folder."""
    study_dir = Path(study_dir)
    final, backup = study_dir / EXPORT_DIR, study_dir / _BACKUP
    if backup.is_dir():
        if final.is_dir():
            shutil.rmtree(backup)
        else:
            os.replace(backup, final)
    for tmp in study_dir.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)


def check(export_dir: Path, model: nn.Module) -> None:
    """Load the written script and weights; raise ExportError unless they reproduce `model`."""
    with torch.random.fork_rng(devices=[]):
        script = runpy.run_path(str(export_dir / SCRIPT), run_name="best_model")
        exported = script["load_model"](export_dir / WEIGHTS)
        model = model.eval()
        keys, expected_keys = list(exported.state_dict()), list(model.state_dict())
        if keys != expected_keys:
            raise ExportError(
                f"the exported model's weights are named {keys[:4]}..., the trained model's "
                f"{expected_keys[:4]}...; the exporter renders the layers in another structure"
            )
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(8, *script["INPUT_SHAPE"], generator=gen)
        with torch.inference_mode():
            if not torch.allclose(exported(x), model(x), atol=1e-6, rtol=0):
                raise ExportError("the exported model's outputs differ from the trained model's")


# ---------------------------------------------------------------- checked values -> text


def _int(name: str, value, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ExportError(f"{name} must be an int, got {value!r}")
    if low is not None and value < low:
        raise ExportError(f"{name} must be >= {low}, got {value!r}")
    return int(value)


def _float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ExportError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ExportError(f"{name} must be finite, got {value!r}")
    return float(value)


def _choice(name: str, value, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ExportError(f"{name} {value!r} cannot be exported; allowed: {', '.join(allowed)}")
    return value


def _float_literal(value: float) -> str:
    # repr round-trips exactly; ruff writes exponents without "+" (1e20, not 1e+20).
    return repr(float(value)).replace("e+", "e")


def _escape(text: str, quote: str) -> str:
    """Escape everything that could end the literal or hide in it: quotes, backslashes, and
    every non-printable character (newlines, controls, bidirectional overrides)."""
    out = []
    for ch in text:
        if ch == "\\" or ch == quote:
            out.append("\\" + ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def _str(value) -> str:
    """A string literal for any text; quotes chosen as ruff would, so the file is stable."""
    if not isinstance(value, str):
        raise ExportError(f"expected a string, got {value!r}")
    quote = "'" if value.count('"') > value.count("'") else '"'
    return quote + _escape(value, quote) + quote


def _doc(value) -> str:
    """Free text for the module docstring: one line that cannot end the docstring."""
    return _escape(str(value).rstrip(), '"')


def _tuple(items: list[str]) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _assign(name: str, items: list[str], comment: str = "") -> str:
    """`NAME = (a, b)` on one line when it fits, else one item per line (ruff's layout)."""
    one = f"{name} = {_tuple(items)}"
    if _width(one) <= LINE_LENGTH:
        return one + (f"  # {comment}" if comment else "")
    head = f"{name} = (" + (f"  # {comment}" if comment else "")
    return "\n".join([head, *(f"    {item}," for item in items), ")"])


def _width(line: str) -> int:
    """Columns as ruff counts them: wide (East Asian) characters take two, combining none."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in line
    )


def _literal(name: str, value, choices: tuple[str, ...] = ()) -> str:
    """A layer argument: bools, ints, finite floats, tuples of them, strings in `choices`."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, numbers.Integral):
        return repr(int(value))
    if isinstance(value, numbers.Real):
        return _float_literal(_float(name, value))
    if isinstance(value, str):
        return _str(_choice(name, value, choices))
    if isinstance(value, (tuple, list)):
        return _tuple([_literal(name, v, choices) for v in value])
    raise ExportError(f"{name} {value!r} cannot be written as a literal")


# ------------------------------------------------------------------ checkpoint sections


def _spec(raw: dict) -> DataSpec:
    """The checkpoint's data spec, every value checked (unknown fields are refused)."""
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise ExportError(
            f"data spec field {unknown[0]!r} is not handled by the exporter; teach "
            "automodel/export.py to write it into the script"
        )
    spec = DataSpec.from_dict(raw)
    task = _choice("task", spec.task, TASKS)
    _choice("metric", spec.metric, (SELECTED[task],))
    if not 1 <= len(spec.input_shape) <= 3:
        raise ExportError(f"input_shape must have 1 to 3 dims, got {spec.input_shape!r}")
    for n in spec.input_shape:
        _int("input_shape", n, low=1)
    low = 2 if task == "classification" else 0
    if _int("n_classes", spec.n_classes, low) != len(spec.classes):
        raise ExportError(
            f"n_classes is {spec.n_classes} but there are {len(spec.classes)} classes"
        )
    if task == "regression" and spec.classes:
        raise ExportError(f"a regression has no classes, got {list(spec.classes)!r}")
    for c in spec.classes:
        _str(c)
    if len(set(spec.classes)) != len(spec.classes):
        raise ExportError(f"class names must be unique, got {list(spec.classes)!r}")
    if spec.image_mode is not None:
        channels = {"L": 1, "RGB": 3}[_choice("image_mode", spec.image_mode, IMAGE_MODES)]
        if len(spec.input_shape) != 3 or spec.input_shape[0] != channels:
            raise ExportError(
                f"image_mode {spec.image_mode} needs an input shape ({channels}, H, W), "
                f"got {spec.input_shape!r}"
            )
    if spec.target is not None:
        _str(spec.target)
    _float("target_mean", spec.target_mean)
    if _float("target_std", spec.target_std) <= 0:
        raise ExportError(f"target_std must be > 0, got {spec.target_std!r}")
    channels = spec.input_shape[0]
    for key in ("mean", "std"):
        values = getattr(spec, key)
        if len(values) != channels:
            raise ExportError(f"{key} needs {channels} values, got {len(values)}")
        for v in values:
            _float(key, v)
    if any(s <= 0 for s in spec.std):
        raise ExportError(f"std must be > 0, got {list(spec.std)!r}")
    return spec


COLUMN_KEYS = {
    "numeric": {"name", "kind", "fill", "indicator"},
    "onehot": {"name", "kind", "levels"},
    "hash": {"name", "kind", "buckets"},
}
IMAGE_MODES = ("L", "RGB")


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
        kind = _choice("column kind", c.get("kind"), tuple(COLUMN_KEYS))
        if set(c) != COLUMN_KEYS[kind]:
            raise ExportError(
                f"a {kind} column has the keys {sorted(COLUMN_KEYS[kind])}, got {c!r}"
            )
        name = _str(c["name"])
        if c["name"] in names:
            raise ExportError(f"column names must be unique, got {c['name']!r} twice")
        names.add(c["name"])
        if kind == "numeric":
            if not isinstance(c["indicator"], bool):
                raise ExportError(f"indicator must be true or false, got {c['indicator']!r}")
            entries.append(
                [name, '"numeric"', _float_literal(_float("fill", c["fill"])), repr(c["indicator"])]
            )
            n_features += 1 + c["indicator"]
        elif kind == "onehot":
            levels = list(c["levels"])
            if not levels or len(set(levels)) != len(levels):
                raise ExportError(f"onehot levels must be unique and not empty, got {levels!r}")
            entries.append([name, '"onehot"', [_str(v) for v in levels]])
            n_features += len(levels)
        else:
            buckets = _int("buckets", c["buckets"], 1)
            entries.append([name, '"hash"', str(buckets)])
            n_features += buckets
    if n_features != spec.input_shape[0]:
        raise ExportError(
            f"the columns encode {n_features} features, the model reads {spec.input_shape[0]}"
        )
    return entries


def _recipe(raw: dict) -> dict:
    unknown = sorted(set(raw) - RECIPE_KEYS)
    if unknown:
        raise ExportError(
            f"training recipe field {unknown[0]!r} is not handled by the exporter; teach "
            "automodel/export.py to write it into the script"
        )
    return {
        "loss": _choice("loss", raw.get("loss", "mse"), tuple(LOSSES)),
        "augment": _choice("augment", raw.get("augment", "none"), tuple(AUGMENTS)),
        "optimizer": _choice("optimizer", raw["optimizer"], tuple(OPTIMIZERS)),
        "schedule": _choice("schedule", raw["schedule"], SCHEDULES),
        "lr": _float("lr", raw["lr"]),
        "weight_decay": _float("weight_decay", raw["weight_decay"]),
        "momentum": _float("momentum", raw["momentum"]),
        "label_smoothing": _float("label_smoothing", raw["label_smoothing"]),
        "batch_size": _int("batch_size", raw["batch_size"], 1),
        "epochs": _int("epochs", raw["epochs"], 1),
        "seed": _int("seed", raw["seed"], 0),
    }


def _model(checkpoint: dict, spec: DataSpec) -> nn.Module:
    """The trained module: rebuilt by its family from `params`, with the checkpoint's weights."""
    try:
        model = models.create(checkpoint["family"], checkpoint["params"], spec)
    except ValueError as err:
        raise ExportError(str(err)) from None
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ExportError(f"the checkpoint's weights do not fit its model: {first}") from None
    if type(model) is not nn.Sequential:
        raise ExportError(
            f"family {checkpoint['family']!r} builds a {type(model).__name__}; the exporter "
            "writes nn.Sequential models (put custom parts in blocks listed in export.LAYERS)"
        )
    return model.eval()


def _docstring(checkpoint: dict, spec: DataSpec, family: str, prov: dict) -> str:
    trial = _int("trial", checkpoint["trial"])
    lines = [
        f'"""Trial {trial} of automodel study {_doc(prov["study"])}: '
        f"a {family} for {_doc(spec.name)}, as plain PyTorch.",
        "",
        f"study: {_doc(prov['study'])}",
        f"trial: {trial}",
    ]
    for split, label in (("val", "validation"), ("test", "test")):
        metrics = checkpoint.get(split) or {}
        for name, value in metrics.items():
            lines.append(
                f"{label} {_choice('metric', name, METRICS)}: {_float_literal(_float(name, value))}"
            )
        if not metrics:
            lines.append(f"{label}: not measured")
    if prov.get("mlflow_run_id"):
        lines.append(f"mlflow run: {_doc(prov['mlflow_run_id'])}")
    lines += [
        f"versions: automodel {_doc(prov['automodel'])}, torch {_doc(prov['torch'])}",
        f"exported: {_doc(prov['date'])}",
        f"command: {_doc(prov.get('command') or '(not recorded)')}",
    ]
    if prov.get("search_command") and prov["search_command"] != prov.get("command"):
        lines.append(f"searched with: {_doc(prov['search_command'])}")
    return "\n".join(lines + _usage(spec, family))


def _usage(spec: DataSpec, family: str) -> list[str]:
    needs = "torch and numpy" + (", and Pillow to read image files" if spec.image_mode else "")
    if family in TORCHVISION_FAMILIES:
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
    if spec.columns is not None:
        names = ", ".join(_doc(c["name"]) for c in spec.columns)
        target = _doc(spec.target) if spec.target is not None else "the target"
        text = (
            f"Inputs are raw CSV rows with the columns {names}, read by name from a header row "
            "and encoded here as the search encoded them (missing cells imputed, categories "
            f"one-hot or hashed). {labels} A column {target} in the input CSV gives them too."
        )
    elif spec.image_mode is not None:
        text = (
            "Inputs are image files (a file, or a folder of them; with a folder per class it "
            f"gives the labels too), read in mode {spec.image_mode} at {spec.input_shape[1]}x"
            f"{spec.input_shape[2]}, or their raw pixel values as .npy rows "
            f"({math.prod(spec.input_shape)} values each). {labels}"
        )
    else:
        text = (
            f"Inputs are raw rows as the dataset gives them: {math.prod(spec.input_shape)} "
            f"values each (.npy, or .csv with one column per value), reshaped here to "
            f"{spec.input_shape} and normalised with the training split's statistics. {labels}"
        )
    text += " The weights in weights.pt load with weights_only=True."
    wrapped = textwrap.wrap(text, LINE_LENGTH, break_long_words=False, break_on_hyphens=False)
    return [*lines, *wrapped, '"""']


def _data_section(spec: DataSpec, columns: list | None) -> str:
    per = "feature" if len(spec.input_shape) == 1 else "channel"
    shape = _tuple([str(n) for n in spec.input_shape])
    lines = [f"TASK = {_str(spec.task)}"]
    if columns is not None:
        lines += [
            "# Raw CSV cells are encoded by COLUMNS, one entry per column in input order:",
            '# (name, "numeric", fill value when missing, adds a missing indicator),',
            '# (name, "onehot", levels) or (name, "hash", buckets). The settings were fitted on',
            "# the training split.",
            *_tuple_lines("COLUMNS = ", columns, 0, ""),
            f"TARGET = {_str(spec.target) if spec.target is not None else None}"
            "  # the CSV column that holds the labels",
        ]
    else:
        lines += ["COLUMNS = None  # inputs are numbers, not CSV cells to encode", "TARGET = None"]
    if spec.image_mode is not None:
        lines.append(f"IMAGE_MODE = {_str(spec.image_mode)}  # image files are read in this mode")
    else:
        lines.append("IMAGE_MODE = None  # inputs are not image files")
    lines += [
        f"# Raw rows are reshaped to INPUT_SHAPE and normalised per {per} as (x - MEAN) / STD,",
        "# in float32, with the training split's statistics, exactly as during the search.",
        f"INPUT_SHAPE = {shape}",
        _assign("MEAN", [_float_literal(v) for v in spec.mean]),
        _assign("STD", [_float_literal(v) for v in spec.std]),
        _assign("CLASSES", [_str(c) for c in spec.classes]),
    ]
    if spec.task == "regression":
        lines += [
            "# The model predicts (y - TARGET_MEAN) / TARGET_STD (training split statistics).",
            f"TARGET_MEAN = {_float_literal(spec.target_mean)}",
            f"TARGET_STD = {_float_literal(spec.target_std)}",
        ]
    else:
        lines.append("TARGET_MEAN, TARGET_STD = 0.0, 1.0  # regression only")
    return "\n".join(lines)


def _tuple_lines(prefix: str, items: list, indent: int, suffix: str) -> list[str]:
    """A nested tuple literal as ruff formats it: on one line when it fits, else one item per
    line (nested tuples split the same way), each with a trailing comma."""
    pad = " " * indent
    one = f"{pad}{prefix}{_flat(items)}{suffix}"
    if _width(one) <= LINE_LENGTH:
        return [one]
    lines = [f"{pad}{prefix}("]
    for item in items:
        if isinstance(item, list):
            lines += _tuple_lines("", item, indent + 4, ",")
        else:
            lines.append(f"{pad}    {item},")
    return [*lines, f"{pad}){suffix}"]


def _flat(items: list) -> str:
    return _tuple([_flat(i) if isinstance(i, list) else i for i in items])


def _recipe_section(recipe: dict, trial: int, spec: DataSpec, new_model: str) -> str:
    optimizer = OPTIMIZERS[recipe["optimizer"]].format(nesterov=recipe["momentum"] > 0)
    lines = [
        f"# The training recipe of trial {trial}, as the search ran it (`train` reproduces it).",
        f"LR = {_float_literal(recipe['lr'])}",
        f"WEIGHT_DECAY = {_float_literal(recipe['weight_decay'])}",
    ]
    if recipe["optimizer"] == "sgd":
        lines.append(f"MOMENTUM = {_float_literal(recipe['momentum'])}")
    schedule = {
        "cosine": "cosine annealing from LR to 0 over EPOCHS, stepped per epoch",
        "constant": "the learning rate stays LR",
    }[recipe["schedule"]]
    lines += [
        f"SCHEDULE = {_str(recipe['schedule'])}  # {schedule}",
        f"BATCH_SIZE = {recipe['batch_size']}",
        f"EPOCHS = {recipe['epochs']}",
    ]
    if spec.task == "classification":
        lines.append(f"LABEL_SMOOTHING = {_float_literal(recipe['label_smoothing'])}")
        loss, loss_doc = "nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)", "Cross-entropy"
    else:
        loss = LOSSES[recipe["loss"]]
        loss_doc = f"{recipe['loss'].upper()} of the normalised targets"
    lines += [
        f"AUGMENT = {_str(recipe['augment'])}  # {AUGMENTS[recipe['augment']]}",
        f"SEED = {recipe['seed']}  # seeds the initial weights and the batch order",
        "",
        "",
        "def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:",
        f'    """{_OPTIMIZER_DOCS[recipe["optimizer"]]}"""',
        "    params = model.parameters()",
        f"    return {optimizer}",
        "",
        "",
        "def make_loss() -> nn.Module:",
        f'    """{loss_doc}, as the search trained with."""',
        f"    return {loss}",
        "",
        "",
        new_model,
    ]
    return "\n".join(lines)


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
        file = pretrained.hub_path(_choice("backbone", name, pretrained.BACKBONES)).name
        lines = [
            "# The backbone's pretrained weights: torchvision's file in the torch hub cache.",
            'HUB_CHECKPOINTS = Path(torch.hub.get_dir()) / "checkpoints"',
            f"PRETRAINED = HUB_CHECKPOINTS / {_str(file)}",
        ]
    else:
        lines = ["# The backbone's pretrained weights, as the search loaded them."]
        one = f"PRETRAINED = Path({_str(weights)})"
        lines += (
            [one]
            if _width(one) <= LINE_LENGTH
            else ["PRETRAINED = Path(", f"    {_str(weights)}", ")"]
        )
    return "\n".join([*lines, "", "", NEW_PRETRAINED])


# -------------------------------------------------------------------------- module tree


def _layers(seq: nn.Sequential, x: torch.Tensor, indent: int, blocks: dict) -> list[str]:
    """One line per layer (a nested Sequential spans several), each noting its output shape."""
    pad = " " * indent
    lines = []
    for i, (name, child) in enumerate(seq.named_children()):
        if name != str(i):
            raise ExportError(f"layer names must be 0, 1, ...; got {name!r} at position {i}")
        with torch.no_grad():
            y = child(x)
        note = f"  # -> {_tuple([str(n) for n in y.shape[1:]])}"
        if type(child) is nn.Sequential and len(child):
            inner = _layers(child, x, indent + 4, blocks)
            lines += [f"{pad}nn.Sequential(", *inner, f"{pad}),{note}"]
        elif type(child) is nn.Sequential:
            lines.append(f"{pad}nn.Sequential(),{note}")
        else:
            lines.append(f"{pad}{_call(child, blocks)},{note}")
        x = y
    return lines


def _call(layer: nn.Module, blocks: dict) -> str:
    """`nn.Linear(64, 256)`: the constructor call that rebuilds `layer`, checked by rebuilding."""
    cls = type(layer)
    rule = LAYERS.get(cls)  # exact type: a subclass may behave differently
    if rule is None:
        raise ExportError(
            f"cannot export layer {cls.__module__}.{cls.__name__}: it is not in "
            "automodel.export.LAYERS; a model family that uses it must teach the exporter "
            "how to write it"
        )
    values = [_attr(layer, a) for a in rule.positional]
    args = [
        _literal(a, v, rule.choices.get(a, ()))
        for a, v in zip(rule.positional, values, strict=True)
    ]
    keywords = {}
    for key, default in rule.keywords.items():
        value = _attr(layer, key)
        if callable(default):
            default = default(layer)
        if default is ALWAYS or value != default:
            args.append(f"{key}={_literal(key, value, rule.choices.get(key, ()))}")
            keywords[key] = value
    name = f"nn.{cls.__name__}"
    if rule.source is not None:
        name = _block_name(cls)
        blocks.setdefault(name, rule.source)
    expr = f"{name}({', '.join(args)})"
    _check_layer(expr, layer, cls(*values, **keywords))
    return expr


def _attr(layer: nn.Module, name: str):
    value = getattr(layer, name)
    if name == "bias":  # the constructor takes a flag; the layer holds the tensor or None
        return value is not None
    if name == "unflattened_size":  # a shape: (1, 1) stays a tuple
        return tuple(value)
    if isinstance(value, tuple) and value and all(v == value[0] for v in value):
        return value[0]  # kernel_size=(5, 5) is written kernel_size=5
    return value


def _check_layer(expr: str, layer: nn.Module, rebuilt: nn.Module) -> None:
    """The call written as `expr` (rebuilt here from the same values) must give back `layer`."""
    cls = type(layer)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    rebuilt_shapes = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if repr(rebuilt) != repr(layer) or rebuilt_shapes != shapes:
        raise ExportError(
            f"{expr} does not rebuild the trained {layer!r}; fix the entry of "
            f"{cls.__name__} in automodel.export.LAYERS"
        )


def _block_name(cls: type) -> str:
    name = cls.__name__
    if not name.isidentifier() or name.startswith("_") or name in _reserved():
        raise ExportError(f"block class name {name!r} clashes with the script's own names")
    return name


def _reserved() -> set[str]:
    """Top-level names of the script's fixed parts, which a block class must not shadow."""
    names = {"Model", "make_optimizer", "np", "torch", "nn", "annotations"}
    for node in ast.parse(IMPORTS + "\n" + RUNTIME).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _model_class(family: str, spec: DataSpec, n_params: int, layers: list[str]) -> str:
    shape = _tuple([str(n) for n in spec.input_shape])
    outputs = f"{spec.n_classes} class scores" if spec.task == "classification" else "1 value"
    return "\n".join(
        [
            "class Model(nn.Sequential):",
            f'    """The {family} of this trial: {shape} inputs -> {outputs}, '
            f'{n_params:,} parameters."""',
            "",
            "    def __init__(self) -> None:",
            "        super().__init__(",
            *layers,
            "        )",
        ]
    )


# ------------------------------------------------------------------------------- files


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A plain state_dict of CPU tensors: loads with torch.load(weights_only=True)."""
    with open(path, "wb") as f:
        torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, f)
        f.flush()
        os.fsync(f.fileno())


def _swap(tmp: Path, final: Path, backup: Path) -> None:
    """Put `tmp` in place of `final`: old -> backup, new -> final, drop backup."""
    if final.exists():
        os.replace(final, backup)
    os.replace(tmp, final)
    shutil.rmtree(backup, ignore_errors=True)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
