"""Search spaces as the Hydra config group `search_space`: chosen by name or path, every entry
overridable, the composed space the study's identity; and the space fitted to the data, with a
notice per change, so that small tables search with every shipped space that applies."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from automodel import config, search, spaces
from automodel.config import ConfigError
from tests.conftest import cli, load_study
from tests.test_models import ACCEPTS


def _shipped(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(config.SPACES_DIR / f"{name}.yaml"))


def test_the_space_is_composed_with_its_overrides(make_run):
    run = make_run(
        "search_space=resnet",
        "search_space.params.lr.high=0.05",
        "search_space.params.stages.high=2",
        "~search_space.params.momentum",
        "+search_space.params.label_smoothing=0.1",
    )
    expected = _shipped("resnet")
    expected["params"]["lr"]["high"] = 0.05
    expected["params"]["stages"]["high"] = 2
    del expected["params"]["momentum"]
    expected["params"]["label_smoothing"] = 0.1
    assert run.search_space == expected
    assert run.search_space_name == "resnet" and run.study.name == "synthetic-resnet"
    space = search.prepare(run).space
    assert {e.name: e for e in space.entries}["lr"].high == 0.05
    assert "momentum" not in {e.name for e in space.entries}


def test_a_data_config_chooses_the_default_space_and_the_command_line_wins():
    mnist1d = config.compose(["data=mnist1d"])
    assert mnist1d.search_space_name == "cnn" and mnist1d.search_space.family == "cnn"
    chosen = config.compose(["data=mnist1d", "search_space=mlp"])
    assert chosen.search_space_name == "mlp" and chosen.search_space.family == "mlp"
    assert config.compose([]).search_space == _shipped("mlp")


def test_a_space_file_given_by_path_is_composed_and_overridable(make_run, tmp_path):
    mine = tmp_path / "mlp.yaml"  # a user's copy, named as the shipped one
    mine.write_text("family: mlp\nparams:\n  depth: {type: int, low: 1, high: 2}\n  lr: 0.01\n")
    run = make_run(f"search_space={mine}", "search_space.params.depth.high=4")
    assert run.search_space == {
        "family": "mlp",
        "params": {"depth": {"type": "int", "low": 1, "high": 4}, "lr": 0.01},
    }
    assert run.search_space_name == str(mine) and run.study.name == "synthetic-mlp"
    assert config.compose(["search_space=mlp"]).search_space == _shipped("mlp")  # not shadowed


def test_cfg_job_prints_the_composed_space():
    res = cli("search", "--cfg", "job", "search_space=cnn", "search_space.params.lr.high=0.1")
    assert res.returncode == 0, res.stderr
    printed = yaml.safe_load(res.stdout)
    assert printed["search_space"]["family"] == "cnn"
    assert printed["search_space"]["params"]["lr"]["high"] == 0.1


def test_an_override_that_changes_the_space_is_refused_on_resume(make_run):
    search.search(make_run("study.n_trials=1", "trainer.max_epochs=1"))
    study_dir = make_run().study_dir
    assert yaml.safe_load((study_dir / "search_space.yaml").read_text()) == _shipped("mlp")
    assert load_study(study_dir).user_attrs["space"] == _shipped("mlp")
    before = (study_dir / "study.journal").read_bytes()
    with pytest.raises(ConfigError, match=r"different space \(params\.lr\.high: 0\.03 then, 0\.1"):
        search.search(make_run("study.n_trials=2", "search_space.params.lr.high=0.1"))
    assert (study_dir / "study.journal").read_bytes() == before


def test_the_study_keeps_the_space_as_composed_not_as_fitted(make_run):
    run = make_run("search_space.params.batch_size.choices=[32,64,4096]", "study.n_trials=1")
    search.search(run)
    space = load_study(run.study_dir).user_attrs["space"]
    assert space["params"]["batch_size"]["choices"] == [32, 64, 4096]


def test_params_the_data_cannot_use_are_dropped_with_a_notice(make_run):
    plan = search.prepare(
        make_run(
            "+search_space.params.loss=huber",
            "+search_space.params.augment={type: categorical, choices: [none, flip]}",
            "+search_space.params.label_smoothing=0.1",
        )
    )
    names = {e.name for e in plan.space.entries}
    assert {"loss", "augment"}.isdisjoint(names) and "label_smoothing" in names
    assert plan.notices == [
        "loss applies to regression only; data synthetic is classification: dropped from the space",
        "augment applies to images only; data synthetic has input shape (16,): dropped from the "
        "space",
    ]
    regression = search.prepare(
        make_run("data.task=regression", "+search_space.params.label_smoothing=0.1")
    )
    assert "label_smoothing" not in {e.name for e in regression.space.entries}
    assert regression.notices[0].startswith("label_smoothing applies to classification only")


def test_dropping_a_param_drops_what_depends_on_it():
    raw = {
        "family": "mlp",
        "params": {
            "loss": {"type": "categorical", "choices": ["mse", "huber"]},
            "lr": {"type": "float", "low": 0.001, "high": 0.1, "when": {"loss": "huber"}},
            "depth": 2,
        },
        "enqueue": [{"loss": "huber", "lr": 0.01}],
    }
    out = spaces.without(raw, {"loss"})
    assert out["params"] == {"depth": 2} and out["enqueue"] == [{}]
    assert "loss" in raw["params"]  # a copy
    spaces.parse(out)


def test_notices_are_quiet_with_quiet(make_run, capsys):
    search.search(make_run("search_space.params.batch_size.choices=[64,4096]", "study.n_trials=1"))
    assert "notice:" not in capsys.readouterr().err


# ----------------------------------------------------------------- small tables, end to end

SMALL = ["study.n_trials=2", "trainer.max_epochs=1", "workers=1", "devices=cpu"]
SMALL += ["tracking.enabled=false", "quiet=false"]


def _table(path, rows_per_class: int | None = None):
    """Iris as a CSV (150 rows), or its first `rows_per_class` rows of each species."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    frame = iris.frame
    frame["species"] = [iris.target_names[i] for i in frame.pop("target")]
    if rows_per_class is not None:
        frame = frame.groupby("species").head(rows_per_class)
    frame.to_csv(path, index=False)
    return path


def test_iris_searches_with_the_default_space(tmp_path):
    """A table searches the tabular family by default (data=csv picks search_space=tabular)."""
    iris = _table(tmp_path / "iris.csv")
    res = cli(
        "search", "data=csv", f"data.path={iris}", "data.target=species", *SMALL,
        f"runs_dir={tmp_path / 'runs'}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "notice: batch_size: dropped 128 (more than the 96 training rows)" in res.stderr
    assert (tmp_path / "runs" / "iris-tabular" / "export" / "best_model.py").is_file()


TABLE_SPACES = sorted(
    p.stem
    for p in config.SPACES_DIR.glob("*.yaml")
    if "table" in ACCEPTS[yaml.safe_load(p.read_text())["family"]]
)


def test_the_table_spaces_are_the_expected_ones():
    assert {"mlp", "resnet"} <= set(TABLE_SPACES)


@pytest.mark.parametrize("space", TABLE_SPACES)
def test_four_rows_per_class_search_with_every_table_space(tmp_path, space):
    tiny = _table(tmp_path / "tiny.csv", rows_per_class=4)
    # 12 rows: 3 test, 3 validation (the stratified split needs a row of each class on both
    # sides, which the default 0.2 of 9 rows cannot give), 6 to train on.
    res = cli(
        "search", "data=csv", f"data.path={tiny}", "data.target=species", "data.val_fraction=0.3",
        f"search_space={space}", *SMALL, f"runs_dir={tmp_path / 'runs'}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "notice: batch_size choices [32, 64, 128] are all more than the 6 training rows" in (
        res.stderr
    )
    assert "best trial" in res.stdout
