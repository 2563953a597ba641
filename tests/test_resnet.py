"""The resnet family: its shapes per data kind, and its blocks written once into the export."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from automodel import export, models
from automodel.models import resnet
from automodel.models.blocks import ACTIVATIONS
from tests.conftest import checkpoint
from tests.test_models import spec


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_the_blocks_know_every_activation(name):
    assert type(resnet.ResBlock(2, 4, 4, activation=name).act) is ACTIVATIONS[name]
    assert type(resnet.ResLinear(4, activation=name).act) is ACTIVATIONS[name]


def test_stages_double_the_channels_and_halve_the_size():
    model = models.create("resnet", {"stages": 3, "blocks": 2, "width": 8}, spec((3, 16, 16)))
    blocks = [m for m in model if isinstance(m, resnet.ResBlock)]
    assert [(b.in_channels, b.out_channels, b.stride) for b in blocks] == [
        (8, 8, 1), (8, 8, 1), (8, 16, 2), (16, 16, 1), (16, 32, 2), (32, 32, 1),
    ]  # fmt: skip
    assert isinstance(blocks[0].shortcut, nn.Identity)
    assert isinstance(blocks[2].shortcut, nn.Sequential)
    features = nn.Sequential(*list(model)[:-3])
    assert features(torch.randn(2, 3, 16, 16)).shape == (2, 32, 4, 4)


def test_one_dim_for_sequences_and_linear_blocks_for_tables():
    seq = models.create("resnet", {"stages": 2}, spec((1, 40)))
    assert any(isinstance(m, nn.Conv1d) for m in seq) and seq[3].dims == 1
    table = models.create("resnet", {"stages": 2, "blocks": 3}, spec((12,)))
    assert sum(isinstance(m, resnet.ResLinear) for m in table) == 6


def test_a_tiny_image_never_shrinks_to_nothing():
    model = models.create("resnet", {"stages": 5, "blocks": 1, "width": 4}, spec((1, 8, 8)))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def _ruff(path, *args):
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--isolated", str(path)],
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 40), (12,)])
def test_the_export_writes_each_block_class_once_and_is_ruff_clean(tmp_path, shape):
    params = {"stages": 2, "blocks": 2, "width": 8, "activation": "gelu", "dropout": 0.1}
    data_spec = spec(shape)
    torch.manual_seed(0)
    model = models.create("resnet", params, data_spec)
    ckpt = checkpoint("resnet", params, data_spec, model, trial=1, val={"accuracy": 0.5})
    out = export.write(tmp_path, ckpt, export.provenance("s", "c")) / "best_model.py"
    source = out.read_text()
    block = "ResLinear" if len(shape) == 1 else "ResBlock"
    assert source.count(f"class {block}(nn.Module):") == 1
    assert f"{'ResBlock' if block == 'ResLinear' else 'ResLinear'}(" not in source
    if block == "ResBlock":
        assert f'ResBlock({len(shape) - 1}, 8, 16, stride=2, activation="gelu"),' in source
    assert _ruff(out, "check").returncode == 0
    fmt = _ruff(out, "format", "--diff")
    assert fmt.returncode == 0, fmt.stdout
