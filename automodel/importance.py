"""Which inputs a trained model relies on: torch only, so the exported script runs the same code.

Tables: permutation importance of each raw column on labelled rows, in the study's metric
(Breiman 2001; scikit-learn's `permutation_importance`): shuffle one column's rows, measure
how much the metric gets worse, repeat with other shuffles (seeded). A column is permuted as
one, whatever its encoding (a one-hot block moves together), so a categorical column gets one
number. The model sees exactly the features it was trained on, only their rows reassigned.

Images and sequences: gradient x input saliency (Shrikumar et al. 2016) per input position,
averaged per class over the rows.
"""

from __future__ import annotations

import math

import torch

# task -> (metric, +1 when higher is better)
_SELECTED = {"classification": ("accuracy", 1.0), "regression": ("rmse", -1.0)}


def feature_groups(columns, n_features: int) -> list[tuple[str, list[int]]]:
    """(column name, the model's feature indices it encodes to), in the table's order.

    `columns` as DataSpec.columns (encoded widths: numeric 1 or 2 with a missing indicator,
    one-hot one per level, hashed one per bucket); None: each feature is its own column.
    """
    if columns is None:
        return [(f"x{i}", [i]) for i in range(n_features)]
    groups, j = [], 0
    for c in columns:
        kind = c["kind"]
        width = (
            1 + bool(c["indicator"])
            if kind == "numeric"
            else len(c["levels"])
            if kind == "onehot"
            else int(c["buckets"])
        )
        groups.append((c["name"], list(range(j, j + width))))
        j += width
    if j != n_features:
        raise ValueError(f"the columns encode {j} features, the model reads {n_features}")
    return groups


def score(task: str, outputs: torch.Tensor, y: torch.Tensor, target_std: float) -> float:
    """The study's metric for outputs (logits, or normalised values) against targets."""
    if task == "classification":
        return float((outputs.argmax(1) == y).double().mean())
    diff = (outputs.squeeze(1).double() - y.double()) * target_std
    return math.sqrt(float((diff * diff).mean()))


def permutation(
    predict,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    groups: list[tuple[str, list[int]]],
    repeats: int = 5,
    seed: int = 0,
    target_std: float = 1.0,
) -> list[dict]:
    """Per group: how much the metric worsens when its features are shuffled across rows.

    `predict(x) -> outputs` runs the model. Returns `{"name", "mean", "std"}` per group, in
    the groups' order; positive means the model needs the column (in the metric's units).
    """
    _, sign = _SELECTED[task]
    predict = torch.no_grad()(predict)
    base = score(task, predict(x), y, target_std)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, index in groups:
        drops = []
        for _ in range(repeats):
            order = torch.randperm(len(x), generator=gen)
            shuffled = x.clone()
            shuffled[:, index] = x[order][:, index]
            drops.append(sign * (base - score(task, predict(shuffled), y, target_std)))
        mean = sum(drops) / len(drops)
        spread = math.sqrt(sum((d - mean) ** 2 for d in drops) / max(len(drops) - 1, 1))
        out.append({"name": name, "mean": mean, "std": spread})
    return out


def saliency(model, x: torch.Tensor, y: torch.Tensor, task: str, batch_size: int = 256):
    """|gradient x input| of the predicted score per input position, per row.

    Classification explains the logit of each row's label (`y`); regression the value.
    Returns a tensor shaped like `x`.
    """
    was_training = model.training
    model.eval()
    maps = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].detach().clone().requires_grad_(True)
        out = model(xb)
        picked = out.squeeze(1) if task == "regression" else out.gather(1, y[i : i + len(xb), None])
        (grad,) = torch.autograd.grad(picked.sum(), xb)
        maps.append((grad * xb).abs().detach())
    model.train(was_training)
    return torch.cat(maps)


def saliency_by_class(maps: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The mean map of the rows of each class (regression: one map over every row)."""
    if n_classes <= 1:
        return maps.mean(0, keepdim=True)
    return torch.stack(
        [
            maps[y == c].mean(0) if (y == c).any() else torch.zeros_like(maps[0])
            for c in range(n_classes)
        ]
    )
