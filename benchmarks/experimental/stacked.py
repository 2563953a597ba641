"""EXPERIMENTAL: train several candidates of one architecture at once, as one batched network.

Small candidates leave a CPU core (or a GPU) mostly idle: per step, the Python and dispatch
overhead of forward, backward and optimizer step costs as much as the arithmetic. Candidates
that share an architecture and differ in optimizer settings (learning rate, weight decay) can
share that overhead by running as one network whose weights have the candidates along a new
first dimension, stepped by one Adam update with a learning rate and weight decay each:

- MLPs (Linear, BatchNorm1d, activations, Dropout) become one network of batched matrix
  products (`baddbmm`) directly, one call per layer;
- any other architecture goes through `torch.func.stack_module_state` and `torch.func.vmap`,
  general but with a per-call overhead (~30 us a layer on a CPU) that eats most of the gain.

Not wired into the search: a search would ask Optuna for k trials whose architecture params
agree, train them here and tell each its own result. benchmarks/stacked.py measures what it
would buy. Limits: Adam only, a constant learning rate, the same batches for every candidate
(one seeded permutation), no pruning between epochs. Torch only, like train.py.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from automodel.models.blocks import ACTIVATIONS, FastDropout
from automodel.train import Epoch, FitResult


def fit_stacked(
    models: list[nn.Module],
    data,
    lrs: list[float],
    weight_decays: list[float] | None = None,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    eval_batch_size: int = 2048,
) -> list[FitResult]:
    """Train `models` (same architecture, their own initial weights) together with Adam, one
    learning rate and weight decay each; returns one FitResult per model, best epoch kept,
    and loads each model with its best weights."""
    k = len(models)
    if not k or len(lrs) != k or (weight_decays is not None and len(weight_decays) != k):
        raise ValueError(f"need one lr (and weight decay) per model, got {len(lrs)} for {k}")
    device = data.x_train.device
    net = _StackedMLP(models) if _StackedMLP.supports(models[0]) else _Vmapped(models)
    lr = torch.tensor(lrs, device=device)
    wd = torch.tensor(weight_decays or [0.0] * k, device=device)
    adam = _Adam(net.params, lr, wd)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    n = len(data.x_train)
    n_used = n - 1 if n % batch_size == 1 else n  # as train.fit: no batch of one row
    results = [FitResult(best_epoch=0, best_value=-math.inf, best_state={}) for _ in models]
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        net.train(True)
        perm = torch.randperm(n, generator=gen, device=device)[:n_used]
        losses = []
        for rows in perm.split(batch_size):
            logits = net(data.x_train[rows])  # (k, batch, classes)
            y = data.y_train[rows].expand(k, -1)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            per_model = loss.view(k, -1).mean(1)
            adam.zero_grad()
            per_model.sum().backward()  # the models share nothing: each gets its own gradient
            adam.step()
            losses.append(per_model.detach() * len(rows))
        train_loss = (torch.stack(losses).sum(0) / n_used).tolist()
        val_loss, val_acc = _evaluate(net, data, eval_batch_size)
        seconds = time.perf_counter() - start
        for i, result in enumerate(results):
            val = {"accuracy": val_acc[i]}  # classification only, as train.fit's val dict
            record = Epoch(epoch, train_loss[i], val_loss[i], val, val_acc[i], lrs[i], seconds / k)
            result.history.append(record)
            if val_acc[i] > result.best_value:
                result.best_epoch, result.best_value, result.best_metrics = epoch, val_acc[i], val
                result.best_state = net.state_of(i)
    for model, result in zip(models, results, strict=True):
        model.load_state_dict(result.best_state)
    return results


def _evaluate(net, data, batch_size: int):
    """Per-model validation loss and accuracy (lists of k floats), one host sync."""
    net.train(False)
    with torch.inference_mode():
        x, y = data.x_val, data.y_val
        logits = torch.cat([net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)], 1)
        k = logits.shape[0]
        loss = nn.functional.cross_entropy(
            logits.flatten(0, 1), y.expand(k, -1).flatten(), reduction="none"
        )
        loss = loss.view(k, -1).mean(1)
        accuracy = (logits.argmax(2) == y).float().mean(1)
        values = torch.stack([loss, accuracy]).tolist()
    return values[0], values[1]


class _StackedMLP:
    """k MLPs (nn.Sequential of Flatten, Linear, BatchNorm1d, activations, Dropout) as one
    network over (k, batch, features): Linear -> baddbmm, batch norm over k * features."""

    ELEMENTWISE = (nn.Flatten, nn.Dropout, FastDropout, *ACTIVATIONS.values())

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        return isinstance(model, nn.Sequential) and all(
            isinstance(m, (nn.Linear, nn.BatchNorm1d, *cls.ELEMENTWISE)) for m in model
        )

    def __init__(self, models: list[nn.Sequential]):
        self.k = len(models)
        self.layers = []  # (kind, index in the Sequential, module of model 0, tensors)
        self.params: list[torch.Tensor] = []
        for j, layer in enumerate(models[0]):
            group = [m[j] for m in models]
            if isinstance(layer, nn.Linear):
                w = torch.stack([g.weight.detach().t() for g in group]).requires_grad_()
                b = None
                if layer.bias is not None:
                    b = torch.stack([g.bias.detach()[None] for g in group]).requires_grad_()
                self.layers.append(("linear", j, layer, (w, b)))
                self.params += [t for t in (w, b) if t is not None]
            elif isinstance(layer, nn.BatchNorm1d):
                w = torch.stack([g.weight.detach() for g in group]).requires_grad_()
                b = torch.stack([g.bias.detach() for g in group]).requires_grad_()
                mean = torch.cat([g.running_mean for g in group])
                var = torch.cat([g.running_var for g in group])
                self.layers.append(("norm", j, layer, (w, b, mean, var)))
                self.params += [w, b]
            else:
                self.layers.append(("same", j, copy.deepcopy(layer), ()))
        self.training = True

    def train(self, mode: bool) -> None:
        self.training = mode
        for kind, _, layer, _ in self.layers:
            if kind == "same":
                layer.train(mode)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1).expand(self.k, -1, -1)  # the same rows for every model
        for kind, _, layer, t in self.layers:
            if kind == "linear":
                w, b = t
                h = torch.bmm(h, w) if b is None else torch.baddbmm(b, h, w)
            elif kind == "norm":
                w, b, mean, var = t
                k, n, c = h.shape
                flat = h.transpose(0, 1).reshape(n, k * c)
                flat = nn.functional.batch_norm(
                    flat, mean, var, w.flatten(), b.flatten(),
                    self.training, layer.momentum, layer.eps,
                )  # fmt: skip
                h = flat.view(n, k, c).transpose(0, 1)
            elif not isinstance(layer, nn.Flatten):
                h = layer(h)
        return h

    def state_of(self, i: int) -> dict[str, torch.Tensor]:
        """Model i's state_dict, keyed as its own nn.Sequential's."""
        state = {}
        for kind, j, layer, t in self.layers:
            if kind == "linear":
                state[f"{j}.weight"] = t[0][i].detach().t().clone()
                if t[1] is not None:
                    state[f"{j}.bias"] = t[1][i, 0].detach().clone()
            elif kind == "norm":
                w, b, mean, var = t
                c = w.shape[1]
                state[f"{j}.weight"] = w[i].detach().clone()
                state[f"{j}.bias"] = b[i].detach().clone()
                state[f"{j}.running_mean"] = mean[i * c : (i + 1) * c].clone()
                state[f"{j}.running_var"] = var[i * c : (i + 1) * c].clone()
                state[f"{j}.num_batches_tracked"] = layer.num_batches_tracked.clone()
        return state


class _Vmapped:
    """Any architecture: stacked weights (torch.func.stack_module_state) run by vmap."""

    def __init__(self, models: list[nn.Module]):
        params, self.buffers = stack_module_state(models)
        self.names = list(params)
        self.params = list(params.values())
        self.base = copy.deepcopy(models[0]).to("meta")
        for name, layer in list(self.base.named_modules()):
            if isinstance(layer, FastDropout):  # its masks come from an unbatched draw: no vmap
                self.base.set_submodule(name, nn.Dropout(layer.p))

        def call(p, b, x):
            return functional_call(self.base, (p, b), (x,))

        self.forward = vmap(call, in_dims=(0, 0, None), randomness="different")

    def train(self, mode: bool) -> None:
        self.base.train(mode)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(dict(zip(self.names, self.params, strict=True)), self.buffers, x)

    def state_of(self, i: int) -> dict[str, torch.Tensor]:
        state = {n: p[i].detach().clone() for n, p in zip(self.names, self.params, strict=True)}
        return {**state, **{n: b[i].clone() for n, b in self.buffers.items()}}


class _Adam:
    """Adam (L2 weight decay) on stacked weights with a learning rate and a weight decay per
    model (the first dimension of every tensor).

    Adam's step is linear in its learning rate, so torch's fused Adam runs once at lr=1 for
    all models, and each model then moves that fraction (its lr) of the way: `lerp` from the
    old weights. Four fused calls a step instead of ~10 element-wise ops per tensor.
    """

    def __init__(self, params: list[torch.Tensor], lr: torch.Tensor, weight_decay: torch.Tensor):
        self.params = params
        self.adam = torch.optim.Adam(params, lr=1.0, fused=params[0].device.type != "mps")
        shapes = [(-1,) + (1,) * (p.dim() - 1) for p in params]
        self.lr = [lr.view(shape) for shape in shapes]
        self.wd = [weight_decay.view(shape) for shape in shapes]

    def zero_grad(self) -> None:
        self.adam.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        torch._foreach_addcmul_(grads, self.wd, self.params)  # L2 decay, per model
        old = torch._foreach_mul(self.params, 1.0)  # a copy
        self.adam.step()  # p - 1.0 * m_hat / (sqrt(v_hat) + eps)
        torch._foreach_lerp_(old, self.params, self.lr)  # old + lr * (that step)
        torch._foreach_copy_(self.params, old)
