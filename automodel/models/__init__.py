"""Model families by name: `create(family, params, spec)` builds a torch module.

Each family is a torch-only file with a `PARAMS` table (the hyperparameters it reads, with
their rules and defaults) and `build(params, input_shape, n_outputs)`; a family that reads
which features of a table are numbers (`numeric`) also gets their spans. Register a new
family here and the registry-parametrised tests cover it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from automodel.hparams import Param
from automodel.models import cnn, mlp, pretrained, resnet, tabular


@dataclass(frozen=True)
class Family:
    params: dict[str, Param]
    build: Callable[..., nn.Module]
    numeric: bool = False  # build takes the spans of the numeric features too


FAMILIES: dict[str, Family] = {
    "mlp": Family(mlp.PARAMS, mlp.build),
    "cnn": Family(cnn.PARAMS, cnn.build),
    "resnet": Family(resnet.PARAMS, resnet.build),
    "pretrained": Family(pretrained.PARAMS, pretrained.build),
    "tabular": Family(tabular.PARAMS, tabular.build, numeric=True),
}


def get(family: str) -> Family:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family]


def create(family: str, params: dict, spec) -> nn.Module:
    """Build family `family` sized for `spec` (a DataSpec) from sampled `params`: one output
    per class, or a single one for regression."""
    f, shape = get(family), tuple(spec.input_shape)
    if f.numeric and len(shape) == 1:
        spans = tabular.numeric_spans(spec.columns, shape[0])
        return f.build(params, shape, spec.n_outputs, spans)
    return f.build(params, shape, spec.n_outputs)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
