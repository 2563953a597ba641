"""Layer tables shared by the families: names a search space may use, mapped to torch layers."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class FastDropout(nn.Module):
    """Dropout with masks much cheaper than nn.Dropout's on a CPU.

    nn.Dropout draws a Bernoulli sample per element from the CPU generator, a large share of
    a small MLP's training step (automodel's benchmarks/trainer_throughput.py compares an MLP
    with and without dropout). This draws 64 random bits per four elements from the same
    generator (torch.manual_seed seeds it) and keeps an element when its 16 bits, read as a
    signed number, are at least round(p * 65536) - 32768: it keeps 1 - p of them to within
    1/65536 and scales the kept ones so the expected value is unchanged, as nn.Dropout does.
    On other devices, and in eval mode, it is nn.functional.dropout.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability has to be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, self.training)
        n, dropped = x.numel(), round(self.p * 65536)
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= dropped - 32768
        return x * keep.to(x.dtype).mul_(65536 / (65536 - dropped))

    def extra_repr(self) -> str:
        return f"p={self.p}"
