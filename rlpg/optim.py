"""First-order optimisation: the optimizer factory and the one gradient-step helper every agent uses.

`step_with_clip` is the autograd loop written once: zero_grad -> backward -> measure -> clip -> step.
It measures every parameter's gradient norm before clipping, as one stacked device tensor, so the
trainer can log `grad_norm/<name>` with a single host transfer per log interval.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import optimizer as _optim_globals

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
    # .grad of a plain backward records no graph; only a create_graph one needs detaching (one op saved per tensor)
    per = torch.stack(torch._foreach_norm([g.detach() if g.requires_grad else g for g in grads], norm_type))
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


def surely_finite(*xs: Tensor | None) -> bool:
    """True only if every float tensor given (None and other dtypes are passed over) is free of NaN and infinity:
    their sum is read once, and a NaN or inf anywhere makes it non-finite. A few ops and one host read, where
    torch.isfinite is several per tensor; False may also mean a finite sum that overflowed, which the caller's exact
    test then decides (step_with_clip's loss and gradient norm, CheckFinite's observations and rewards)."""
    total: Tensor | None = None
    for x in xs:
        if x is not None and x.is_floating_point():
            part = x if x.dim() == 0 else x.sum()
            total = part if total is None else total + part
    return total is None or math.isfinite(total.item())


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
    zero_grad(optimizer)
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
    if check_finite and not surely_finite(total, loss_value):
        finite = torch.isfinite(total) & torch.isfinite(loss_value)
        if not bool(finite.all()):
            zero_grad(optimizer)
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
    optimizer_step(optimizer)
    return total, per


def zero_grad(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.zero_grad(set_to_none=True): torch's own sets each parameter's .grad to None inside a profiler
    range (~45 us on a PPO minibatch step against ~5 us for the loop alone), which this loop skips; an optimizer
    with a zero_grad of its own gets that one."""
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


_FAST_ADAM = hasattr(torch, "_fused_adam_")


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.step(), or for torch's own fused Adam its kernel called directly: the same `_foreach_add_` of the
    step counts and `_fused_adam_` call with the same arguments as Adam.step makes, so the same numbers, without
    the ~35-80 us of Python that Adam.step spends around its one kernel (hooks, grouping by device, argument
    checks): ~2% of a small-batch PPO update. Whatever the shortcut does not cover takes optimizer.step(): another
    optimizer, several parameter groups, a step hook, a patched step (an LR scheduler's), a parameter without a
    gradient or without state yet (the first step), AMSGrad, maximize, decoupled weight decay (AdamW), a tensor
    learning rate, complex parameters, sparse gradients, several devices or dtypes."""
    global _FAST_ADAM
    call = _fused_adam_args(optimizer) if _FAST_ADAM and type(optimizer) is torch.optim.Adam else None
    if call is None:
        optimizer.step()
        return
    params, grads, exp_avgs, exp_avg_sqs, steps, kwargs = call
    with torch.no_grad():
        torch._foreach_add_(steps, 1)
        try:
            torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, **kwargs)
        except (TypeError, RuntimeError):  # a torch whose kernel takes other arguments: Adam.step from now on
            torch._foreach_sub_(steps, 1)
            _FAST_ADAM = False
            optimizer.step()


def _fused_adam_args(optimizer: torch.optim.Optimizer) -> tuple[Any, ...] | None:
    """The lists and keywords of Adam.step's one fused kernel call, or None where optimizer_step's shortcut does not
    apply."""
    if ("step" in vars(optimizer) or optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
            or _optim_globals._global_optimizer_pre_hooks or _optim_globals._global_optimizer_post_hooks
            or len(optimizer.param_groups) != 1):
        return None
    group = optimizer.param_groups[0]
    if (not group.get("fused") or group["amsgrad"] or group["maximize"] or group["differentiable"]
            or group["capturable"] or group.get("decoupled_weight_decay") or isinstance(group["lr"], Tensor)):
        return None
    params = group["params"]
    states = param_states(optimizer, params)
    if states is None:
        return None
    grads = [p.grad for p in params]
    for g in grads:
        if g is None or g.layout is not torch.strided:
            return None
    beta1, beta2 = group["betas"]
    kwargs = dict(amsgrad=False, lr=group["lr"], beta1=float(beta1), beta2=float(beta2),
                  weight_decay=group["weight_decay"], eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)
    return (params, grads, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states],
            [st["step"] for st in states], kwargs)


_STATES: weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple[Any, ...]] = weakref.WeakKeyDictionary()


def param_states(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> list[dict[str, Any]] | None:
    """Each parameter's state dict when every parameter has one and all are of one device and one real dtype (one
    fused call takes them), else None. Kept per optimizer while its state, its parameter list and the parameters'
    device and dtype stay the same objects (load_state_dict replaces the state; Module.to moves parameters in place):
    looking a parameter up in the state hashes a tensor, a Python call each."""
    if not params:
        return None
    first = params[0]
    kind = (first.device, first.dtype)
    kept = _STATES.get(optimizer)
    if kept is not None and kept[0] is optimizer.state and kept[1] is params and kept[2] == kind:
        return kept[3]
    states = [optimizer.state.get(p) for p in params]
    if not all(states) or any(p.device != kind[0] or p.dtype != kind[1] or p.is_complex() for p in params):
        return None
    _STATES[optimizer] = (optimizer.state, params, kind, states)
    return states


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
