"""Residual networks: 2D for images (C, H, W), 1D for sequences (C, L), linear for tables.

Images and sequences (He et al. 2016): a 3-wide conv stem, then `stages` of `blocks` residual
blocks; stage s has `width * 2**s` channels and its first block halves the size (stride 2)
while the size is at least 2; then global average pooling, Dropout?, Linear.
Tables (the ResNet of Gorishniy et al. 2021, "Revisiting deep learning models for tabular
data"): Linear to `width`, `stages * blocks` residual blocks at that width, norm, activation,
Linear.

The blocks are classes the exporter writes into best_model.py once (export.LAYERS), with the
ACTIVATIONS table they read, so they use `nn` and that table alone and keep their constructor
arguments as attributes; lines fit 88 columns, the generated script's format.
"""

from __future__ import annotations

from torch import nn

from automodel.hparams import Param
from automodel.models.blocks import ACTIVATIONS, FastDropout, activation

PARAMS = {
    "stages": Param("int", 2, low=1, high=5),
    "blocks": Param("int", 2, low=1, high=8),  # per stage
    "width": Param("int", 32, low=2, high=1024),
    "activation": Param("choice", "relu", choices=tuple(ACTIVATIONS)),
    "dropout": Param("float", 0.0, low=0.0, high=0.9),
    "batch_norm": Param("bool", True),
}


class ResBlock(nn.Module):
    """act(conv-norm-act-conv-norm(x) + shortcut(x)); the shortcut is a 1x1 conv (and norm)
    when the block changes the channels or the size, else the identity."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        activation: str = "relu",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.dims, self.in_channels, self.out_channels = dims, in_channels, out_channels
        self.stride, self.activation, self.batch_norm = stride, activation, batch_norm
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        bias = not batch_norm  # batch norm brings its own shift
        act = ACTIVATIONS[activation]

        def normed(c: int) -> nn.Module:
            return norm(c) if batch_norm else nn.Identity()

        self.conv1 = conv(in_channels, out_channels, 3, stride, padding=1, bias=bias)
        self.norm1 = normed(out_channels)
        self.act = act()
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = normed(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            project = conv(in_channels, out_channels, 1, stride, bias=bias)
            self.shortcut = nn.Sequential(project, normed(out_channels))

    def forward(self, x):
        y = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        return self.act(y + self.shortcut(x))


class ResLinear(nn.Module):
    """x + Linear(Dropout(act(Linear(norm(x))))): a residual block for tables."""

    def __init__(
        self,
        width: int,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.width, self.activation = width, activation
        self.dropout, self.batch_norm = dropout, batch_norm
        act = ACTIVATIONS[activation]
        self.norm = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.linear1 = nn.Linear(width, width)
        self.act = act()
        self.drop = nn.Dropout(dropout)
        self.linear2 = nn.Linear(width, width)

    def forward(self, x):
        return x + self.linear2(self.drop(self.act(self.linear1(self.norm(x)))))


def build(params: dict, input_shape: tuple[int, ...], n_outputs: int) -> nn.Sequential:
    p = {k: params.get(k, rule.default) for k, rule in PARAMS.items()}
    if len(input_shape) == 1:
        return _tabular(p, input_shape[0], n_outputs)
    if len(input_shape) not in (2, 3):
        raise ValueError(
            f"family resnet needs tables (F,), sequences (C, L) or images (C, H, W), got input "
            f"shape {tuple(input_shape)}"
        )
    dims = len(input_shape) - 1
    conv, norm, pool = (
        (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d)
        if dims == 1
        else (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d)
    )
    width, bn = p["width"], p["batch_norm"]
    layers: list[nn.Module] = [conv(input_shape[0], width, 3, padding=1, bias=not bn)]
    if bn:
        layers.append(norm(width))
    layers.append(activation(p["activation"]))
    size, c_in = min(input_shape[1:]), width
    for stage in range(p["stages"]):
        c_out = width * 2**stage
        for block in range(p["blocks"]):
            stride = 2 if stage > 0 and block == 0 and size >= 2 else 1
            layers.append(ResBlock(dims, c_in, c_out, stride, p["activation"], bn))
            size = (size + 1) // 2 if stride == 2 else size
            c_in = c_out
    layers += [pool(1), nn.Flatten()]
    if p["dropout"] > 0:
        layers.append(FastDropout(p["dropout"]))
    layers.append(nn.Linear(c_in, n_outputs))
    return nn.Sequential(*layers)


def _tabular(p: dict, n_features: int, n_outputs: int) -> nn.Sequential:
    width = p["width"]
    layers: list[nn.Module] = [nn.Linear(n_features, width)]
    for _ in range(p["stages"] * p["blocks"]):
        layers.append(ResLinear(width, p["activation"], p["dropout"], p["batch_norm"]))
    if p["batch_norm"]:
        layers.append(nn.BatchNorm1d(width))
    layers += [activation(p["activation"]), nn.Linear(width, n_outputs)]
    return nn.Sequential(*layers)
