"""Ensemble selection over candidates' validation outputs."""

from __future__ import annotations

import pytest
import torch

from automodel import ensemble, metrics


def _noisy(y: torch.Tensor, n_classes: int, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.one_hot(y, n_classes).float() + noise * torch.randn(
        len(y), n_classes, generator=gen
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_ensemble_is_never_worse_on_validation_than_the_best_candidate(seed):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (200,), generator=gen)
    outputs = [_noisy(y, 3, 1.2, seed * 10 + i) for i in range(6)]
    single = [metrics.compute("classification", o, y)["accuracy"] for o in outputs]
    chosen = ensemble.select(outputs, y, "classification", size=10)
    assert chosen.value >= max(single)
    assert chosen.value > max(single)  # independent errors: averaging helps
    assert sum(chosen.weights) <= 10 and all(w >= 1 for w in chosen.weights)
    averaged = ensemble.combine(
        "classification", [outputs[i] for i in chosen.members], chosen.weights
    )
    assert metrics.compute("classification", averaged.float(), y) == chosen.metrics


def test_regression_averages_values_and_lowers_rmse():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(300, generator=gen)
    outputs = [(y + 0.5 * torch.randn(300, generator=gen)).unsqueeze(1) for _ in range(4)]
    single = min(metrics.compute("regression", o, y, 2.0)["rmse"] for o in outputs)
    chosen = ensemble.select(outputs, y, "regression", size=8, target_std=2.0)
    assert chosen.value < 0.8 * single
    assert set(chosen.metrics) == {"rmse", "mae", "r2"}


def test_a_dominant_candidate_alone_is_kept_alone():
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    perfect = torch.nn.functional.one_hot(y, 2).float() * 5
    wrong = torch.nn.functional.one_hot(1 - y, 2).float() * 5
    chosen = ensemble.select([wrong, perfect, wrong], y, "classification", size=5)
    assert chosen.members == [1] and chosen.value == 1.0


def test_size_below_one_is_refused():
    with pytest.raises(ValueError, match="size >= 1"):
        ensemble.select([torch.zeros(2, 2)], torch.tensor([0, 1]), "classification", size=0)
