"""Networks for tables, after what the tabular deep-learning literature found works.

    numeric features -> PeriodicEmbedding? -> EnsembleInput? -> [Linear, act, Dropout?] x depth
                     -> EnsembleHeads (k > 1) or Linear

- Numeric embeddings, PLR(lite) (Gorishniy et al. 2022, "On embeddings for numerical features
  in tabular deep learning"; the lite form of TabR and TabM): each numeric feature x becomes
  ReLU(Linear([cos(2 pi c x), sin(2 pi c x)])) with `n_frequencies` learned frequencies c of
  its own, drawn at first from N(0, frequency_scale), the Linear shared by every feature.
  Missing indicators and one-hot or hashed categories go in as they are: a one-hot column
  into the first Linear already is a learned embedding of its categories (TabM does the same).
- TabM-mini (Gorishniy et al. 2025, "TabM: advancing tabular deep learning with
  parameter-efficient ensembling"): `k` networks in one. The input is copied k times and copy
  i is scaled by its own learned vector; the MLP is shared and each copy has its own linear
  head. Training minimises the mean of the k heads' losses (the heads output (B, k, C) while
  training, which runtime.recipe's losses average over); the prediction is the mean of the
  heads' (their probabilities, for classes).

The blocks are classes the exporter writes into best_model.py once (export.LAYERS), so they
use `torch`, `nn` and `math` alone and keep their constructor arguments as attributes; lines
fit 88 columns, the generated script's format.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from automodel.hparams import Param
from automodel.models.blocks import ACTIVATIONS, FastDropout, activation
from automodel.runtime.inputs import COLUMN_SETTINGS, column_width

EMBEDDINGS = ("periodic", "none")

PARAMS = {
    "embedding": Param("choice", "periodic", choices=EMBEDDINGS),
    "n_frequencies": Param("int", 16, low=1, high=256),
    "frequency_scale": Param("float", 0.1, low=1e-4, high=100.0),
    "d_embedding": Param("int", 16, low=1, high=256),
    "depth": Param("int", 2, low=1, high=8),
    "width": Param("int", 256, low=1, high=4096),
    "activation": Param("choice", "relu", choices=tuple(ACTIVATIONS)),
    "dropout": Param("float", 0.1, low=0.0, high=0.9),
    "k": Param("int", 8, low=1, high=64),  # networks in the ensemble; 1: a plain network
}


class PeriodicEmbedding(nn.Module):
    """Features (B, n_features) -> (B, n): the numeric ones, at `spans` ((start, stop) ranges
    of feature indices), each as d_embedding values ReLU(Linear([cos(2 pi c x),
    sin(2 pi c x)])); the others after them, as they are."""

    def __init__(
        self,
        n_features: int,
        spans: tuple,
        n_frequencies: int = 16,
        d_embedding: int = 16,
        frequency_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_features, self.spans = n_features, tuple(tuple(s) for s in spans)
        self.n_frequencies, self.d_embedding = n_frequencies, d_embedding
        self.frequency_scale = frequency_scale
        numeric = [i for start, stop in self.spans for i in range(start, stop)]
        rest = sorted(set(range(n_features)) - set(numeric))
        # Index lists, not weights: rebuilt from `spans`, so not saved with the weights.
        self.register_buffer("numeric", torch.tensor(numeric), persistent=False)
        self.register_buffer("rest", torch.tensor(rest, dtype=torch.long), persistent=False)
        self.frequencies = nn.Parameter(torch.empty(len(numeric), n_frequencies))
        # As rtdl_num_embeddings: N(0, scale), cut at 3 scales (no extreme frequency).
        bound = 3 * frequency_scale
        nn.init.trunc_normal_(self.frequencies, 0.0, frequency_scale, -bound, bound)
        self.linear = nn.Linear(2 * n_frequencies, d_embedding)

    def forward(self, x):
        z = 2 * math.pi * self.frequencies * x[:, self.numeric, None]
        z = torch.relu(self.linear(torch.cat([torch.cos(z), torch.sin(z)], -1)))
        return torch.cat([z.flatten(1), x[:, self.rest]], 1)

    def extra_repr(self) -> str:
        return f"{self.n_features}, spans={self.spans}, frequency_scale={self.frequency_scale}"


class EnsembleInput(nn.Module):
    """(B, features) -> (B, k, features): k copies, copy i scaled by its own learned vector.

    Initialised as TabM-mini: random signs when the features are raw, N(0, 1) after
    embeddings ("normal"), so that the k networks start apart."""

    def __init__(self, k: int, features: int, init: str = "normal") -> None:
        super().__init__()
        self.k, self.features, self.init = k, features, init
        self.weight = nn.Parameter(torch.empty(k, features))
        if init == "signs":
            with torch.no_grad():
                self.weight.bernoulli_(0.5).mul_(2).sub_(1)
        else:
            nn.init.normal_(self.weight)

    def forward(self, x):
        return x.unsqueeze(1) * self.weight

    def extra_repr(self) -> str:
        return f"{self.k}, {self.features}, init={self.init!r}"


class EnsembleHeads(nn.Module):
    """(B, k, in_features) -> a linear head per copy.

    Training: (B, k, out_features), so that the loss is the mean of the k heads' losses.
    Eval: their mean prediction, (B, out_features): for classes (`probabilities`) the log of
    the mean of the heads' probabilities (a softmax of it gives that mean back), else the
    mean of their values."""

    def __init__(
        self, k: int, in_features: int, out_features: int, probabilities: bool = True
    ) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.probabilities = probabilities
        self.weight = nn.Parameter(torch.empty(k, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(k, out_features))
        bound = in_features**-0.5  # as nn.Linear
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        y = torch.bmm(x.transpose(0, 1), self.weight).transpose(0, 1) + self.bias
        if self.training:
            return y
        if self.probabilities:
            return torch.logsumexp(torch.log_softmax(y, -1), 1) - math.log(self.k)
        return y.mean(1)

    def extra_repr(self) -> str:
        probabilities = self.probabilities
        return f"{self.k}, {self.in_features}, {self.out_features}, {probabilities=}"


def numeric_spans(columns, n_features: int) -> tuple[tuple[int, int], ...]:
    """The (start, stop) ranges of the features that are numbers: the value of each numeric
    column of a table (not its missing indicator), or every feature of data without columns."""
    if columns is None:
        return ((0, n_features),)
    spans, j = [], 0
    for c in columns:
        if c["kind"] == "numeric":
            if spans and spans[-1][1] == j:
                spans[-1] = (spans[-1][0], j + 1)
            else:
                spans.append((j, j + 1))
        j += column_width((c["name"], c["kind"], *(c[s] for s in COLUMN_SETTINGS[c["kind"]])))
    return tuple(spans)


def build(params: dict, input_shape: tuple[int, ...], n_outputs: int, spans=None) -> nn.Sequential:
    """The network for `params`; `spans` says which features are numbers (all by default)."""
    if len(input_shape) != 1:
        raise ValueError(f"family tabular needs tables (F,), got input shape {tuple(input_shape)}")
    p = {k: params.get(k, rule.default) for k, rule in PARAMS.items()}
    n_features = input_shape[0]
    spans = ((0, n_features),) if spans is None else spans
    layers: list[nn.Module] = []
    width_in = n_features
    n_numeric = sum(stop - start for start, stop in spans)
    if p["embedding"] == "periodic" and n_numeric:
        layers.append(
            PeriodicEmbedding(
                n_features, spans, p["n_frequencies"], p["d_embedding"], p["frequency_scale"]
            )
        )
        width_in += n_numeric * (p["d_embedding"] - 1)
    k = p["k"]
    if k > 1:
        init = "normal" if layers else "signs"
        layers.append(EnsembleInput(k, width_in, init))
    for _ in range(p["depth"]):
        layers += [nn.Linear(width_in, p["width"]), activation(p["activation"])]
        if p["dropout"] > 0:
            layers.append(FastDropout(p["dropout"]))
        width_in = p["width"]
    if k > 1:
        layers.append(EnsembleHeads(k, width_in, n_outputs, probabilities=n_outputs > 1))
    else:
        layers.append(nn.Linear(width_in, n_outputs))
    return nn.Sequential(*layers)
