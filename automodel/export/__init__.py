"""Export a trained candidate as code: `best_model.py` (torch and numpy only) plus its weights.

    render(checkpoint, provenance) -> the source of best_model.py
    write(study_dir, checkpoint, provenance, model=None) -> <study_dir>/export/, replaced
        whole or not at all (files), after checking that the script reproduces the model
    provenance(study, command, ...) -> where an export comes from

The script is, in order: a docstring (provenance, metrics, usage: sections), the imports, the
data's constants and the training recipe (sections), the custom blocks and `class Model`
rendered layer by layer from the trained module tree (layers), then the runtime, the search's
own code for preparing inputs, training, evaluating, and the command line, copied whole
(verbatim, from automodel.runtime). Every value from a checkpoint is checked first (validate)
and written as a literal (literals).
"""

from __future__ import annotations

import copy
import itertools
import runpy
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from automodel import __version__, outputs
from automodel.checkpoint import Checkpoint
from automodel.export import files, layers, sections, validate, verbatim
from automodel.export.files import EXPORT_DIR, SCRIPT, WEIGHTS, recover
from automodel.export.layers import LAYERS, Layer
from automodel.export.literals import ExportError

__all__ = [
    "EXPORT_DIR",
    "LAYERS",
    "SCRIPT",
    "WEIGHTS",
    "ExportError",
    "Layer",
    "check",
    "provenance",
    "recover",
    "render",
    "write",
]


def provenance(
    study: str, command: str, mlflow_run_id: str | None = None, searched_with: str | None = None
) -> dict:
    """Where an export comes from: the study, the commands, the versions, the date (UTC)."""
    return {
        "study": study,
        "command": command,
        "search_command": searched_with,
        "mlflow_run_id": mlflow_run_id,
        "automodel": __version__,
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def render(checkpoint: Checkpoint | dict, provenance: dict, model: nn.Module | None = None) -> str:
    """The source of best_model.py for `checkpoint`; `model` is its trained module when the
    caller has it, else built from the checkpoint. Raises ExportError."""
    raw = _as_dict(checkpoint)
    checked = validate.checkpoint(raw)
    model = _sequential(_built(raw) if model is None else _on_cpu(model), checked.family)
    model_class, blocks = layers.model_class(checked.family, checked.spec, model)
    parts = [
        (sections.docstring(checked, provenance), False),
        (verbatim.IMPORTS, False),
        (sections.data(checked), False),
        (sections.recipe(checked), True),
        *((source, True) for source in blocks),
        (model_class, True),
        (verbatim.RUNTIME, True),
    ]
    return join(parts)


def join(parts: list[tuple[str, bool]]) -> str:
    """The script from its parts, (text, holds a def or class): ruff puts two blank lines
    around those, one elsewhere."""
    out = parts[0][0].strip("\n") + "\n"
    for (_, defs_before), (text, defs) in itertools.pairwise(parts):
        out += ("\n\n" if defs or defs_before else "\n") + text.strip("\n") + "\n"
    return out


def write(
    study_dir: Path,
    checkpoint: Checkpoint | dict,
    provenance: dict,
    model: nn.Module | None = None,
) -> Path:
    """Write `<study_dir>/export/` (best_model.py, weights.pt); returns its path.

    `model` is the trained module when the caller has it; else it is built once from the
    checkpoint. Everything is written and checked in a temporary folder first, which
    then replaces the previous export (see files).
    """
    study_dir = Path(study_dir)
    model = _built(_as_dict(checkpoint)) if model is None else _on_cpu(model)
    source = render(checkpoint, provenance, model)
    with files.staged(study_dir) as tmp:
        outputs.write_atomic(tmp / SCRIPT, source)
        files.save_weights(tmp / WEIGHTS, model.state_dict())
        check(tmp, model)
    return study_dir / EXPORT_DIR


def check(export_dir: Path, model: nn.Module) -> None:
    """Load the written script and weights; raise ExportError unless they reproduce `model`."""
    with torch.random.fork_rng(devices=[]):
        script = runpy.run_path(str(export_dir / SCRIPT), run_name="best_model")
        exported = script["load_model"](export_dir / WEIGHTS)
        keys, expected_keys = list(exported.state_dict()), list(model.state_dict())
        if keys != expected_keys:
            raise ExportError(
                f"the exported model's weights are named {keys[:4]}..., the trained model's "
                f"{expected_keys[:4]}...; the exporter renders the layers in another structure"
            )
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(8, *script["INPUT_SHAPE"], generator=gen)
        was_training = model.training
        with torch.inference_mode():
            same = torch.allclose(exported(x), model.eval()(x), atol=1e-6, rtol=0)
        model.train(was_training)
        if not same:
            raise ExportError("the exported model's outputs differ from the trained model's")


def _as_dict(checkpoint: Checkpoint | dict) -> dict:
    return checkpoint.to_dict() if isinstance(checkpoint, Checkpoint) else checkpoint


def _built(raw: dict) -> nn.Module:
    """The trained module, built once from the checked checkpoint (its weights loaded)."""
    validate.checkpoint(raw)
    try:
        with torch.random.fork_rng(devices=[]):  # building layers draws from torch's generator
            return Checkpoint.from_dict(raw).build_model()
    except ValueError as err:  # models.create's and CheckpointError
        raise ExportError(str(err)) from None


def _on_cpu(model: nn.Module) -> nn.Module:
    """`model`, or a copy of it on the CPU where it is not: the script is checked there."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return model if all(t.device.type == "cpu" for t in tensors) else copy.deepcopy(model).cpu()


def _sequential(model: nn.Module, family: str) -> nn.Sequential:
    if type(model) is not nn.Sequential:
        raise ExportError(
            f"family {family!r} builds a {type(model).__name__}; the exporter writes "
            "nn.Sequential models (put custom parts in blocks listed in export.LAYERS)"
        )
    return model
