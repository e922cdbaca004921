"""The trust-region step NPG and TRPO share, around the one place they differ (how the actor moves):

    class NPG(TrustRegionAgent):
        def update(self, batch, progress):
            d = self.natural_direction(batch)        # surrogate, g, x = CG(F, g), full step, evaluator
            ...                                      # NPG: take d.step.fullstep whole (guarded); TRPO: line search
            return self.finish_update(batch, progress, d, kl, improvement, tried, accepted)

`TrustRegionAgent` (an rlpg.agent_base.AgentBase) holds the actor's and the critic's parameters and the critic's own
optimizer (`vf_optimizer`); `finish_update` fits the critic and gathers the metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from rlpg.agent_base import AgentBase
from rlpg.axes import SINGLE, Single
from rlpg.config import positive
from rlpg.errors import ConfigError
from rlpg.optim import GradNormMeter, NamedParams, grad_norm_metrics
from rlpg.policies import ActorCritic, detached
from rlpg.trust_region import NaturalStep
from rlpg.types import Batch


@dataclass
class Direction:
    """The state of an NPG/TRPO update before the actor moves. P = number of actor parameters."""

    params: list[Tensor]
    x0: Tensor
    """actor parameters before the step [P]"""
    old: Distribution
    """the detached policy before the step"""
    f0: Tensor
    """surrogate mean(ratio * A) at x0 (ratio = 1) over the global batch, detached"""
    g: Tensor
    """gradient of the surrogate [P]"""
    step: NaturalStep
    evaluate: Callable[[Tensor], tuple[Tensor, Tensor]]
    """x [P] -> set the actor to x, return (surrogate, mean KL(old || new))"""


class TrustRegionAgent(AgentBase):
    """NPG's and TRPO's scaffolding: the actor moves by a natural-gradient step (the subclass's `update` decides how
    far), the critic is fitted by its own first-order optimizer. The config has norm_adv, cg_damping, max_kl,
    cg_iters, cg_residual_tol, vf_epochs and vf_minibatches (agents/npg.py)."""

    def __init__(self, policy: ActorCritic, config: Any, axis: Single = SINGLE) -> None:
        super().__init__(policy, config, axis)
        self.actor_named = policy.actor_parameters()
        self.critic_named = policy.critic_parameters()
        self.vf_optimizer = self.add_optimizer("vf_optimizer", self.critic_named)

    def natural_direction(self, batch: Batch) -> Direction:
        """g = grad of the surrogate, x = CG(F + damping I, g), full step sqrt(2 max_kl / x.Fx) x (see NaturalStep)."""
        c, ax = self.config, self.axis
        params = [p for _, p in self.actor_named]
        adv = ax.normalize(batch.advantages) if c.norm_adv else batch.advantages  # [B]
        count = ax.global_count(ax.size(batch))  # under torchrun: this rank's share of each mean, summed below

        def surrogate(dist: Distribution) -> Tensor:  # mean(ratio * A), maximised
            return ax.mean((dist.log_prob(batch.actions) - batch.logp).exp() * adv, count)

        dist = self.policy.dist(batch.obs)
        old = detached(dist)
        f0 = surrogate(dist)
        g = ax.reduce_sum(ax.flat_grad(f0, params, retain_graph=True))  # [P]
        fvp = ax.fisher_vector_product(self.policy, batch.obs, params, c.cg_damping, dist=dist)
        step = ax.natural_step(fvp, g, c.max_kl, c.cg_iters, c.cg_residual_tol)
        evaluate = ax.evaluator(self.policy, params, batch.obs, old, surrogate)
        return Direction(params, ax.flat_params(params), old, ax.reduce_sum(f0.detach()), g, step, evaluate)

    def finish_update(self, batch: Batch, progress: float, d: Direction, kl: Tensor, improvement: Tensor,
                      tried: int | Tensor, accepted: bool | Tensor) -> dict[str, Tensor]:
        """Fit the critic (its own optimizer, lr annealed by `progress`) and return the update's metrics."""
        c, ax = self.config, self.axis
        lr = self.anneal(progress)
        v_loss, meter = fit_critic(self.policy, self.vf_optimizer, self.critic_named, batch.obs, batch.returns,
                                   c.vf_epochs, c.vf_minibatches, c.max_grad_norm, c.norm_type, c.clip_value,
                                   self.shuffle, ax)
        step_size = ax.vector_norm(ax.flat_params(d.params) - d.x0)
        metrics = {
            # the surrogate loss after the step: -surrogate(new) = -(f0 + improvement); -f0 when no step was kept.
            # Before the step it is -mean(A), ~0 with normalised advantages, so -f0 alone would say nothing.
            "train/policy_loss": -(d.f0 + improvement),
            "train/value_loss": v_loss,
            "train/entropy": ax.reduce_sum(ax.mean(d.old.entropy(), ax.global_count(ax.size(batch)))),
        }
        metrics.update(self.common_metrics(batch, lr))
        metrics.update(trust_region_metrics(self.actor_named, d.g, meter, c.norm_type, d.step, kl, improvement,
                                            tried, accepted, step_size, ax))
        return metrics


def fit_critic(policy: ActorCritic, optimizer: torch.optim.Optimizer, params: NamedParams, obs: Tensor,
               returns: Tensor, epochs: int, num_minibatches: int, max_grad_norm: float | None, norm_type: float,
               clip_value: float | None, shuffle: torch.Generator | None = None,
               axis: Single = SINGLE) -> tuple[Tensor, GradNormMeter]:
    """Regress V(obs) on `returns` with the critic's own optimizer: `epochs` passes of `num_minibatches`
    shuffled minibatches, each a 0.5 * MSE step through step_with_clip (so clipping and the gradient-norm
    measurement apply). obs: [B, ...]; returns: [B] (with K seeds: [K, B, ...], see rlpg.axes); shuffle: see
    rlpg.distributed.minibatches. Returns (mean value loss, the critic's norm meter)."""
    ax = axis
    meter = GradNormMeter([n for n, _ in params])
    x = policy.preprocess(obs)  # [B, D], once rather than per minibatch
    loss_sum: Tensor | None = None
    for _ in range(epochs):
        for idx, count in ax.minibatches(returns.shape[-1], num_minibatches, x.device, shuffle):
            loss = 0.5 * ax.mean((policy.critic(ax.take(x, idx)).squeeze(-1) - ax.take(returns, idx)).pow(2), count)
            meter.add(*ax.step(optimizer, loss, params, max_grad_norm, norm_type, clip_value))
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    assert loss_sum is not None
    return ax.reduce_sum(loss_sum) / (epochs * num_minibatches), meter


def trust_region_metrics(actor_named: NamedParams, g: Tensor, critic: GradNormMeter, norm_type: float,
                         step: NaturalStep, kl: Tensor, improvement: Tensor, tried: int | Tensor,
                         accepted: bool | Tensor, step_size: Tensor, axis: Single = SINGLE) -> dict[str, Tensor]:
    """The `train/*` trust-region diagnostics and `grad_norm/*` of an NPG or TRPO update.

    grad_norm/<actor param> and grad_norm/actor_total come from the surrogate's gradient g [P];
    grad_norm/<critic param> and grad_norm/critic_total are means over the critic's optimizer steps. The two
    are gradients of different losses at different moments, so there is no combined grad_norm/total.
    Host-known numbers become CPU scalars; everything else stays on the device (no sync).
    """
    params = [p for _, p in actor_named]
    actor_total, actor_per = axis.grad_norms(axis.split_flat(g, params), norm_type)
    metrics = {
        "train/kl": kl,
        "train/step_size": step_size,
        "train/cg_iterations": _metric(step.cg_iterations),
        "train/cg_residual": step.cg_residual.detach(),
        "train/line_search_steps": _metric(tried),
        "train/line_search_accepted": _metric(accepted),
        "train/surrogate_improvement": improvement,
        "train/step_skipped": _metric(step.skipped),
    }
    metrics.update(grad_norm_metrics([n for n, _ in actor_named], actor_total, actor_per, total_name="actor_total"))
    metrics.update(critic.metrics(total_name="critic_total"))
    return metrics


def _metric(x: int | bool | Tensor) -> Tensor:
    """A count or flag as a float32 metric: a host number (one run) or a [K] tensor (K seeds)."""
    return x.float() if isinstance(x, Tensor) else torch.tensor(float(x))


def check_trust_region(c: Any) -> None:
    """The config checks NPGConfig and TRPOConfig share (fields named as in agents/npg.py)."""
    positive(c, "max_kl", "cg_iters", "vf_epochs", "vf_minibatches", "cg_residual_tol")
    positive(c, "cg_damping", allow_zero=True)
    if getattr(c, "kl_guard", 1.0) < 1:
        raise ConfigError(f"--kl-guard must be >= 1 (a multiple of --max-kl), got {c.kl_guard}")


def check_vf_minibatches(vf_minibatches: int, num_envs: int, num_steps: int) -> None:
    batch = num_envs * num_steps
    if batch % vf_minibatches:
        raise ConfigError(f"--vf-minibatches {vf_minibatches} does not divide the batch size "
                          f"num_envs * num_steps = {batch}; pick a divisor of {batch}")
