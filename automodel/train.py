"""Plain-torch training: the recipe read from `params`, `fit`, `evaluate`.

Nothing here knows about Optuna, MLflow or Hydra. The caller passes `on_epoch_end`, which
may raise (the search raises `optuna.TrialPruned` through it) to stop training at once.

Data that fits is held on the device as tensors and batched by indexing a permutation: no
DataLoader, no per-step host sync (the loss is summed on the device and read once an epoch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from automodel.hparams import Param

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine")

RECIPE_PARAMS = {
    "optimizer": Param("choice", "adam", choices=OPTIMIZERS),
    "lr": Param("float", 1e-3, low=1e-7, high=10.0),
    "weight_decay": Param("float", 0.0, low=0.0, high=1.0),
    "momentum": Param("float", 0.9, low=0.0, high=0.999),
    "batch_size": Param("int", 64, low=1, high=1 << 20),
    "schedule": Param("choice", "constant", choices=SCHEDULES),
    "label_smoothing": Param("float", 0.0, low=0.0, high=0.5),
}


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the candidate diverged."""


@dataclass(frozen=True)
class Recipe:
    """How a candidate is trained; plain values so it can be logged and written into code."""

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    batch_size: int = 64
    schedule: str = "constant"
    label_smoothing: float = 0.0
    epochs: int = 30
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict, epochs: int, seed: int) -> Recipe:
        values = {k: params.get(k, rule.default) for k, rule in RECIPE_PARAMS.items()}
        return cls(**values, epochs=epochs, seed=seed)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Epoch:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass
class FitResult:
    best_epoch: int
    best_value: float  # validation accuracy of the best epoch
    best_state: dict[str, torch.Tensor]
    history: list[Epoch] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed torch's generators; the model's initialisation depends on it."""
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    params = model.parameters()
    wd = recipe.weight_decay
    # Fused kernels update all parameters in one pass: on CPU this alone is worth ~1.4x for
    # small MLPs. RMSprop has none; foreach is its fast path.
    fused = device.type in ("cpu", "cuda")
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=wd, fused=fused)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=wd, fused=fused)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=wd,
            nesterov=recipe.momentum > 0,
            fused=fused,
        )
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=recipe.lr, weight_decay=wd, foreach=True)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; known: {', '.join(OPTIMIZERS)}")


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe):
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    if recipe.schedule == "constant":
        return None
    raise ValueError(f"unknown schedule {recipe.schedule!r}; known: {', '.join(SCHEDULES)}")


def fit(
    model: nn.Module,
    data,
    recipe: Recipe,
    *,
    eval_batch_size: int = 2048,
    on_epoch_end: Callable[[Epoch], None] | None = None,
    compile: bool = False,
) -> FitResult:
    """Train `model` on `data` (a Dataset already on the model's device) for recipe.epochs.

    Keeps the weights of the epoch with the best validation accuracy. Raises NonFiniteLoss
    when the loss diverges, and whatever `on_epoch_end` raises. `compile` trains through
    `torch.compile(model)`: it compiles for seconds before the first step, so it only pays
    back on long trials (benchmarks/trainer_throughput.py --compile measures it).
    """
    device = data.x_train.device
    n = len(data.x_train)
    if recipe.batch_size > n:
        raise ValueError(f"batch_size {recipe.batch_size} is larger than the {n} training rows")
    layout = _memory_format(model, data.x_train)
    model.to(memory_format=layout)
    x_train = data.x_train.contiguous(memory_format=layout)
    x_val = data.x_val.contiguous(memory_format=layout)
    if device.type == "cuda" and layout == torch.channels_last:
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
    step_model = torch.compile(model) if compile else model
    optimizer = make_optimizer(model, recipe, device)
    schedule = make_schedule(optimizer, recipe)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    gen = torch.Generator(device=device)
    gen.manual_seed(recipe.seed)
    bs = recipe.batch_size
    # A final batch of one row would break batch norm; drop that single row each epoch.
    n_used = n - 1 if n % bs == 1 else n
    # The epoch's rows are gathered in permutation order a chunk of whole batches at a time
    # (one gather per chunk instead of one per step), within a fixed memory budget.
    row_bytes = x_train[0].numel() * x_train.element_size()
    chunk = bs * max(1, GATHER_BYTES // (row_bytes * bs))
    sizes = torch.tensor(
        [min(bs, n_used - i) for i in range(0, n_used, bs)], dtype=torch.float32, device=device
    )
    result = FitResult(best_epoch=0, best_value=-math.inf, best_state={})
    for epoch in range(1, recipe.epochs + 1):
        start = time.perf_counter()
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        perm = torch.randperm(n, generator=gen, device=device)
        losses = []
        for c in range(0, n_used, chunk):
            rows = perm[c : min(c + chunk, n_used)]
            for x, y in zip(x_train[rows].split(bs), data.y_train[rows].split(bs), strict=True):
                with _autocast(device):
                    loss = loss_fn(step_model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
        # The one host sync of the epoch: no per-step .item().
        train_loss = float(torch.stack(losses).float() @ sizes) / n_used
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"training loss became {train_loss} in epoch {epoch}")
        if schedule is not None:
            schedule.step()
        val_loss, val_acc = evaluate(model, x_val, data.y_val, eval_batch_size)
        record = Epoch(epoch, train_loss, val_loss, val_acc, lr, time.perf_counter() - start)
        result.history.append(record)
        if val_acc > result.best_value:
            result.best_epoch, result.best_value = epoch, val_acc
            result.best_state = _snapshot(model)
        if on_epoch_end is not None:
            on_epoch_end(record)
    model.to(memory_format=torch.contiguous_format)
    model.load_state_dict(result.best_state)
    return result


# Memory a chunk of gathered training rows may take (see fit).
GATHER_BYTES = 64 << 20


def _memory_format(model: nn.Module, x: torch.Tensor) -> torch.memory_format:
    """Channels-last for 2D convolutions: oneDNN and cuDNN run them (and their pooling and
    batch norm) faster in NHWC; on a CPU the digits CNN trains ~1.3x faster."""
    if x.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return torch.channels_last
    return torch.contiguous_format


def _autocast(device: torch.device):
    """bf16 autocast for training steps on GPUs that support it (tensor cores, half the memory
    traffic); on the CPU full float32, which keeps CPU runs reproducible to the bit."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights in the standard layout, whatever layout training used."""
    return {
        k: v.detach().clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on (x, y)."""
    logits = predict_logits(model, x, batch_size)
    loss = nn.functional.cross_entropy(logits, y)
    accuracy = (logits.argmax(1) == y).float().mean()
    loss, accuracy = torch.stack([loss, accuracy]).tolist()  # one host sync, not two
    return loss, accuracy


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    # Full precision even on a GPU (no autocast): the metrics a search reports are the ones an
    # exported model reproduces on any device.
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out
