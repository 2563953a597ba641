"""Ensemble selection: greedy forward selection with replacement (Caruana et al., 2004).

Given each candidate's outputs on the validation rows, add at each step the candidate that
makes the averaged prediction best, repeat `size` times, and keep the counts as integer
weights (`Averaged`: the members as one module). Classification averages class probabilities, regression values. Ties on the
study's metric (accuracy ties often on small validation splits) are broken by the loss of the
averaged prediction, then by the candidate's rank, so the result is deterministic.

    >>> import torch
    >>> y = torch.tensor([0, 1, 1, 0])
    >>> a = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # row 2 wrong
    >>> b = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])  # row 0 wrong
    >>> s = select([a, b], y, "classification", size=4)
    >>> s.members, s.weights, s.value
    ([0, 1], [1, 1], 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from automodel import metrics
from automodel.runtime.ensemble import average, probabilities


@dataclass
class Selection:
    members: list[int]  # indices into the candidates, best first
    weights: list[int]  # how often each member was picked
    value: float  # the study's metric of the weighted average on the validation rows
    metrics: dict[str, float]  # every metric of the task for it


# What is averaged, and how: the exported ensemble script's own code, so that the search's
# ensemble and the script's give the same outputs.
combine = average


class Averaged(nn.Module):
    """Members averaged with integer weights: the search's twin of an ensemble script's
    Model, with the same state-dict names (members.<i>.<layer>...)."""

    def __init__(self, task: str, members: list[nn.Module], weights: list[int]):
        super().__init__()
        self.task = task
        self.members = nn.ModuleList(members)
        self.weights = list(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return average(self.task, [member(x) for member in self.members], self.weights)


def select(
    outputs: list[torch.Tensor],
    y: torch.Tensor,
    task: str,
    size: int,
    target_std: float = 1.0,
) -> Selection:
    """Pick up to `size` members (with replacement) among `outputs`, best-ranked first."""
    if size < 1 or not outputs:
        raise ValueError(f"an ensemble needs size >= 1 and candidates, got {size=}")
    metric, direction, _ = metrics.TASKS[task]
    sign = 1.0 if direction == "maximize" else -1.0
    y = y.cpu()
    probs = [probabilities(task, o.cpu()) for o in outputs]
    total = torch.zeros_like(probs[0])
    counts = [0] * len(outputs)
    best_key, best_counts = None, None
    for step in range(1, size + 1):
        keys = [_key(task, (total + p) / step, y, metric, sign, target_std) for p in probs]
        pick = min(range(len(probs)), key=lambda i: (keys[i], i))
        total += probs[pick]
        counts[pick] += 1
        # Keep the best prefix: more steps can only add members that do not help.
        if best_key is None or keys[pick] < best_key:
            best_key, best_counts = keys[pick], list(counts)
    members = [i for i, c in enumerate(best_counts) if c]
    weights = [best_counts[i] for i in members]
    averaged = combine(task, [outputs[i].cpu() for i in members], weights)
    scores = metrics.compute(task, averaged, y, target_std)
    return Selection(members, weights, scores[metric], scores)


def _key(task, mean, y, metric, sign, target_std) -> tuple[float, float]:
    """Smaller is better: (the metric as a cost, the loss of the averaged prediction)."""
    if task == "classification":
        logp = mean.clamp_min(1e-12).log()
        value = float((logp.argmax(1) == y).double().mean())
        loss = float(torch.nn.functional.nll_loss(logp, y))
    else:
        value = metrics.compute(task, mean.float(), y, target_std)[metric]
        loss = float(((mean.squeeze(1) - y.double()) ** 2).mean())
    return (-sign * value, loss)
