"""Search spaces: the shipped files load, sampling follows the spec, bad specs are rejected."""

from __future__ import annotations

import copy

import optuna
import pytest

from automodel import config, models, spaces

MLP = {
    "family": "mlp",
    "params": {
        "depth": {"type": "int", "low": 1, "high": 3},
        "width": {"type": "int", "low": 8, "high": 64, "log": True, "per_layer": "depth"},
        "activation": {"type": "categorical", "choices": ["relu", "gelu"]},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "momentum": {"type": "float", "low": 0.8, "high": 0.99, "when": {"optimizer": "sgd"}},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "label_smoothing": 0.1,
    },
}


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_shipped_spaces_load_and_enqueue_known_good_trials(name):
    space = spaces.load(config.resolve_space_path(name))
    assert space.family == name
    assert len(space.enqueue) == 1
    # The enqueued trial is a complete point of the space: FixedTrial accepts every name.
    params = space.sample(optuna.trial.FixedTrial(space.enqueue[0]))
    assert params == space.complete(space.enqueue[0])


def test_per_layer_and_when_follow_sampled_values():
    space = spaces.parse(MLP)
    fixed = {
        "depth": 2,
        "width_l0": 16,
        "width_l1": 32,
        "activation": "gelu",
        "optimizer": "sgd",
        "momentum": 0.9,
        "lr": 0.01,
    }
    params = space.sample(optuna.trial.FixedTrial(fixed))
    assert params == {**fixed, "label_smoothing": 0.1}
    no_sgd = {"depth": 1, "width_l0": 8, "activation": "relu", "optimizer": "adam", "lr": 0.01}
    params = space.sample(optuna.trial.FixedTrial(no_sgd))
    assert "momentum" not in params and "width_l1" not in params
    assert params["label_smoothing"] == 0.1


def test_sampling_with_a_real_study_respects_ranges():
    space = spaces.parse(MLP)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        p = space.sample(trial)
        assert 1 <= p["depth"] <= 3
        assert [k for k in p if k.startswith("width_l")] == [
            f"width_l{i}" for i in range(p["depth"])
        ]
        assert all(8 <= p[f"width_l{i}"] <= 64 for i in range(p["depth"]))
        assert ("momentum" in p) == (p["optimizer"] == "sgd")
        study.tell(trial, 0.0)


def _with(path: str, value):
    spec = copy.deepcopy(MLP)
    node = spec
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return spec


_DELETE = object()

BAD = [
    ("family", "transformer", "family 'transformer' is unknown; known: mlp, cnn"),
    ("params.depth.low", 3, "params.depth: low must be < high, got low=3 high=3"),
    ("params.lr.low", 0.0, "params.lr: log scale needs low > 0"),
    (
        "params.depth.type",
        "integer",
        "params.depth.type: 'integer' is not valid; valid: int, float, categorical",
    ),
    ("params.depth.lo", 1, "params.depth: unknown key 'lo' for type int"),
    ("params.widht", {"type": "int", "low": 1, "high": 2}, "unknown param 'widht' for family mlp"),
    (
        "params.activation.choices",
        ["relu", "swishy"],
        "params.activation.choices 'swishy' is not valid; valid: relu",
    ),
    (
        "params.optimizer.choices",
        ["adam", "lbfgs"],
        "params.optimizer.choices 'lbfgs' is not valid",
    ),
    (
        "params.width.per_layer",
        "layers",
        "params.width.per_layer: 'layers' must name an int param listed before 'width'",
    ),
    (
        "params.momentum.when",
        {"scheduler": "x"},
        "params.momentum.when: 'scheduler' must name a param listed before this one",
    ),
    (
        "params.momentum.when",
        {"optimizer": "rmsprop"},
        "params.momentum.when.optimizer: 'rmsprop' is never sampled",
    ),
    ("params.depth.high", 2.5, "params.depth.high must be an int, got 2.5"),
    ("params.depth.high", 100, "params.depth.high must be in [1, 16], got 100"),
    ("params.label_smoothing", 0.9, "params.label_smoothing must be in [0.0, 0.5], got 0.9"),
    ("params.activation.choices", [], "params.activation.choices must be a non-empty list"),
    ("params.activation.choices", ["relu", "relu"], "params.activation.choices has duplicates"),
    (
        "params.activation",
        {"type": "int", "low": 1, "high": 2},
        "params.activation.type: 'activation' must be searched as categorical",
    ),
    ("params.lr.step", 0.1, "params.lr: step and log cannot be combined"),
    ("params", {}, "params must be a non-empty mapping"),
    ("extra", 1, "unknown key 'extra'; valid: family, params, enqueue"),
    ("enqueue", [{"depth": 2, "nope": 1}], "enqueue[0].nope: not a sampled param of this space"),
    ("enqueue", [{"depth": 99}], "enqueue[0].depth must be in [1, 16], got 99"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), BAD, ids=[b[0] + "=" + repr(b[1])[:20] for b in BAD]
)
def test_invalid_specs_are_rejected_naming_the_field(path, value, message):
    with pytest.raises(ValueError) as err:
        spaces.parse(_with(path, value))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_width_per_layer_of_a_later_param_is_rejected():
    spec = {
        "family": "mlp",
        "params": {
            "width": {"type": "int", "low": 8, "high": 16, "per_layer": "depth"},
            "depth": {"type": "int", "low": 1, "high": 2},
        },
    }
    with pytest.raises(ValueError, match="'depth' must name an int param listed before 'width'"):
        spaces.parse(spec)


def test_per_layer_on_a_param_that_is_not_layered_is_rejected():
    spec = {
        "family": "mlp",
        "params": {
            "depth": {"type": "int", "low": 1, "high": 2},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5, "per_layer": "depth"},
        },
    }
    with pytest.raises(
        ValueError, match="'dropout' is not a per-layer param; per-layer params: width"
    ):
        spaces.parse(spec)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: mlp\nparams: {depth: {type: int, low: 1, high: [}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not valid YAML"):
        spaces.load(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("family: mlp\nparams:\n  depth: {type: int, low: 4, high: 2}\n")
    with pytest.raises(ValueError, match=r"wrong\.yaml: params\.depth: low must be < high"):
        spaces.load(wrong)


def test_every_family_param_is_searchable_by_some_space():
    # The space rules come from the families' own tables: a family param can always be named.
    for family in models.FAMILIES:
        known = spaces.known_params(family)
        assert set(models.get(family).params) <= set(known)


def test_a_space_fits_small_data_by_dropping_batch_sizes_it_cannot_use():
    raw = {
        "family": "mlp",
        "params": {"depth": 1, "batch_size": {"type": "categorical", "choices": [32, 64, 128]}},
        "enqueue": [{"batch_size": 128}],
    }
    fitted, notices = spaces.fit_to_data(raw, 96)
    assert fitted["params"]["batch_size"]["choices"] == [32, 64]
    assert fitted["enqueue"] == [{"batch_size": 64}]
    assert len(notices) == 1 and "dropped 128" in notices[0]
    assert raw["params"]["batch_size"]["choices"] == [32, 64, 128]  # the study's space as written
    spaces.parse(fitted)  # still a valid space, its enqueued trial a point of it

    tiny, notices = spaces.fit_to_data(raw, 10)
    assert tiny["params"]["batch_size"] == 10 and "whole split" in notices[0]
    assert tiny["enqueue"] == [{}]  # a fixed value is not enqueued
    spaces.parse(tiny)
    ranged = {"family": "mlp", "params": {"batch_size": {"type": "int", "low": 16, "high": 256}}}
    assert spaces.fit_to_data(ranged, 100)[0]["params"]["batch_size"]["high"] == 100
    assert spaces.fit_to_data(raw, 1000) == (raw, [])
