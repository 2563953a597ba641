"""Which devices the trials run on: `devices=auto|cpu|[ids]` -> worker slots.

A slot is one worker process: the GPU it is pinned to (via CUDA_VISIBLE_DEVICES, so inside
the worker it is always cuda:0) or None for the CPU, and its share of the CPU threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    gpu: int | None  # physical GPU id, None for CPU
    threads: int

    @property
    def label(self) -> str:
        return "cpu" if self.gpu is None else f"cuda:{self.gpu}"

    def environ(self) -> dict[str, str]:
        """What a worker process of this slot starts with: torch and CUDA read these when they
        initialise, so they are set before the process starts, not inside it."""
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        return env


def visible_gpus() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


MAX_AUTO_WORKERS = 8


def slots(devices, workers: int | str, trials_per_device: int, threads: int | None) -> list[Slot]:
    """Worker slots for a run; raises ValueError for GPUs that are not there."""
    cores = os.cpu_count() or 1
    if devices == "cpu" or (devices == "auto" and not visible_gpus()):
        if workers == "auto":
            workers = max(1, min(cores // (threads or 1), MAX_AUTO_WORKERS))
        per = threads or max(1, cores // workers)
        return [Slot(None, per) for _ in range(workers)]
    gpus = visible_gpus() if devices == "auto" else [int(d) for d in devices]
    available = visible_gpus()
    missing = [g for g in gpus if g not in available]
    if missing:
        raise ValueError(
            f"devices: GPU {missing[0]} is not available; visible GPUs: "
            f"{', '.join(map(str, available)) or 'none (use devices=cpu)'}"
        )
    n = len(gpus) * trials_per_device
    per = threads or max(1, cores // n)
    return [Slot(g, per) for g in gpus for _ in range(trials_per_device)]


def bind(slot: Slot, pinned: bool):
    """Give this process the slot's share of threads; returns the torch.device it trains on.

    A `pinned` process (a worker started with `slot.environ()`) sees only its GPU, as cuda:0;
    the search process, which works the first slot itself, sees every GPU.
    """
    import torch

    torch.set_num_threads(slot.threads)
    if slot.gpu is None:
        return torch.device("cpu")
    return torch.device("cuda:0" if pinned else f"cuda:{slot.gpu}")
