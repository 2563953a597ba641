"""The pretrained family: weights from the hub cache or a file, never downloaded; head-only or
full fine-tuning; exported with the torchvision backbone. conftest's `fake_torch_hub` puts
freshly initialised weights where torchvision keeps downloaded ones."""

from __future__ import annotations

import json
import runpy

import pytest
import torch
import torchvision

import automodel.data
from automodel import export, models, train
from automodel.models import pretrained
from tests.conftest import FAST, checkpoint, cli, tree
from tests.test_export import HOSTILE
from tests.test_models import spec

BASE = [o for o in FAST if not o.startswith(("data=", "data.n_"))]


def _space(tmp_path, weights: str, backbone: str = "mobilenet_v3_small", finetune="full"):
    path = tmp_path / "space.yaml"
    path.write_text(
        f"family: pretrained\nparams:\n  backbone: {backbone}\n  weights: {json.dumps(weights)}\n"
        f"  finetune: {finetune}\n  batch_size: 32\n"
    )
    return path


def test_the_backbone_starts_from_the_hub_file():
    model = models.create("pretrained", {"backbone": "mobilenet_v3_small"}, spec((3, 16, 16)))
    saved = torch.load(pretrained.hub_path("mobilenet_v3_small"), weights_only=True)
    for key, value in model[0].net.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert model[-1].in_features == model[0].out_features == 1024


def test_head_only_finetuning_leaves_the_backbone_as_it_was():
    full = automodel.data.load(digits_config(), seed=0)
    data = automodel.data.Dataset(  # a few batches suffice
        full.spec, full.x_train[:64], full.y_train[:64], full.x_val[:32], full.y_val[:32],
        full.x_test, full.y_test,
    )  # fmt: skip
    params = {"backbone": "mobilenet_v3_small", "finetune": "head"}
    model = models.create("pretrained", params, data.spec)
    before = {k: v.clone() for k, v in model[0].state_dict().items()}
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["1.weight", "1.bias"]
    train.fit(model, data, train.Recipe(batch_size=32, epochs=1, lr=0.01))
    after = model[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch norm statistics too
    assert not torch.equal(
        model[1].weight, models.create("pretrained", params, data.spec)[1].weight
    )


def digits_config():
    from automodel.config import DataConfig

    return DataConfig(name="digits")


def test_grey_images_are_repeated_to_three_channels():
    model = models.create("pretrained", {"backbone": "resnet18"}, spec((1, 16, 16)))
    assert model.eval()(torch.randn(2, 1, 16, 16)).shape == (2, 4)


def test_missing_weights_name_the_expected_path_exit_2_nothing_written(tmp_path):
    empty = tmp_path / "empty_home"
    runs = tmp_path / "runs"
    res = cli("search", *BASE, "data=digits", "search_space=pretrained", f"runs_dir={runs}",
              env={"TORCH_HOME": str(empty)})  # fmt: skip
    assert res.returncode == 2
    expected = empty / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert res.stderr.strip() == (
        f"error: pretrained weights for resnet18 not found: expected {expected} (the torch hub "
        "cache ($TORCH_HOME)); put the file there, give its path as params.weights, or set "
        "weights: none to train from scratch"
    )
    assert tree(runs) == []


def test_weights_none_trains_from_scratch_without_any_file(tmp_path):
    runs = tmp_path / "runs"
    res = cli("search", *BASE, "data=digits", f"search_space={_space(tmp_path, 'none')}",
              f"runs_dir={runs}", "study.n_trials=1", "trainer.max_epochs=1",
              env={"TORCH_HOME": str(tmp_path / "empty_home")})  # fmt: skip
    assert res.returncode == 0, res.stderr
    source = (runs / "digits-space" / "export" / "best_model.py").read_text()
    assert "PRETRAINED" not in source and "torchvision for its backbone" in source


def test_weights_from_a_file_of_the_users_and_a_wrong_file_is_refused(tmp_path):
    net = torchvision.models.mobilenet_v3_small(weights=None)
    mine = tmp_path / "mine.pth"
    torch.save(net.state_dict(), mine)
    model = models.create(
        "pretrained", {"backbone": "mobilenet_v3_small", "weights": str(mine)}, spec((3, 8, 8))
    )
    assert torch.equal(model[0].net.features[0][0].weight, net.features[0][0].weight)
    wrong = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    runs = tmp_path / "runs"
    res = cli("search", *BASE, "data=digits", f"search_space={_space(tmp_path, str(wrong))}",
              f"runs_dir={runs}")  # fmt: skip
    assert res.returncode == 2
    assert "is not a mobilenet_v3_small state_dict: it lacks features.0.0.weight" in res.stderr
    res = cli("search", *BASE, "data=digits", "search_space=pretrained", "data=synthetic",
              f"runs_dir={runs}")  # fmt: skip
    assert res.returncode == 2 and "family pretrained needs grey or colour images" in res.stderr
    assert tree(runs) == []


def test_an_exported_weights_path_is_a_literal_and_new_model_loads_it(tmp_path):
    home = tmp_path / HOSTILE[1].replace("\n", "_").replace("/", "_")
    home.mkdir()
    mine = home / "w.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), mine)
    params = {"backbone": "mobilenet_v3_small", "weights": str(mine), "finetune": "head"}
    data_spec = spec((3, 8, 8))
    model = models.create("pretrained", params, data_spec)
    ckpt = checkpoint("pretrained", params, data_spec, model)
    export_dir = export.write(tmp_path, ckpt, export.provenance("s", "c"))
    script = runpy.run_path(str(export_dir / "best_model.py"))
    assert str(script["PRETRAINED"]) == str(mine)
    torch.manual_seed(0)
    fresh = script["new_model"]()
    assert torch.equal(fresh[0].net.features[0][0].weight, model[0].net.features[0][0].weight)
    assert (
        'Backbone("mobilenet_v3_small", 3, finetune="head")'
        in (export_dir / "best_model.py").read_text()
    )


@pytest.mark.parametrize("name", pretrained.BACKBONES)
def test_every_backbone_has_its_hub_file_name(name):
    assert pretrained.hub_path(name).name.startswith(name.split("_v")[0])
