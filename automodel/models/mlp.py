"""Multi-layer perceptron: [Linear -> BatchNorm? -> activation -> Dropout?] x depth -> Linear."""

from __future__ import annotations

import math

from torch import nn

from automodel.hparams import Param, layer_value
from automodel.models.blocks import ACTIVATIONS, FastDropout, activation

PARAMS = {
    "depth": Param("int", 2, low=1, high=16),
    "width": Param("int", 256, low=1, high=8192, layered=True),
    "activation": Param("choice", "relu", choices=tuple(ACTIVATIONS)),
    "dropout": Param("float", 0.0, low=0.0, high=0.9),
    "batch_norm": Param("bool", False),
}


def build(params: dict, input_shape: tuple[int, ...], n_outputs: int) -> nn.Sequential:
    p = {k: params.get(k, rule.default) for k, rule in PARAMS.items()}
    layers: list[nn.Module] = [nn.Flatten()] if len(input_shape) > 1 else []
    width_in = math.prod(input_shape)
    for i in range(p["depth"]):
        width = layer_value(params, "width", i, PARAMS["width"].default)
        # Batch norm supplies its own shift, so the linear layer's bias would be redundant.
        layers.append(nn.Linear(width_in, width, bias=not p["batch_norm"]))
        if p["batch_norm"]:
            layers.append(nn.BatchNorm1d(width))
        layers.append(activation(p["activation"]))
        if p["dropout"] > 0:
            layers.append(FastDropout(p["dropout"]))
        width_in = width
    layers.append(nn.Linear(width_in, n_outputs))
    return nn.Sequential(*layers)
