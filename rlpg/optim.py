"""First-order optimisation: the optimizer factory and the one gradient-step helper every agent uses.

`step_with_clip` is the autograd loop written once: zero_grad -> backward -> measure -> clip -> step.
It measures every parameter's gradient norm before clipping, as one stacked device tensor, so the
trainer can log `grad_norm/<name>` with a single host transfer per log interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rlpg.distributed import reduce_gradients
from rlpg.errors import ConfigError, NonFiniteError

NamedParams = Sequence[tuple[str, nn.Parameter]]

OPTIMIZERS = ("adam", "sgd", "rmsprop")


def make_optimizer(
    name: str,
    params: Iterable[nn.Parameter],
    lr: float,
    momentum: float = 0.9,
    eps: float = 1e-5,
    weight_decay: float = 0.0,
    seeds: int | None = None,
) -> torch.optim.Optimizer:
    """Adam (eps 1e-5 as in the PPO implementation-details study), SGD with (Nesterov-free) momentum,
    or RMSprop. Frozen parameters (requires_grad=False) are left out. `seeds` K: Adam over K seeds' stacked
    parameters that can step some seeds and not others (SeedAdam, SeedSGD, SeedRMSprop)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ConfigError("no trainable parameters left for the optimizer; unfreeze some (--freeze)")
    # fused/foreach: one multi-tensor kernel per update instead of several per parameter. torch picks them by
    # default only on CUDA, but fused Adam is also ~3x faster than the per-parameter loop for small MLPs on CPU.
    if name == "adam":
        return _fused_or_foreach(torch.optim.Adam if seeds is None else SeedAdam, params, lr=lr, eps=eps,
                                 weight_decay=weight_decay)
    if name == "sgd":
        return _fused_or_foreach(torch.optim.SGD if seeds is None else SeedSGD, params, lr=lr, momentum=momentum,
                                 weight_decay=weight_decay)
    if name == "rmsprop":
        return (torch.optim.RMSprop if seeds is None else SeedRMSprop)(params, lr=lr, momentum=momentum, eps=eps,
                                                                       weight_decay=weight_decay, foreach=True)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _fused_or_foreach(
    cls: type[torch.optim.Optimizer], params: list[nn.Parameter], **kw: float
) -> torch.optim.Optimizer:
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # older torch or an unsupported device/dtype
        return cls(params, foreach=True, **kw)


class SeedAdam(torch.optim.Adam):
    """Adam over K seeds' stacked parameters (rlpg.stacked) in which each seed keeps its own step count and only the
    seeds in `active` ([K] bool, None: all) step: a seed left out keeps its parameters, moments and step count, as
    a single run that stopped its epochs early (PPO's target_kl) never took that step. Adam's bias correction
    depends on the step count, which torch's Adam keeps as one number for a whole parameter tensor.

    Its state_dict is Adam's with `step` [K]: seed k's slice (rlpg.seeds.seed_agent_state) is the state of the
    torch Adam of a single run of seed k. The arithmetic is torch's (non-fused) Adam's, so the two agree within
    float rounding."""

    active: Tensor | None = None

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                k = p.shape[0]
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(k, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if state["step"].dim() == 0:  # loaded from seeds that all took the same number of steps
                    state["step"] = state["step"].expand(k).clone()
                on = torch.ones(k, dtype=torch.bool) if self.active is None else self.active.cpu()
                shape = (k,) + (1,) * (p.dim() - 1)
                mask = on.to(p.device).reshape(shape)
                grad = p.grad if not group["weight_decay"] else p.grad.add(p, alpha=group["weight_decay"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.copy_(torch.where(mask, m.lerp(grad, 1 - beta1), m))
                v.copy_(torch.where(mask, v * beta2 + (1 - beta2) * grad * grad, v))
                step = state["step"] + on.to(state["step"].device).float()
                state["step"] = step
                bc1 = (1 - beta1 ** step.clamp(min=1)).to(p.device, p.dtype).reshape(shape)
                bc2 = (1 - beta2 ** step.clamp(min=1)).to(p.device, p.dtype).reshape(shape)
                update = (group["lr"] / bc1) * m / (v.sqrt() / bc2.sqrt() + group["eps"])
                p.sub_(torch.where(mask, update, 0.0))


class _SeedMasked:
    """SGD / RMSprop over K seeds' stacked parameters stepping only the seeds in `active` ([K] bool, None: all): the
    others' parameters and per-parameter state (momentum buffers, square averages) are put back after the step. Their
    arithmetic has no step count (unlike Adam's bias correction, see SeedAdam), so a seed left out is exactly a
    single run that did not take the step."""

    active: Tensor | None = None
    param_groups: list[dict[str, Any]]
    state: Any

    def step(self, closure: Any = None) -> Any:
        if self.active is None or bool(self.active.all()):
            return super().step(closure)  # type: ignore[misc]
        saved = []
        for group in self.param_groups:
            for p in group["params"]:
                keep = (~self.active).to(p.device)
                state = {n: v[keep].clone() for n, v in self.state.get(p, {}).items()
                         if isinstance(v, Tensor) and v.dim() and v.shape[0] == keep.shape[0]}
                saved.append((p, keep, p.detach()[keep].clone(), state))
        out = super().step(closure)  # type: ignore[misc]
        with torch.no_grad():
            for p, keep, values, state in saved:
                p[keep] = values
                for n, v in state.items():
                    self.state[p][n][keep] = v
        return out


class SeedSGD(_SeedMasked, torch.optim.SGD):
    """SGD that steps only some seeds (see _SeedMasked)."""


class SeedRMSprop(_SeedMasked, torch.optim.RMSprop):
    """RMSprop that steps only some seeds (see _SeedMasked)."""


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def grad_norms(grads: Sequence[Tensor], norm_type: float = 2.0) -> tuple[Tensor, Tensor]:
    """Per-tensor norms [P] and their total norm (the norm of the concatenation), on the device."""
    per = torch.stack(torch._foreach_norm([g.detach() for g in grads], norm_type))
    total = per.max() if math.isinf(norm_type) else torch.linalg.vector_norm(per, norm_type)
    return total, per


def seed_grad_norms(grads: Sequence[Tensor], norm_type: float = 2.0) -> tuple[Tensor, Tensor]:
    """grad_norms of K seeds' stacked gradients [K, ...] (rlpg.stacked): per seed the total norm [K] and each
    parameter's norm [K, P]."""
    per = torch.stack([torch.linalg.vector_norm(g.detach().reshape(g.shape[0], -1), norm_type, dim=1)
                       for g in grads], dim=1)  # [K, P]
    total = per.amax(1) if math.isinf(norm_type) else torch.linalg.vector_norm(per, norm_type, dim=1)
    return total, per


def clip_per_seed(grads: Sequence[Tensor], total: Tensor, max_norm: float) -> None:
    """Scale seed k's stacked gradients by min(1, max_norm / (total[k] + 1e-6)): clip_grad_norm_ of each seed on its
    own."""
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(-1, *([1] * (g.dim() - 1))))


def step_with_clip(
    optimizer: torch.optim.Optimizer,
    loss: Tensor,
    params: NamedParams,
    max_grad_norm: float | None = None,
    norm_type: float = 2.0,
    clip_value: float | None = None,
    check_finite: bool = True,
    per_seed: bool = False,
) -> tuple[Tensor, Tensor]:
    """zero_grad -> backward -> (sum over ranks) -> measure norms -> clip by value and/or norm -> step.

    params: the (name, parameter) pairs this optimizer updates; a parameter that got no gradient counts
    as norm 0. Returns (total norm, per-parameter norms [P]), both before clipping, as device tensors.
    Clipping by norm scales all gradients by min(1, max_grad_norm / total) with the total taken after
    any clip by value, as `torch.nn.utils.clip_grad_norm_` does.

    With `check_finite`, a NaN/inf loss or gradient raises NonFiniteError before `optimizer.step()`, so a
    non-finite gradient never reaches the parameters (one host sync per gradient step, not per env step).

    `per_seed`: K seeds stacked along the parameters' first dimension (rlpg.stacked), `loss` their losses [K]. One
    backward of their sum gives each seed its own gradient; norms ([K], [K, P]), the finiteness check and the clip
    are each seed's own (not under torchrun).
    """
    optimizer.zero_grad(set_to_none=True)
    if per_seed:
        loss.sum().backward()
        loss_value = loss.detach()
    else:
        loss.backward()
        # under torchrun: the ranks' gradients (and losses) summed, so every rank measures, clips and steps alike
        loss_value = reduce_gradients([p for _, p in params], loss)
    norms = seed_grad_norms if per_seed else grad_norms
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in params]
    total, per = norms(grads, norm_type)
    if check_finite:
        finite = torch.isfinite(total) & torch.isfinite(loss_value)
        if not bool(finite.all()):
            optimizer.zero_grad(set_to_none=True)
            k = int((~finite).nonzero()[0, 0]) if per_seed else None  # the first seed at fault
            lv, tv = (loss_value, total) if k is None else (loss_value[k], total[k])
            bad = "loss" if not torch.isfinite(lv) else "gradient"
            where = "" if k is None else f" for seed index {k} of {len(finite)}"
            raise NonFiniteError(
                f"non-finite {bad}{where} (loss={lv.item():.4g}, grad norm={tv.item():.4g}); parameters "
                "were not updated: lower the learning rate, set --max-grad-norm, or normalise observations"
            )
    live = [p.grad for _, p in params if p.grad is not None]
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_([p for _, p in params if p.grad is not None], clip_value)
    if max_grad_norm is not None and live:
        clipped_total = total if clip_value is None else norms(live, norm_type)[0]
        if per_seed:
            clip_per_seed(live, clipped_total, max_grad_norm)
        else:
            coef = (max_grad_norm / (clipped_total + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_(live, coef)
    optimizer.step()
    return total, per


def grad_norm_metrics(
    names: Sequence[str], total: Tensor, per: Tensor, prefix: str = "grad_norm/", total_name: str = "total"
) -> dict[str, Tensor]:
    """`grad_norm/<total_name>` and `grad_norm/<name>` as views into the stacked tensor (no copies, no syncs)."""
    out = {f"{prefix}{total_name}": total}
    out.update({f"{prefix}{n}": per[..., i] for i, n in enumerate(names)})  # per: [P], or [K, P] for K seeds
    return out


class GradNormMeter:
    """Averages step_with_clip's norms over the gradient steps of one update, on the device."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.total: Tensor | None = None
        self.per: Tensor | None = None
        self.count: int | Tensor = 0

    def add(self, total: Tensor, per: Tensor, taken: Tensor | None = None) -> None:
        """`taken` [K] (K seeds): which seeds took this step; each seed averages over its own steps."""
        if taken is not None:
            w = taken.to(total.dtype)
            total, per = total * w, per * w.unsqueeze(-1)
        self.total = total if self.total is None else self.total + total
        self.per = per if self.per is None else self.per + per
        self.count = self.count + (1 if taken is None else taken.to(total.dtype))

    def metrics(self, prefix: str = "grad_norm/", total_name: str = "total") -> dict[str, Tensor]:
        if self.total is None or self.per is None:
            return {}
        count = self.count.clamp(min=1) if isinstance(self.count, Tensor) else self.count
        per_count = count.unsqueeze(-1) if isinstance(count, Tensor) else count
        return grad_norm_metrics(self.names, self.total / count, self.per / per_count, prefix, total_name)
