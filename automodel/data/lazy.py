"""Data too large to hold as tensors: read sample by sample by a DataLoader with workers.

A split is a `Rows` dataset: items (file paths, row numbers) and a picklable `reader` that
turns an item into its raw row, normalised exactly as data.prepare normalises in-memory rows
(float32 `(x - mean) / std`). The trainer asks it for batches in its own seeded order
(`loader(order, batch_size)`), so a loaded epoch sees the same batches as a tensor epoch would.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset


class Rows(TorchDataset):
    def __init__(
        self,
        items: np.ndarray,
        reader,
        shape: tuple[int, ...],
        mean: np.ndarray,
        std: np.ndarray,
        workers: int = 2,
    ):
        self.items, self.reader, self.shape, self.workers = items, reader, tuple(shape), workers
        stat = (shape[0],) + (1,) * (len(shape) - 1)
        self.mean = np.asarray(mean, np.float32).reshape(stat)
        self.std = np.asarray(std, np.float32).reshape(stat)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = np.asarray(self.reader(self.items[i]), np.float32).reshape(self.shape)
        return torch.from_numpy((x - self.mean) / self.std)

    def loader(self, batches: list[list[int]], device: torch.device) -> DataLoader:
        """Batches of samples in the order given, read by `workers` processes; pinned memory
        when they go to a GPU (the copy to the device then overlaps the next read)."""
        return DataLoader(
            self,
            batch_sampler=batches,
            num_workers=self.workers,
            pin_memory=device.type == "cuda",
        )

    def batches(self, batch_size: int, device: torch.device):
        """(index tensor, batch on `device`) in order, for evaluation."""
        chunks = [
            list(range(i, min(i + batch_size, len(self)))) for i in range(0, len(self), batch_size)
        ]
        for chunk, x in zip(chunks, self.loader(chunks, device), strict=True):
            yield torch.tensor(chunk), x.to(device, non_blocking=True)


def channel_stats(items: np.ndarray, reader, shape: tuple[int, ...], workers: int):
    """Per-channel mean and std of the raw rows of `items` (the training split), in one
    streamed pass, accumulated in float64."""
    rows = Rows(items, reader, shape, np.zeros(shape[0]), np.ones(shape[0]), workers)
    total = np.zeros(shape[0])
    squares = np.zeros(shape[0])
    count = 0
    for _, x in rows.batches(256, torch.device("cpu")):
        x = x.double().transpose(0, 1).reshape(shape[0], -1)
        total += x.sum(1).numpy()
        squares += (x * x).sum(1).numpy()
        count += x.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean, np.where(std < 1e-8, 1.0, std)
