"""Trust Region Policy Optimization (Schulman et al. 2015): NPG's direction, then a backtracking line search.

    g, x, fullstep = as in agents/npg.py (rlpg.trust_region.natural_gradient_direction)
    theta          = theta_old + backtrack_coef^k * fullstep, for the first k = 0, 1, ... with
                     mean KL(old || new) <= max_kl and surrogate(new) > surrogate(old)

When no candidate is accepted the old actor is kept (`train/line_search_accepted` = 0). The critic is
fitted afterwards by its own first-order optimizer on the GAE returns. Metrics as in agents/npg.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlpg.advantage import rollout_gae
from rlpg.axes import SINGLE, Single
from rlpg.config import AgentConfig, in_range, positive
from rlpg.optim import make_optimizer
from rlpg.policies import ActorCritic
from rlpg.trust_update import check_trust_region, check_vf_minibatches, finish_update, natural_direction
from rlpg.types import Batch, Rollout


@dataclass
class TRPOConfig(AgentConfig):
    """TRPO hyperparameters (defaults tuned on CartPole-v1 and Pendulum-v1, see rlpg presets)."""

    gae_lambda: float = 0.97
    """GAE lambda (1 = Monte Carlo returns, 0 = one-step TD)"""
    learning_rate: float = 1e-3
    """learning rate of the critic's optimizer (the actor's step is set by max_kl)"""
    max_kl: float = 0.01
    """trust-region radius delta: the accepted step has mean KL(old || new) <= max_kl"""
    cg_iters: int = 10
    """conjugate-gradient iterations (Fisher-vector products) per update"""
    cg_damping: float = 0.1
    """damping added to the Fisher matrix: (F + damping I) x = g"""
    cg_residual_tol: float = 1e-10
    """stop CG once the squared residual is below this"""
    max_backtracks: int = 10
    """line-search candidates: fullstep * backtrack_coef^k for k < max_backtracks"""
    backtrack_coef: float = 0.8
    """shrink factor of the line search"""
    accept_ratio: float = 0.0
    """also require improvement > accept_ratio * expected (first-order) improvement; 0 disables"""
    vf_epochs: int = 5
    """passes of the critic's optimizer over the batch per update"""
    vf_minibatches: int = 8
    """critic minibatches per pass; must divide the batch size num_envs * num_steps"""
    norm_adv: bool = True
    """normalise the advantages over the batch"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_trust_region(self)
        positive(self, "max_backtracks")
        in_range(self, "backtrack_coef", 1e-6, 1.0 - 1e-6)
        in_range(self, "accept_ratio", 0.0, 1.0)

    def validate_batch(self, num_envs: int, num_steps: int) -> None:
        check_vf_minibatches(self.vf_minibatches, num_envs, num_steps)


class TRPO:
    """TRPO over an ActorCritic: natural-gradient direction + line search; critic fitted by its own optimizer."""

    def __init__(self, policy: ActorCritic, config: TRPOConfig, axis: Single = SINGLE) -> None:
        self.policy, self.config, self.axis = policy, config, axis  # axis: one run or K seeds (rlpg.axes)
        self.actor_named = policy.actor_parameters()
        self.critic_named = policy.critic_parameters()
        self.vf_optimizer = make_optimizer(config.optimizer, (p for _, p in self.critic_named), config.learning_rate,
                                           config.momentum)
        self.shuffle: torch.Generator | None = None
        """draws the critic's minibatches when set (identically seeded on every rank of a job, rlpg.distributed)"""

    def advantages(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        return rollout_gae(rollout, self.config.gamma, self.config.gae_lambda)

    def update(self, batch: Batch, progress: float) -> dict[str, Tensor]:
        c = self.config
        d = natural_direction(self, batch)
        ls = self.axis.line_search(d.evaluate, d.x0, d.step, c.max_kl, c.max_backtracks, c.backtrack_coef,
                                   c.accept_ratio, d.f0)
        return finish_update(self, batch, progress, d, ls.kl, ls.improvement, ls.steps, ls.accepted)

    def state_dict(self) -> dict[str, Any]:
        return {"vf_optimizer": self.vf_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vf_optimizer.load_state_dict(state["vf_optimizer"])
