"""Property-based tests over search-space specs (hypothesis).

Any valid spec samples params that build a model which trains a step; any spec broken in one
place is rejected with a ValueError that names the broken field.
"""

from __future__ import annotations

import optuna
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automodel import models, spaces, train
from automodel.data import DataSpec
from automodel.runtime import recipe as recipe_lib

# Keep sampled models small: upper bounds for the test, inside each rule's own bounds.
CAPS = {
    "depth": 3,
    "width": 32,
    "blocks": 2,
    "stages": 2,
    "channels": 8,
    "kernel_size": 7,
    "batch_size": 16,
    "head_width": 16,
    "n_frequencies": 8,
    "d_embedding": 8,
    "k": 4,
}
# The families under test and a data shape each accepts. `pretrained` is left out: it needs a
# torchvision backbone's weights file (tests/test_pretrained.py covers it).
SHAPES = {"mlp": (6,), "cnn": (1, 16), "resnet": (1, 8, 8), "tabular": (6,)}
# Per family: the int param that counts layers, and the param searched per layer.
LAYERED = {"mlp": ("depth", "width"), "cnn": ("blocks", "channels")}


def _spec_for(family: str) -> DataSpec:
    shape = SHAPES[family]
    n = shape[0]
    return DataSpec("p", shape, 3, ("a", "b", "c"), (0.0,) * n, (1.0,) * n)


@st.composite
def entry(draw, name, rule):
    """A valid space entry for one param (fixed value, range or choices)."""
    if rule.kind in ("choice", "bool"):
        options = list(rule.choices) if rule.kind == "choice" else [True, False]
        if draw(st.booleans()):
            return draw(st.sampled_from(options))
        return {
            "type": "categorical",
            "choices": draw(st.lists(st.sampled_from(options), min_size=1, unique=True)),
        }
    hi = min(rule.high, CAPS.get(name, rule.high))
    lo = max(rule.low, 1) if name in CAPS else rule.low
    if rule.kind == "int":
        a = draw(st.integers(int(lo), int(hi)))
        if draw(st.booleans()) or a == hi:
            return a
        b = draw(st.integers(a + 1, int(hi)))
        return {"type": "int", "low": a, "high": b, "log": a > 0 and draw(st.booleans())}
    a = draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
    b = draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
    a, b = min(a, b), max(a, b)
    if a == b:
        return a
    return {"type": "float", "low": a, "high": b, "log": a > 0 and draw(st.booleans())}


@st.composite
def valid_space(draw):
    family = draw(st.sampled_from(sorted(SHAPES)))
    rules = spaces.known_params(family)
    names = draw(st.lists(st.sampled_from(sorted(rules)), unique=True, min_size=1))
    params = {}
    for name in names:
        params[name] = draw(entry(name, rules[name]))
    count, layered = LAYERED.get(family, (None, None))
    if (
        layered in params
        and count in params
        and isinstance(params[layered], dict)
        and draw(st.booleans())
    ):
        params[layered]["per_layer"] = count
        params = {count: params.pop(count), **params}  # per_layer needs its count listed first
    return {"family": family, "params": params}


FAST_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_every_family_but_pretrained_is_covered():
    assert set(SHAPES) == set(models.FAMILIES) - {"pretrained"}


@FAST_SETTINGS
@given(valid_space(), st.integers(0, 2**16))
def test_any_valid_space_samples_a_model_that_trains_a_step(raw, seed):
    space = spaces.parse(raw)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    params = space.sample(trial)
    spec = _spec_for(space.family)
    torch.manual_seed(seed)
    model = models.create(space.family, params, spec)
    recipe = train.Recipe.from_params(params, epochs=1, seed=seed)
    optimizer = train.make_optimizer(model, recipe, torch.device("cpu"))
    x = torch.randn(8, *spec.input_shape)
    y = torch.randint(0, 3, (8,))
    before = [p.detach().clone() for p in model.parameters()]
    # The search's own loss: it also takes the k heads' outputs of a tabular (TabM) network.
    loss = recipe_lib.new_loss("classification", None, 0.0)(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    if recipe.lr > 0:
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


BREAKS = {
    "low>=high": lambda e: {**e, "low": e["high"]},
    "unknown key": lambda e: {**e, "lowest": 1},
    "bad type": lambda e: {**e, "type": "uniform"},
    "high not a number": lambda e: {**e, "high": "big"},
}


@FAST_SETTINGS
@given(valid_space(), st.sampled_from(sorted(BREAKS)), st.data())
def test_a_space_broken_in_one_place_names_the_field(raw, how, data):
    ranged = [
        k
        for k, v in raw["params"].items()
        if isinstance(v, dict) and v.get("type") in ("int", "float")
    ]
    if not ranged:
        name = data.draw(st.sampled_from(sorted(raw["params"])))
        raw["params"][name] = {"type": "categorical", "choices": ["__nope__"]}
    else:
        name = data.draw(st.sampled_from(ranged))
        raw["params"][name] = BREAKS[how](raw["params"][name])
    with pytest.raises(ValueError) as err:
        spaces.parse(raw)
    assert f"params.{name}" in str(err.value)


@FAST_SETTINGS
@given(valid_space(), st.text(min_size=1, max_size=12).filter(lambda s: s.isidentifier()))
def test_an_unknown_param_is_rejected_by_name(raw, name):
    rules = spaces.known_params(raw["family"])
    if name in rules:
        return
    raw["params"][name] = 1
    with pytest.raises(ValueError, match=f"unknown param '{name}'"):
        spaces.parse(raw)
