"""Export an ensemble of trials as one best_model.py: every member its own explicit class.

    render(members, weights, metrics, provenance) -> the source of best_model.py
    write(study_dir, members, weights, metrics, provenance, models=None) -> <study_dir>/export/

The script is the single model's (automodel.export), with these differences: a `Member<i>`
class per member, rendered layer by layer as a single trial's `Model` is (custom blocks
written once for all), each followed by `RECIPE<i>`, the recipe that trained it; a `Model`
that holds the members and averages their class probabilities (regression: values) with
the selected integer weights; and the runtime's `train` that retrains every member with its
own recipe (automodel.runtime.ensemble). weights.pt holds every member's weights.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from automodel import outputs
from automodel.ensemble import Averaged
from automodel.export import (
    _as_dict,
    _built,
    _on_cpu,
    _sequential,
    check,
    files,
    join,
    layers,
    sections,
    validate,
    verbatim,
)
from automodel.export.files import EXPORT_DIR, SCRIPT, WEIGHTS
from automodel.export.literals import (
    ExportError,
    checked_float,
    checked_int,
    choice,
    doc,
    float_literal,
    string,
    tuple_lines,
)
from automodel.export.validate import Checked


def write(
    study_dir: Path,
    members: list,
    weights: list[int],
    metrics: dict,
    provenance: dict,
    models: list[nn.Module] | None = None,
) -> Path:
    """Write `<study_dir>/export/` for the ensemble of `members` (checkpoints) averaged with
    `weights`; `metrics` holds its "val" and "test" metrics, `models` the members' trained
    modules when the caller has them. Checked, then swapped in whole (export.write's way)."""
    study_dir = Path(study_dir)
    raws = [_as_dict(m) for m in members]
    if models is None:
        models = [_built(raw) for raw in raws]
    models = [_on_cpu(m) for m in models]
    source = render(raws, weights, metrics, provenance, models)
    averaged = Averaged(raws[0]["spec"]["task"], models, weights)
    with files.staged(study_dir) as tmp:
        outputs.write_atomic(tmp / SCRIPT, source)
        files.save_weights(tmp / WEIGHTS, averaged.state_dict())
        check(tmp, averaged)
    return study_dir / EXPORT_DIR


def render(
    members: list,
    weights: list[int],
    metrics: dict,
    provenance: dict,
    models: list[nn.Module] | None = None,
) -> str:
    """The source of an ensemble's best_model.py. Raises ExportError."""
    raws = [_as_dict(m) for m in members]
    if not raws or len(weights) != len(raws):
        raise ExportError(f"an ensemble needs members and a weight each, got {weights!r}")
    checked = [_member(raw) for raw in raws]
    weights = [checked_int("weight", w, 1) for w in weights]
    if models is None:
        models = [_built(raw) for raw in raws]
    blocks: dict[str, None] = {}  # an ordered set: a block class is written once
    classes = []
    for i, (c, model) in enumerate(zip(checked, models, strict=True)):
        model = _sequential(_on_cpu(model), c.family)
        text, needs = layers.model_class(c.family, c.spec, model, f"Member{i}", f"trial {c.trial}")
        blocks.update(dict.fromkeys(needs))
        classes += [(text, True), (_recipe(i, c), False)]
    parts = [
        (_docstring(checked, weights, metrics, provenance), False),
        (verbatim.ENSEMBLE_IMPORTS, False),
        (sections.data(checked[0]), False),
        *((source, True) for source in blocks),
        *classes,
        (_overrides(), False),
        (_model(checked, weights), True),
        (verbatim.ENSEMBLE_RUNTIME, True),
    ]
    return join(parts)


def _member(raw: dict) -> Checked:
    checked = validate.checkpoint(raw)
    weights = checked.params.get("weights", "none")
    if checked.family in sections.TORCHVISION_FAMILIES and weights != "none":
        # An ensemble's `train` builds members from random weights only.
        raise ExportError(
            f"trial {checked.trial} starts from pretrained weights ({weights!r}); ensembles "
            "export members trained from scratch only (weights: none)"
        )
    return checked


def _docstring(checked: list[Checked], weights: list[int], metrics: dict, prov: dict) -> str:
    first = checked[0]
    spec, trials = first.spec, [c.trial for c in checked]
    families = ", ".join(dict.fromkeys(c.family for c in checked))
    averaged = "class probabilities" if spec.task == "classification" else "predictions"
    lines = [
        f'"""Ensemble of trials {", ".join(map(str, trials))} of automodel study '
        f"{doc(prov['study'])}: {len(trials)} {families} networks for {doc(spec.name)}, as plain "
        "PyTorch.",
        "",
        f"study: {doc(prov['study'])}",
        "members (trial: weight): "
        + ", ".join(f"{t}: {w}" for t, w in zip(trials, weights, strict=True)),
        f"the members' {averaged} are averaged with these weights (Model.MEMBER_WEIGHTS)",
    ]
    for label in ("val", "test"):
        values = metrics.get(label) or {}
        name = "validation" if label == "val" else "test"
        for metric, value in values.items():
            metric = choice("metric", metric, validate.METRICS)
            lines.append(f"{name} {metric}: {float_literal(checked_float(metric, value))}")
        if not values:
            lines.append(f"{name}: not measured")
    if prov.get("mlflow_run_id"):
        lines.append(f"mlflow run: {doc(prov['mlflow_run_id'])}")
    lines += [
        f"versions: automodel {doc(prov['automodel'])}, torch {doc(prov['torch'])}",
        f"exported: {doc(prov['date'])}",
        f"command: {doc(prov.get('command') or '(not recorded)')}",
    ]
    if prov.get("search_command") and prov["search_command"] != prov.get("command"):
        lines.append(f"searched with: {doc(prov['search_command'])}")
    lines += ["", "`train` retrains every member with its own recipe (RECIPE0, ...)."]
    return "\n".join(lines + sections.usage(first))


def _recipe(i: int, checked: Checked) -> str:
    """RECIPE<i>: the recipe member i's trial ran, as literals (runtime.api.fit reads it)."""
    r = checked.recipe
    loss = string(r["loss"]) if checked.spec.task == "regression" else "None"
    values = {
        "optimizer": string(r["optimizer"]),
        "lr": float_literal(r["lr"]),
        "weight_decay": float_literal(r["weight_decay"]),
        "momentum": float_literal(r["momentum"]),
        "schedule": string(r["schedule"]),
        "batch_size": str(r["batch_size"]),
        "epochs": str(r["epochs"]),
        "schedule_epochs": str(r["schedule_epochs"]),
        "label_smoothing": float_literal(r["label_smoothing"]),
        "loss": loss,
        "augment": string(r["augment"]),
        "l1": float_literal(r["l1"]),
        "keep": string(r["keep"]),
        "seed": str(r["seed"]),
    }
    return "\n".join(
        [
            f"# How trial {checked.trial} trained Member{i}: `train` retrains it so.",
            f"RECIPE{i} = {{",
            *(f'    "{key}": {value},' for key, value in values.items()),
            "}",
        ]
    )


def _overrides() -> str:
    return "\n".join(
        [
            "# `train` retrains each member with its own recipe; --epochs and --seed replace",
            "# every member's when given (member i then starts from seed + i).",
            "EPOCHS = None",
            "SEED = None",
        ]
    )


def _model(checked: list[Checked], weights: list[int]) -> str:
    n = len(checked)
    averaged = "class probabilities" if checked[0].spec.task == "classification" else "predictions"
    return "\n".join(
        [
            "class Model(nn.Module):",
            f'    """The ensemble of {n} trials: their {averaged} averaged with MEMBER_WEIGHTS."""',
            "",
            *tuple_lines("MEMBERS = ", [f"Member{i}" for i in range(n)], 4, ""),
            "    # How often the selection picked each member: its weight in the average.",
            *tuple_lines("MEMBER_WEIGHTS = ", [str(w) for w in weights], 4, ""),
            *tuple_lines("RECIPES = ", [f"RECIPE{i}" for i in range(n)], 4, ""),
            "",
            "    def __init__(self) -> None:",
            "        super().__init__()",
            "        self.members = nn.ModuleList(member() for member in self.MEMBERS)",
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            "        outputs = [member(x) for member in self.members]",
            "        return average(TASK, outputs, self.MEMBER_WEIGHTS)",
        ]
    )
