"""Plain-torch training: the recipe read from `params`, `fit`, `evaluate`.

Nothing here knows about Optuna, MLflow or Hydra. The caller passes `on_epoch_end`, which
may raise (the search raises `optuna.TrialPruned` through it) to stop training at once.

Data that fits is held on the device as tensors and gathered in the order of a seeded
permutation, a chunk of batches at a time: no DataLoader, no per-step host sync (the losses
are kept on the device and read once an epoch). Models with 2D convolutions train in
channels-last; fused optimizer kernels are called directly (FusedStep). The exported
script's `train` (export_script.py) follows the same steps, so it reproduces a CPU trial.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from automodel import metrics
from automodel.hparams import Param

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine")
LOSSES = ("mse", "huber")  # regression; classification always uses cross-entropy
AUGMENTS = ("none", "flip", "crop", "crop_flip")  # images only
CHUNK_BYTES = 64 << 20  # training rows gathered at once, in whole batches

RECIPE_PARAMS = {
    "optimizer": Param("choice", "adam", choices=OPTIMIZERS),
    "lr": Param("float", 1e-3, low=1e-7, high=10.0),
    "weight_decay": Param("float", 0.0, low=0.0, high=1.0),
    "momentum": Param("float", 0.9, low=0.0, high=0.999),
    "batch_size": Param("int", 64, low=1, high=1 << 20),
    "schedule": Param("choice", "constant", choices=SCHEDULES),
    "label_smoothing": Param("float", 0.0, low=0.0, high=0.5),
    "loss": Param("choice", "mse", choices=LOSSES),  # regression only
    "augment": Param("choice", "none", choices=AUGMENTS),  # images only
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
    loss: str = "mse"
    augment: str = "none"
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


class FusedStep:
    """`optimizer.step()`, with the fused kernel of an Adam, AdamW or SGD called directly.

    Around a fused step's ~35 us kernel, `Optimizer.step` spends ~45 us of Python on a CPU
    (hooks, profiler labels, grouping tensors by device): a tenth of a small MLP's training
    step. After the first step, which creates the optimizer's state, this makes the same
    kernel call `step()` makes, with the same arguments; tests/test_train.py checks that the
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

    Keeps the weights of the epoch with the best validation metric (`data.spec.metric`: the
    highest accuracy, or the lowest rmse). Raises NonFiniteLoss when the loss diverges, and
    whatever `on_epoch_end` raises. `compile` trains through `torch.compile(model)`: it
    compiles for seconds before the first step, so it only pays back on long trials
    (benchmarks/trainer_throughput.py --compile measures it).
    """
    device = data.y_train.device
    n = len(data.x_train)
    if recipe.batch_size > n:
        raise ValueError(f"batch_size {recipe.batch_size} is larger than the {n} training rows")
    layout = _memory_format(model)
    model.to(memory_format=layout)
    x_train, x_val = data.x_train, data.x_val
    if not data.lazy and x_train.dim() == 4:
        x_train = x_train.contiguous(memory_format=layout)
        x_val = x_val.contiguous(memory_format=layout)
    if device.type == "cuda" and layout == torch.channels_last:
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
    step_model = torch.compile(model) if compile else model
    optimizer = make_optimizer(model, recipe, device)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    step = FusedStep(optimizer)
    schedule = make_schedule(optimizer, recipe)
    spec = data.spec
    loss_fn = make_loss(spec.task, recipe)
    amp = _autocast(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(recipe.seed)
    bs = recipe.batch_size
    # A final batch of one row would break batch norm; drop that single row each epoch.
    n_used = n - 1 if n % bs == 1 else n
    sizes = torch.tensor([min(bs, n_used - i) for i in range(0, n_used, bs)], device=device)
    result = FitResult(best_epoch=0, best_value=metrics.worst(spec.direction), best_state={})
    for epoch in range(1, recipe.epochs + 1):
        start = time.perf_counter()
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        perm = torch.randperm(n, generator=gen, device=device)
        losses = []
        for x, y in _batches(x_train, data.y_train, perm, n_used, bs, layout, device):
            if recipe.augment != "none":
                x = augment(x, recipe.augment, gen)
            with amp:
                loss = loss_fn(step_model(x), y)
            for p in params:  # optimizer.zero_grad(set_to_none=True), without its overhead
                p.grad = None
            loss.backward()
            step()
            losses.append(loss.detach())
        total = torch.stack(losses).float() @ sizes.float()
        train_loss = float(total) / n_used  # the one host sync of the epoch
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"training loss became {train_loss} in epoch {epoch}")
        if schedule is not None:
            schedule.step()
        val = evaluate(model, x_val, data.y_val, spec, eval_batch_size)
        val_loss, value = val.pop("loss"), val[spec.metric]
        record = Epoch(epoch, train_loss, val_loss, val, value, lr, time.perf_counter() - start)
        result.history.append(record)
        if metrics.better(spec.direction, value, result.best_value):
            result.best_epoch, result.best_value, result.best_metrics = epoch, value, val
            result.best_state = _snapshot(model)
        if on_epoch_end is not None:
            on_epoch_end(record)
    model.to(memory_format=torch.contiguous_format)
    model.load_state_dict(result.best_state)
    return result


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch of images (N, C, H, W) on its device, drawing from `generator`.

    "crop": pad by an eighth of the height (at least 1 pixel) and crop back at a random
    offset per sample; "flip": mirror left-right with probability 1/2 per sample;
    "crop_flip": both. The exported script holds the same code, so its `train` reproduces
    the search's batches.
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


def make_loss(task: str, recipe: Recipe) -> nn.Module:
    """Cross-entropy for classes; MSE or Huber on the normalised targets for regression."""
    if task == "classification":
        return nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    if recipe.loss not in LOSSES:
        raise ValueError(f"unknown loss {recipe.loss!r}; known: {', '.join(LOSSES)}")
    inner = nn.MSELoss() if recipe.loss == "mse" else nn.HuberLoss()
    return _Squeezed(inner)


class _Squeezed(nn.Module):
    """A regression loss on the model's single output column."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.inner(outputs.squeeze(1), y)


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec, batch_size: int = 2048
) -> dict[str, float]:
    """`loss` and every metric of `spec.task` (a DataSpec) for `model` on (x, y)."""
    outputs = predict_logits(model, x, batch_size)
    return {
        "loss": metrics.loss(spec.task, outputs, y),
        **metrics.compute(spec.task, outputs, y, spec.target_std),
    }


def _memory_format(model: nn.Module) -> torch.memory_format:
    """Channels-last for models with 2D convolutions (the cnn family runs sequences as images
    one row high): their convolutions, pooling and batch norm run 1.2-2x faster in NHWC on a
    CPU (oneDNN) and on a GPU (cuDNN). The exported script's `train` uses the same layout, so
    it still reproduces a CPU trial exactly."""
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return torch.channels_last
    return torch.contiguous_format


def _autocast(device: torch.device):
    """bf16 autocast for training steps on GPUs that support it (tensor cores, half the memory
    traffic); on the CPU full float32, which keeps CPU runs reproducible to the bit. Reusable:
    the loop enters it once a step."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights in the standard layout, whatever layout training used."""
    return {
        k: v.detach().clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }


def _batches(x, y, perm, n_used: int, bs: int, layout, device: torch.device):
    """(inputs, targets) of each training batch, in the order of `perm`.

    From tensors held on the device: the rows of up to CHUNK_BYTES of whole batches are
    gathered at once and each batch is a slice of them (one gather per chunk, not two per
    step), in `layout`, as a gather per batch would give them. From data.lazy.Rows: read by a
    DataLoader and copied to the device.
    """
    if isinstance(x, torch.Tensor):
        row_bytes = max(1, x[0].numel() * x.element_size())
        chunk = max(bs, CHUNK_BYTES // row_bytes // bs * bs)
        for start in range(0, n_used, chunk):
            idx = perm[start : min(start + chunk, n_used)]
            xs, ys = x[idx], y[idx]
            if xs.dim() == 4:
                xs = xs.contiguous(memory_format=layout)
            for i in range(0, len(idx), bs):
                yield xs[i : i + bs], ys[i : i + bs]
        return
    order = perm[:n_used].tolist()  # one host sync per epoch
    chunks = [order[i : i + bs] for i in range(0, n_used, bs)]
    for chunk_rows, batch in zip(chunks, x.loader(chunks, device), strict=True):
        yield batch.to(device, non_blocking=True), y[torch.tensor(chunk_rows, device=device)]


def predict_logits(model: nn.Module, x, batch_size: int = 2048) -> torch.Tensor:
    """Outputs for every row of `x`: a tensor on the model's device, or data.lazy.Rows."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # Full precision even on a GPU (no autocast): the metrics a search reports are the ones an
    # exported model reproduces on any device.
    with torch.inference_mode():
        if isinstance(x, torch.Tensor):
            out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        else:
            out = torch.cat([model(b) for _, b in x.batches(batch_size, device)])
    model.train(was_training)
    return out
