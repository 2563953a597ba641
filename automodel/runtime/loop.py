"""The training loop: epochs of seeded permutation batches, one optimizer step per batch.

`train_epochs` is the one loop that both the search (train.fit, which adds devices, mixed
precision, data read batch by batch and per-epoch reports around it) and the exported
script's `train` run, so the script reproduces a trial's training on a CPU to the bit. The
caller validates after each epoch and keeps the best weights (`snapshot`, `restore`).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from automodel.runtime.recipe import augment

CHUNK_BYTES = 64 << 20  # training rows gathered at once, in whole batches


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the candidate diverged."""


def memory_format(model: nn.Module) -> torch.memory_format:
    """Channels-last for models with 2D convolutions (the cnn family runs sequences as
    images one row high): their convolutions, pooling and batch norm run faster in NHWC on
    a CPU (oneDNN) and on a GPU (cuDNN), with the same floats on a CPU; see
    benchmarks/trainer_throughput.py."""
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return torch.channels_last
    return torch.contiguous_format


def in_layout(x, layout: torch.memory_format):
    """A batch of images (a 4-dim tensor) in `layout`; anything else as it is."""
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=layout)
    return x


def train_epochs(
    model: nn.Module,
    x,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    augmentation: str = "none",
    schedule=None,
    step=None,
    forward=None,
    autocast=None,
    batches=None,
    l1: float = 0.0,
):
    """Train `model` on (x, y); after each epoch yield (epoch, train_loss, lr as it ran).

    Each epoch steps the optimizer once per batch of a permutation of the rows, drawn from
    a generator seeded with `seed` that augmentation draws from too; the schedule steps once
    an epoch. `l1` adds l1 * l1_penalty(model) to each step's loss (train_loss reports the
    loss alone). Raises NonFiniteLoss when the loss diverges. The defaults are what the script
    runs; the search adds `step` (a faster optimizer.step), `forward` (the compiled model),
    `autocast` (mixed precision on GPUs) and `batches` (for data read batch by batch).
    """
    n = len(x)
    n_used, sizes = _batch_sizes(n, batch_size, y.device)
    generator = torch.Generator(device=y.device).manual_seed(seed)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    step = optimizer.step if step is None else step
    forward = model if forward is None else forward
    autocast = contextlib.nullcontext() if autocast is None else autocast
    batches = tensor_batches if batches is None else batches
    layout = memory_format(model)
    penalised = l1_weights(model) if l1 else []
    for epoch in range(1, epochs + 1):
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        perm = torch.randperm(n, generator=generator, device=y.device)
        losses = []
        for inputs, targets in batches(x, y, perm, n_used, batch_size, layout):
            if augmentation != "none":
                inputs = augment(inputs, augmentation, generator)
            with autocast:
                loss = loss_fn(forward(inputs), targets)
            # Outside autocast: the penalty sums many weights, in float32.
            objective = loss + l1 * l1_penalty(penalised) if penalised else loss
            # optimizer.zero_grad(set_to_none=True), without its overhead
            for p in params:
                p.grad = None
            objective.backward()
            step()
            losses.append(loss.detach())
        total = torch.stack(losses).float() @ sizes.float()
        train_loss = float(total) / n_used  # the one host sync of the epoch
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"training loss became {train_loss} in epoch {epoch}")
        if schedule is not None:
            schedule.step()
        yield epoch, train_loss, lr


def l1_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights an L1 penalty shrinks: those of linear and convolution layers (tensors
    of two or more dims) that train; not biases, not normalisation scales and shifts (one
    dim), whose size is no measure of a model's complexity."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() > 1]


def l1_penalty(weights: list[torch.Tensor]) -> torch.Tensor:
    """The sum of the absolute values of `weights`."""
    return torch.stack([w.abs().sum() for w in weights]).sum()


def _batch_sizes(n: int, batch_size: int, device) -> tuple[int, torch.Tensor]:
    """(rows used per epoch, the size of each batch): a final batch of a single row is
    dropped, as batch norm needs two."""
    if batch_size > n:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {n} training rows"
        )
    n_used = n - 1 if n % batch_size == 1 else n
    starts = range(0, n_used, batch_size)
    return n_used, torch.tensor(
        [min(batch_size, n_used - i) for i in starts], device=device
    )


def tensor_batches(x, y, perm, n_used: int, batch_size: int, layout):
    """(inputs, targets) of each training batch of tensors, in the order of `perm`.

    The rows of up to CHUNK_BYTES of whole batches are gathered at once and each batch is
    a slice of them (one gather per chunk, not two per step), in `layout`, as a gather per
    batch would give them.
    """
    row_bytes = max(1, x[0].numel() * x.element_size())
    chunk = max(batch_size, CHUNK_BYTES // row_bytes // batch_size * batch_size)
    for start in range(0, n_used, chunk):
        idx = perm[start : min(start + chunk, n_used)]
        xs, ys = in_layout(x[idx], layout), y[idx]
        for i in range(0, len(idx), batch_size):
            yield xs[i : i + batch_size], ys[i : i + batch_size]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights in the standard layout, whatever layout training used."""
    return {
        k: v.detach().clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }


def restore(model: nn.Module, state: dict[str, torch.Tensor] | None) -> None:
    """The model back in the standard layout, with the weights `state` unless None."""
    model.to(memory_format=torch.contiguous_format)
    if state is not None:
        model.load_state_dict(state)
