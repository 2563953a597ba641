"""Plain-torch training for the search: the recipe read from `params`, `fit`, `evaluate`.

Nothing here knows about Optuna, MLflow or Hydra. The caller passes `on_epoch_end`, which
may raise (the search raises `optuna.TrialPruned` through it) to stop training at once.

The loop itself, and the optimizers, schedules, losses and augmentation it builds by name, are
the runtime's (automodel.runtime.loop and .recipe), which the exported script runs too: so the
script's `train` reproduces a CPU trial. `fit` adds what only the search needs around it:
devices, bf16 autocast on GPUs, fused optimizer kernels called directly (FusedStep), data read
batch by batch, and a report of every epoch. Data that fits is held on the device as tensors
and gathered in the order of a seeded permutation, with no per-step host sync.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from automodel import metrics
from automodel.hparams import Param
from automodel.runtime import loop
from automodel.runtime.evaluation import model_outputs, slices
from automodel.runtime.loop import NonFiniteLoss
from automodel.runtime.recipe import (
    AUGMENTS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    augment,
    new_loss,
    new_optimizer,
    new_schedule,
)

__all__ = ["AUGMENTS", "LOSSES", "OPTIMIZERS", "SCHEDULES", "NonFiniteLoss", "augment"]

RECIPE_PARAMS = {
    "optimizer": Param("choice", "adam", choices=tuple(OPTIMIZERS)),
    "lr": Param("float", 1e-3, low=1e-7, high=10.0),
    "weight_decay": Param("float", 0.0, low=0.0, high=1.0),
    "momentum": Param("float", 0.9, low=0.0, high=0.999),
    "batch_size": Param("int", 64, low=1, high=1 << 20),
    "schedule": Param("choice", "constant", choices=tuple(SCHEDULES)),
    "label_smoothing": Param("float", 0.0, low=0.0, high=0.5),
    "loss": Param("choice", "mse", choices=tuple(LOSSES)),  # regression only
    "augment": Param("choice", "none", choices=tuple(AUGMENTS)),  # images only
    # Times the sum of |w| over the weights (runtime.loop.l1_weights), added to the loss.
    "l1": Param("float", 0.0, low=0.0, high=1.0),
}


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
    loss: str = "mse"
    augment: str = "none"
    l1: float = 0.0
    epochs: int = 30
    seed: int = 0
    # The epochs the learning-rate schedule spans, when more than `epochs`: a refit stops after
    # the best epoch count inside the schedule its trials ran (a cosine over max_epochs),
    # instead of squeezing a whole cosine into fewer epochs. 0: `epochs`.
    schedule_epochs: int = 0
    # Which weights training keeps: "best" (the best validation epoch's) or "last" (a refit's,
    # trained on every non-test row for a fixed number of epochs, with nothing to validate on).
    keep: str = "best"

    @classmethod
    def from_params(
        cls, params: dict, epochs: int, seed: int, keep: str = "best", schedule_epochs: int = 0
    ) -> Recipe:
        values = {k: params.get(k, rule.default) for k, rule in RECIPE_PARAMS.items()}
        return cls(**values, epochs=epochs, seed=seed, keep=keep, schedule_epochs=schedule_epochs)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def span(self) -> int:
        """The epochs the learning-rate schedule spans."""
        return max(self.epochs, self.schedule_epochs)

    def stopped_at(self, epochs: int) -> Recipe:
        """The first `epochs` epochs of this recipe, inside its schedule, keeping the last
        weights: how a fold model kept at the folds' best epoch, or a refit, trains again."""
        return replace(self, epochs=epochs, schedule_epochs=self.span, keep="last")


@dataclass
class Epoch:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val: dict[str, float]  # every validation metric of the task
    value: float  # the one the search selects on: val[spec.metric]
    lr: float
    seconds: float


@dataclass
class FitResult:
    best_epoch: int
    best_value: float  # the selection metric of the best epoch (accuracy, or rmse)
    best_state: dict[str, torch.Tensor]
    history: list[Epoch] = field(default_factory=list)
    best_metrics: dict[str, float] = field(default_factory=dict)  # every metric of that epoch


def seed_everything(seed: int) -> None:
    """Seed torch's generators; the model's initialisation depends on it."""
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    """The recipe's optimizer over the model's parameters, with fused kernels where `device`
    has them (see runtime.recipe.new_optimizer)."""
    fused = device.type in ("cpu", "cuda")
    return new_optimizer(
        model.parameters(), recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.momentum, fused
    )


class FusedStep:
    """`optimizer.step()`, with the fused kernel of an Adam, AdamW or SGD called directly.

    Around a fused step's kernel, `Optimizer.step` spends longer than the kernel itself in
    Python on a CPU (hooks, profiler labels, grouping tensors by device), a visible share of
    a small MLP's training step (benchmarks/trainer_throughput.py measures the trainer).
    After the first step, which creates the optimizer's state, this makes the same kernel
    call `step()` makes, with the same arguments; tests/test_train.py checks that the
    weights and the state stay bit-identical to `step()`'s. Anything else (RMSprop, more than
    one param group, options the kernel call here does not pass, a parameter left without a
    gradient) goes through `step()`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.kernel = None
        group = optimizer.param_groups[0]
        plain = not any(group.get(k) for k in ("amsgrad", "maximize", "capturable", "foreach"))
        if len(optimizer.param_groups) == 1 and group.get("fused") and plain:
            kernels = {
                torch.optim.AdamW: "_fused_adamw_",
                torch.optim.Adam: "_fused_adam_",
                torch.optim.SGD: "_fused_sgd_",
            }
            name = kernels.get(type(optimizer))
            if name == "_fused_adam_" and group.get("decoupled_weight_decay"):
                name = "_fused_adamw_"
            self.kernel = getattr(torch, name, None) if name else None
        self.params: list[torch.Tensor] = []

    def __call__(self) -> None:
        if self.kernel is None:
            self.optimizer.step()
            return
        if not self.params:  # the first step creates the state; the kernel takes it from there
            self.optimizer.step()
            group = self.optimizer.param_groups[0]
            self.params = [p for p in group["params"] if p.grad is not None]
            state = [self.optimizer.state[p] for p in self.params]
            if self.kernel is torch._fused_sgd_:
                self.buffers = [s.get("momentum_buffer") for s in state]
                if group["momentum"] == 0:
                    self.buffers = []
                elif any(b is None for b in self.buffers):
                    self.kernel = None
            else:
                self.avgs = [s["exp_avg"] for s in state]
                self.sqs = [s["exp_avg_sq"] for s in state]
                self.steps = [s["step"] for s in state]
            return
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            self.optimizer.step()
            return
        group = self.optimizer.param_groups[0]
        if self.kernel is torch._fused_sgd_:
            self.kernel(
                self.params,
                grads,
                self.buffers,
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                maximize=False,
                is_first_step=False,
                grad_scale=None,
                found_inf=None,
            )
            return
        torch._foreach_add_(self.steps, 1)
        beta1, beta2 = group["betas"]
        self.kernel(
            self.params,
            grads,
            self.avgs,
            self.sqs,
            [],
            self.steps,
            amsgrad=False,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


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

    Keeps the weights of the epoch with the best validation metric (`data.spec.metric`: the
    highest accuracy, or the lowest rmse), or with `recipe.keep == "last"` those of the last
    epoch, without validating. Raises NonFiniteLoss when the loss diverges, and whatever
    `on_epoch_end` raises. `compile` trains through `torch.compile(model)`: it compiles for
    seconds before the first step, so it only pays back on long trials
    (benchmarks/trainer_throughput.py --compile measures it).
    """
    run = Fitting(model, data, recipe, eval_batch_size=eval_batch_size, compile=compile)
    for record in run:
        if on_epoch_end is not None:
            on_epoch_end(record)
    return run.result()


class Fitting:
    """One model's training, an epoch per step of iteration: each step trains an epoch,
    validates and yields its `Epoch`; `result()` then restores the kept weights.

    Several of them advance in lockstep to train the folds of a cross-validated trial
    (automodel.crossval), which keeps the folds' weights itself (`own_best=False`: no copy
    of each fold's own best epoch is taken, and `result()` leaves the weights as they are);
    `fit` runs one to the end.
    """

    def __init__(
        self,
        model: nn.Module,
        data,
        recipe: Recipe,
        *,
        eval_batch_size=2048,
        compile: bool = False,
        own_best: bool = True,
    ):
        self.own_best = own_best
        device = data.y_train.device
        layout = loop.memory_format(model)
        model.to(memory_format=layout)
        if device.type == "cuda" and layout == torch.channels_last:
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        self.model, self.data, self.recipe = model, data, recipe
        self.eval_batch_size = eval_batch_size
        self.x_val = loop.in_layout(data.x_val, layout)
        optimizer = make_optimizer(model, recipe, device)
        self.epochs = loop.train_epochs(
            model,
            loop.in_layout(data.x_train, layout),
            data.y_train,
            optimizer,
            new_loss(data.spec.task, recipe.loss, recipe.label_smoothing),
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            seed=recipe.seed,
            augmentation=recipe.augment,
            schedule=new_schedule(optimizer, recipe.schedule, recipe.span),
            step=FusedStep(optimizer),
            forward=torch.compile(model) if compile else None,
            autocast=_autocast(device),
            batches=_batches,
            l1=recipe.l1,
        )
        worst = metrics.worst(data.spec.direction)
        self.fit = FitResult(best_epoch=0, best_value=worst, best_state={})

    def __iter__(self):
        spec, result = self.data.spec, self.fit
        start = time.perf_counter()
        for epoch, train_loss, lr in self.epochs:
            if self.recipe.keep == "last":  # a refit: no validation rows to choose an epoch
                val_loss, val, value = math.nan, {}, math.nan
            else:
                val = evaluate(self.model, self.x_val, self.data.y_val, spec, self.eval_batch_size)
                val_loss, value = val.pop("loss"), val[spec.metric]
            record = Epoch(epoch, train_loss, val_loss, val, value, lr, time.perf_counter() - start)
            result.history.append(record)
            if self.own_best and metrics.better(spec.direction, value, result.best_value):
                result.best_epoch, result.best_value, result.best_metrics = epoch, value, val
                result.best_state = loop.snapshot(self.model)
            yield record
            start = time.perf_counter()

    def result(self) -> FitResult:
        """The FitResult, with the model restored to the kept weights."""
        if not self.own_best:
            return self.fit
        if self.recipe.keep == "last" and self.fit.history:
            self.fit.best_epoch = len(self.fit.history)
            self.fit.best_state = loop.snapshot(self.model)
        loop.restore(self.model, self.fit.best_state)
        return self.fit


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec, batch_size: int = 2048
) -> dict[str, float]:
    """`loss` and every metric of `spec.task` (a DataSpec) for `model` on (x, y)."""
    outputs = predict_logits(model, x, batch_size)
    return {
        "loss": metrics.loss(spec.task, outputs, y),
        **metrics.for_spec(spec, outputs, y),
    }


def _autocast(device: torch.device):
    """bf16 autocast for training steps on GPUs that support it (tensor cores, half the memory
    traffic); on the CPU full float32, which keeps CPU runs reproducible to the bit. Reusable:
    the loop enters it once a step."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batches(x, y, perm, n_used: int, bs: int, layout):
    """(inputs, targets) of each training batch, in the order of `perm`: from tensors held on
    the device as loop.tensor_batches gathers them; from data.lazy.Rows, read by a DataLoader
    and copied to the device."""
    if isinstance(x, torch.Tensor):
        yield from loop.tensor_batches(x, y, perm, n_used, bs, layout)
        return
    device = y.device
    order = perm[:n_used].tolist()  # one host sync per epoch
    chunks = [order[i : i + bs] for i in range(0, n_used, bs)]
    for chunk_rows, batch in zip(chunks, x.loader(chunks, device), strict=True):
        yield batch.to(device, non_blocking=True), y[torch.tensor(chunk_rows, device=device)]


def predict_logits(model: nn.Module, x, batch_size: int = 2048) -> torch.Tensor:
    """Outputs for every row of `x`: a tensor on the model's device, or data.lazy.Rows.

    Full precision even on a GPU (no autocast): the metrics a search reports are the ones an
    exported model reproduces on any device.
    """
    if isinstance(x, torch.Tensor):
        return model_outputs(model, slices(x, batch_size))
    device = next(model.parameters()).device
    return model_outputs(model, (b for _, b in x.batches(batch_size, device)))
