"""Which inputs a trained model relies on: the search explains its model with these
functions, and the exported script's `explain` command runs them as they are, so for the
same rows and seed both give the same numbers.

    feature_groups(columns, n)   a table's raw columns -> the model features each encodes to
    subsample(n, limit, seed)    the rows an explanation reads: all, or a seeded subset
    permutation_report(...)      per column: how much the metric worsens when it is shuffled
    reference(columns, ...)      per column: its typical value, as model features
    contributions(...)           one row: how each column moves the prediction
    saliency(...), class_maps()  |gradient x input| per input position, per row, per class
    top_positions(maps, k)       the input positions with the largest mean saliency

Tables (one-dimensional inputs): permutation importance (Breiman 2001; scikit-learn's
`permutation_importance`): shuffle one column's values across the rows, measure how much
the metric worsens, repeat with other shuffles (seeded). A column is shuffled as one,
whatever its encoding (a one-hot block moves together), so a categorical column gets one
number; the model sees exactly the features it was trained on, only their rows reassigned.
Models are read through a `predict(x) -> outputs` function only: an ensemble works too.

Images and sequences: gradient x input saliency (Shrikumar et al. 2016) per input
position, in the model's normalised inputs, averaged per class over the rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from automodel.runtime.evaluation import TASKS, compute
from automodel.runtime.inputs import column_width

# Defaults, chosen with benchmarks/explain.py to keep explaining under a tenth of a typical
# search (docs/performance.md): more shuffles or rows steady the numbers, and cost linearly.
REPEATS = 5  # shuffles per column
MAX_ROWS = 2000  # rows a permutation scores; beyond them, a seeded subsample
# Rows scored in all (rows x columns x shuffles): a wide table is read on fewer rows, so
# that its cost stays bounded, but on MIN_ROWS at least, or its numbers would be noise.
EVALUATIONS = 200_000
MIN_ROWS = 200
SALIENCY_ROWS = 512  # rows whose saliency is averaged per class
EXAMPLES = 4  # per-row maps kept beside the per-class ones


def feature_groups(columns, n_features: int) -> list[tuple[str, list[int]]]:
    """(column name, the model's feature indices it encodes to), in the table's order.

    `columns` as the script's COLUMNS, (name, kind, *settings) (see inputs.encode_cells);
    None: each feature is its own column, named x0, x1, ...
    """
    if columns is None:
        return [(f"x{i}", [i]) for i in range(n_features)]
    groups, j = [], 0
    for column in columns:
        width = column_width(column)
        groups.append((column[0], list(range(j, j + width))))
        j += width
    if j != n_features:
        raise ValueError(
            f"the columns encode {j} features, the model reads {n_features}"
        )
    return groups


def subsample(n: int, limit: int, seed: int) -> torch.Tensor:
    """Row indices, in order: all `n` rows, or `limit` of them drawn with `seed`."""
    if n <= limit:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:limit].sort().values


def permutation(
    predict,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    groups: list[tuple[str, list[int]]],
    repeats: int = REPEATS,
    seed: int = 0,
    target_std: float = 1.0,
) -> list[dict]:
    """Per group: how much the metric worsens when its features are shuffled across rows.

    `predict(x) -> outputs` runs the model. Returns `{"name", "mean", "std"}` per group, in
    the groups' order; positive means the model needs the column (in the metric's units).
    """
    metric, direction, _ = TASKS[task]
    sign = 1.0 if direction == "maximize" else -1.0
    predict = torch.no_grad()(predict)

    def score(inputs: torch.Tensor) -> float:
        return compute(task, predict(inputs), y, target_std)[metric]

    base = score(x)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for name, index in groups:
        features = torch.tensor(index, device=x.device)
        drops = []
        for _ in range(repeats):
            order = torch.randperm(len(x), generator=generator).to(x.device)
            shuffled = x.clone()
            shuffled[:, features] = x[:, features][order]
            drops.append(sign * (base - score(shuffled)))
        mean = sum(drops) / len(drops)
        spread = math.sqrt(sum((d - mean) ** 2 for d in drops) / max(len(drops) - 1, 1))
        out.append({"name": name, "mean": mean, "std": spread})
    return out


def permutation_report(
    predict,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    groups: list[tuple[str, list[int]]],
    *,
    repeats: int = REPEATS,
    seed: int = 0,
    target_std: float = 1.0,
    max_rows: int = MAX_ROWS,
) -> dict:
    """Permutation importance on (a seeded subsample of) labelled rows, most important
    column first: what importance.json holds and the script's `explain` prints.

    The subsample holds at most `max_rows` rows, and fewer for a wide table (EVALUATIONS).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    affordable = EVALUATIONS // (max(len(groups), 1) * repeats)
    limit = min(max_rows, max(MIN_ROWS, affordable))
    rows = subsample(len(x), limit, seed).to(x.device)
    x, y = x[rows], y[rows]
    metric = TASKS[task][0]
    with torch.no_grad():
        base = compute(task, predict(x), y, target_std)[metric]
    columns = permutation(predict, x, y, task, groups, repeats, seed, target_std)
    return {
        "method": "permutation",
        "metric": metric,
        "score": base,
        "rows": len(x),
        "repeats": repeats,
        "seed": seed,
        "columns": sorted(columns, key=lambda c: -c["mean"]),
    }


def reference(columns, mean, std) -> tuple[torch.Tensor, list]:
    """Each column at its typical value in the training split, as normalised model features
    (float32), and those values as a reader sees them.

    A numeric column takes its fill value (the training median), present; a one-hot or
    hashed column its most common level or bucket (a feature's training mean is how often
    it is 1), or none of them when missing values were commoner still; without `columns`,
    each feature takes its training mean.
    """
    mean = torch.tensor(mean, dtype=torch.float64)
    std = torch.tensor(std, dtype=torch.float64)
    if columns is None:
        return torch.zeros(len(mean)), mean.tolist()
    raw, shown, j = torch.zeros(len(mean), dtype=torch.float64), [], 0
    for column in columns:
        _, kind, *settings = column
        width = column_width(column)
        if kind == "numeric":
            raw[j] = settings[0]
            shown.append(settings[0])
        else:
            share = mean[j : j + width]
            top = int(share.argmax())
            if share[top] > 1 - share.sum():
                raw[j + top] = 1.0
                shown.append(settings[0][top] if kind == "onehot" else f"bucket {top}")
            else:
                shown.append(None)  # missing
        j += width
    return ((raw - mean) / std).float(), shown


def contributions(
    predict,
    x: torch.Tensor,
    groups: list[tuple[str, list[int]]],
    ref: torch.Tensor,
    task: str,
    target_std: float = 1.0,
) -> tuple[int | None, float, list[float]]:
    """How each group moves the prediction for one row `x` (1, n_features).

    The prediction: the predicted class's probability (classification) or the value, in
    the target's units (regression). A group's contribution is the prediction minus the
    prediction with the group's features at `ref` (see `reference`): positive when the
    row's value pushes towards what was predicted. Returns (the predicted class or None,
    the prediction, a contribution per group).
    """
    rows = x.repeat(len(groups) + 1, 1)
    ref = ref.to(x.device)
    for k, (_, index) in enumerate(groups, 1):
        rows[k, index] = ref[index]
    with torch.no_grad():
        out = predict(rows).double()
    if task == "regression":
        values, predicted = out[:, 0] * target_std, None
    else:
        predicted = int(out[0].argmax())
        values = torch.softmax(out, dim=1)[:, predicted]
    changes = (values[0] - values[1:]).tolist()
    return predicted, float(values[0]), changes


def saliency(model, x: torch.Tensor, y: torch.Tensor, task: str, batch_size: int = 256):
    """|gradient x input| of the explained output per input position, per row.

    Classification explains the logit of each row's class in `y` (its label, or the
    predicted class); regression the value. Returns a tensor shaped like `x`.
    """
    was_training = model.training
    model.eval()
    maps = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].detach().clone().requires_grad_(True)
        out = model(xb)
        if task == "regression":
            picked = out.squeeze(1)
        else:
            picked = out.gather(1, y[i : i + len(xb), None].to(out.device))
        (grad,) = torch.autograd.grad(picked.sum(), xb)
        maps.append((grad * xb).abs().detach())
    model.train(was_training)
    return torch.cat(maps)


def saliency_by_class(maps: torch.Tensor, y: torch.Tensor, n_classes: int):
    """The mean map of the rows of each class (regression: one map over every row)."""
    if n_classes <= 1:
        return maps.mean(0, keepdim=True)
    return torch.stack(
        [
            maps[y == c].mean(0) if (y == c).any() else torch.zeros_like(maps[0])
            for c in range(n_classes)
        ]
    )


def class_maps(model, x, y, task: str, n_classes: int):
    """(per-row maps, per-class mean maps) of labelled rows, on the CPU."""
    maps = saliency(model, x, y, task).cpu()
    return maps, saliency_by_class(maps, y.cpu(), n_classes)


def position_name(index, shape) -> str:
    """`c0 y3 x4` for a pixel of an image, `c0 t17` for a step of a sequence."""
    axes = ("c", "y", "x") if len(shape) == 3 else ("c", "t")
    return " ".join(f"{a}{i}" for a, i in zip(axes, index))


def top_positions(maps: torch.Tensor, k: int) -> list[dict]:
    """The `k` input positions with the largest mean saliency over the rows of `maps`:
    `{"name", "index", "mean", "std"}` each, largest first."""
    shape = tuple(maps.shape[1:])
    flat = maps.reshape(len(maps), -1).double()
    mean = flat.mean(0)
    std = flat.std(0) if len(flat) > 1 else torch.zeros_like(mean)
    out = []
    for i in mean.argsort(descending=True, stable=True)[:k].tolist():
        index = [int(v) for v in np.unravel_index(i, shape)]
        name = position_name(index, shape)
        out.append(
            {"name": name, "index": index, "mean": float(mean[i]), "std": float(std[i])}
        )
    return out
