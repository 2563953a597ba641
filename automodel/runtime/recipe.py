"""How a candidate trains, by name: optimizers, learning-rate schedules, losses, augmentation.

Each table maps the names a search space may use to what they build. The search checks
params against the tables' keys (train.RECIPE_PARAMS) and builds from them, the exporter
checks a checkpoint's recipe against the same keys, and the exported script holds this module
as it is.
"""

from __future__ import annotations

import torch
from torch import nn


def _adam(params, lr, weight_decay, momentum, fused):
    """Adam, as torch.optim.Adam."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)


def _adamw(params, lr, weight_decay, momentum, fused):
    """AdamW: Adam with decoupled weight decay."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def _sgd(params, lr, weight_decay, momentum, fused):
    """SGD, with Nesterov momentum when the momentum is above 0."""
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=momentum > 0,
        fused=fused,
    )


def _rmsprop(params, lr, weight_decay, momentum, fused):
    """RMSprop (no fused kernels: foreach is its fast path)."""
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, foreach=True)


OPTIMIZERS = {"adam": _adam, "adamw": _adamw, "sgd": _sgd, "rmsprop": _rmsprop}


def new_optimizer(
    params, name: str, lr: float, weight_decay: float, momentum: float, fused: bool
) -> torch.optim.Optimizer:
    """Optimizer `name` over `params`. `fused`: update every parameter in one kernel (CPU
    and CUDA have them), the fast path for small networks; momentum is SGD's alone."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, weight_decay, momentum, fused)


def _constant(optimizer, epochs):
    """The learning rate stays as set (no scheduler)."""


def _cosine(optimizer, epochs):
    """Cosine annealing to 0 over the epochs, stepped once an epoch."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)


SCHEDULES = {"constant": _constant, "cosine": _cosine}


def new_schedule(optimizer: torch.optim.Optimizer, name: str, epochs: int):
    """Schedule `name` of the optimizer's learning rate over `epochs`; None for constant."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    return SCHEDULES[name](optimizer, epochs)


# Regression losses, on the targets normalised with the training split's statistics.
LOSSES = {"mse": nn.MSELoss, "huber": nn.HuberLoss}


def new_loss(task: str, name: str | None, label_smoothing: float) -> nn.Module:
    """Cross-entropy (with `label_smoothing`) for classes; LOSSES[name] for regression."""
    if task == "classification":
        return PerHead(nn.CrossEntropyLoss(label_smoothing=label_smoothing))
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    return PerHead(Squeezed(LOSSES[name]()))


class PerHead(nn.Module):
    """A loss that also takes the outputs of k heads, (B, k, C) (a model that trains k
    networks in one, as TabM): then it is the mean of the k heads' losses, each head
    trained on its own (not their mean prediction)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if outputs.dim() == 3:
            y = y.repeat_interleave(outputs.shape[1])
            outputs = outputs.flatten(0, 1)
        return self.inner(outputs, y)


class Squeezed(nn.Module):
    """A regression loss on the model's single output column."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.inner(outputs.squeeze(1), y)


AUGMENTS = {  # images only
    "none": "no augmentation",
    "flip": "random horizontal flips",
    "crop": "random crops of the padded image",
    "crop_flip": "random crops of the padded image and horizontal flips",
}


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch of images (N, C, H, W) on its device, drawing from `generator`.

    "crop": pad by an eighth of the height (at least 1 pixel) and crop back at a random
    offset per sample; "flip": mirror left-right with probability 1/2 per sample;
    "crop_flip": both.
    """
    if kind in ("crop", "crop_flip"):
        n, _, h, w = x.shape
        pad = max(1, h // 8)
        padded = nn.functional.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded[batch, rows, cols].permute(0, 3, 1, 2)
    if kind in ("flip", "crop_flip"):
        flip = torch.rand(len(x), generator=generator, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


KEEPS = {  # which weights `train` keeps
    "best": "the best validation epoch's weights (the last without validation rows)",
    "last": "the last epoch's weights (EPOCHS: a refit's, or the folds' best epoch count)",
}
