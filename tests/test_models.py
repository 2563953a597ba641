"""Every registered family builds for every option and data shape it supports, and runs."""

from __future__ import annotations

import itertools

import pytest
import torch

from automodel import models
from automodel.data import DataSpec
from automodel.models.blocks import FastDropout

SHAPES = {"table": (12,), "sequence": (1, 40), "image": (1, 8, 8), "rgb": (3, 16, 16)}
# Which data shapes each family accepts (a new family adds its line here).
ACCEPTS = {
    "mlp": set(SHAPES),
    "cnn": {"sequence", "image", "rgb"},
    "resnet": set(SHAPES),
    "pretrained": {"image", "rgb"},
    "tabular": {"table"},
}


def spec(shape) -> DataSpec:
    c = 1 if len(shape) == 1 else shape[0]
    n = shape[0] if len(shape) == 1 else c
    return DataSpec("t", tuple(shape), 4, tuple("abcd"), (0.0,) * n, (1.0,) * n)


def option_grid(family: str):
    """One params dict per value of every choice/bool param, the others at their defaults."""
    rules = models.get(family).params
    yield {}
    for name, rule in rules.items():
        values = (
            rule.choices if rule.kind == "choice" else (True, False) if rule.kind == "bool" else ()
        )
        for v in values:
            yield {name: v}
        if rule.kind in ("int", "float") and not rule.layered:
            yield {name: rule.low if rule.kind == "int" and rule.low > 0 else rule.default}


def test_every_family_has_an_accepts_entry():
    assert set(ACCEPTS) == set(models.FAMILIES)


@pytest.mark.parametrize(("family", "shape"), list(itertools.product(models.FAMILIES, SHAPES)))
def test_family_builds_and_runs_forward_and_backward(family, shape):
    if shape not in ACCEPTS[family]:
        with pytest.raises(ValueError, match=f"family {family} needs"):
            models.create(family, {}, spec(SHAPES[shape]))
        return
    for params in option_grid(family):
        torch.manual_seed(0)
        model = models.create(family, params, spec(SHAPES[shape]))
        x = torch.randn(5, *SHAPES[shape])
        out = model(x)
        # While training, a family of k networks in one (tabular) gives each head's outputs.
        assert out.shape in ((5, 4), (5, params.get("k", 8), 4)), (params, out.shape)
        out.sum().backward()
        trained = [p for p in model.parameters() if p.requires_grad]
        assert trained and all(p.grad is not None for p in trained)
        with torch.no_grad():
            assert model.eval()(x).shape == (5, 4), params


def test_mlp_widths_per_layer_are_used():
    model = models.create(
        "mlp", {"depth": 3, "width_l0": 7, "width_l1": 9, "width_l2": 11}, spec((5,))
    )
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 7), (7, 9), (9, 11), (11, 4)]


def test_cnn_picks_1d_or_2d_by_the_data():
    seq = models.create("cnn", {"blocks": 2}, spec((1, 40)))
    img = models.create("cnn", {"blocks": 2}, spec((1, 8, 8)))
    assert [m.kernel_size for m in seq if isinstance(m, torch.nn.Conv2d)] == [(1, 5)] * 2
    assert [m.kernel_size for m in img if isinstance(m, torch.nn.Conv2d)] == [(5, 5)] * 2
    assert seq(torch.randn(3, 1, 40)).shape == img(torch.randn(3, 1, 8, 8)).shape == (3, 4)


@pytest.mark.parametrize("pooling", ["max", "avg", "none"])
def test_a_sequence_cnn_computes_what_1d_layers_would(pooling):
    """Sequences run as images one row high: the same function as Conv1d, BatchNorm1d and
    1D pooling with the same weights, in training (batch statistics) and in eval."""
    params = {"blocks": 3, "channels_l0": 6, "channels_l1": 5, "kernel_size": 3}
    seq = models.create("cnn", {**params, "pooling": pooling}, spec((2, 24)))
    one_d = []
    for layer in list(seq)[1:]:  # without the Unflatten
        if isinstance(layer, torch.nn.Conv2d):
            conv = torch.nn.Conv1d(layer.in_channels, layer.out_channels, 3, padding=1, bias=False)
            conv.weight.data = layer.weight.data[:, :, 0].clone()
            layer = conv
        elif isinstance(layer, torch.nn.BatchNorm2d):
            norm = torch.nn.BatchNorm1d(layer.num_features)
            norm.load_state_dict(layer.state_dict())
            layer = norm
        elif isinstance(layer, torch.nn.MaxPool2d):
            layer = torch.nn.MaxPool1d(2)
        elif isinstance(layer, torch.nn.AvgPool2d):
            layer = torch.nn.AvgPool1d(2)
        one_d.append(layer)
    one_d = torch.nn.Sequential(*one_d)
    x = torch.randn(16, 2, 24)
    for mode in (True, False):
        seq.train(mode), one_d.train(mode)
        torch.testing.assert_close(seq(x), one_d(x), rtol=1e-5, atol=1e-5)


def test_cnn_never_pools_a_tiny_image_to_nothing():
    model = models.create("cnn", {"blocks": 6, "pooling": "max"}, spec((1, 8, 8)))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model family 'rnn'; known: mlp, cnn"):
        models.create("rnn", {}, spec((3,)))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_fast_dropout_keeps_one_minus_p_and_the_mean(p):
    drop = FastDropout(p)
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    out = drop(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.002  # 1e6 draws: ~6 sigma
    assert abs(out.mean().item() - 1.0) < 0.01  # kept values scaled by 1 / (1 - p)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 65536 / (65536 - round(p * 65536))))
    rows, cols = kept.float().mean(1), kept.float().mean(0)  # no position is favoured
    assert rows.std() < 0.03 and cols.std() < 0.03
    torch.manual_seed(0)
    assert torch.equal(drop(x), out)  # the global seed decides the masks
    assert not torch.equal(drop(x), out)  # and the next call draws new ones


def test_fast_dropout_gradient_and_eval():
    drop = FastDropout(0.3)
    x = torch.randn(64, 33, requires_grad=True)  # 64*33 is not a multiple of 4
    out = drop(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / (1 - 0.3), rtol=1e-4, atol=0)
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    with pytest.raises(ValueError, match="dropout probability has to be in"):
        FastDropout(1.0)
