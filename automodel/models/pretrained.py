"""A torchvision backbone with a new head: the classic transfer-learning recipe.

Backbone (torchvision's network without its last Linear) -> Dropout? -> Linear. The
backbone's weights come from the torch hub cache (`weights: hub`, the file torchvision
itself would download, at `torch.hub.get_dir()/checkpoints/<file>`), from a state_dict file
(`weights: path/to/file.pth`), or nowhere (`weights: none`: trained from scratch). Nothing is
downloaded: a missing file is an error naming the path expected. `finetune: head` freezes the
backbone (its batch norm statistics too) and trains the head alone; `full` trains everything.

Grey images are repeated to the three channels the networks expect. The inputs are normalised
with the data's own statistics, not ImageNet's: fine-tuning adapts to the difference.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from automodel.hparams import Param
from automodel.models.blocks import FastDropout

# Any torchvision classification network fits (its last Linear is replaced); adding one here
# is all it takes (and its fake weights in tests/conftest.py).
BACKBONES = ("resnet18", "mobilenet_v3_small")
WEIGHTS_DOC = "hub, none, or the path of a state_dict file"

PARAMS = {
    "backbone": Param("choice", "resnet18", choices=BACKBONES),
    "weights": Param("text", "hub"),  # hub | none | path
    "finetune": Param("choice", "full", choices=("head", "full")),
    "dropout": Param("float", 0.0, low=0.0, high=0.9),
}


class Backbone(nn.Module):
    """A torchvision classification network without its last Linear: images -> features.

    Built with random weights (load_pretrained puts pretrained ones in); needs torchvision.
    With finetune="head" its weights are frozen and it stays in eval mode.
    """

    def __init__(self, name: str, in_channels: int = 3, finetune: str = "full") -> None:
        super().__init__()
        import torchvision

        self.name, self.in_channels, self.finetune = name, in_channels, finetune
        self.net = getattr(torchvision.models, name)(weights=None)
        last = [n for n, m in self.net.named_modules() if isinstance(m, nn.Linear)][-1]
        parent, _, attr = last.rpartition(".")
        holder = self.net.get_submodule(parent)
        self.out_features = getattr(holder, attr).in_features
        setattr(holder, attr, nn.Identity())
        if finetune == "head":
            self.net.requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if self.finetune == "head":
            self.net.eval()  # a frozen feature extractor: batch norm statistics stay
        return self

    def load_pretrained(self, path) -> None:
        """Load torchvision's state_dict for this network (its last Linear is not used)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.net.state_dict()
        lacking = [k for k in own if k not in state]
        if lacking:
            raise ValueError(f"{path} is not a {self.name} state_dict: it lacks {lacking[0]}")
        self.net.load_state_dict({k: state[k] for k in own})

    def forward(self, x):
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)


def hub_path(name: str) -> Path:
    """Where torchvision keeps the default weights of `name` once downloaded."""
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def weights_path(name: str, weights: str) -> Path | None:
    """The state_dict file that `weights` names for backbone `name` (None for none)."""
    if weights == "none":
        return None
    path = hub_path(name) if weights == "hub" else Path(weights)
    if not path.is_file():
        where = "the torch hub cache ($TORCH_HOME)" if weights == "hub" else "params.weights"
        raise ValueError(
            f"pretrained weights for {name} not found: expected {path} ({where}); put the "
            "file there, give its path as params.weights, or set weights: none to train "
            "from scratch"
        )
    return path


def build(params: dict, input_shape: tuple[int, ...], n_outputs: int) -> nn.Sequential:
    p = {k: params.get(k, rule.default) for k, rule in PARAMS.items()}
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise ValueError(
            f"family pretrained needs grey or colour images (1 or 3, H, W), got input shape "
            f"{tuple(input_shape)}"
        )
    path = weights_path(p["backbone"], p["weights"])
    backbone = Backbone(p["backbone"], input_shape[0], p["finetune"])
    if path is not None:
        backbone.load_pretrained(path)
    head: list[nn.Module] = [FastDropout(p["dropout"])] if p["dropout"] > 0 else []
    return nn.Sequential(backbone, *head, nn.Linear(backbone.out_features, n_outputs))
