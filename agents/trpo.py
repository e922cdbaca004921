"""Trust Region Policy Optimization (Schulman et al. 2015): NPG's direction, then a backtracking line search.

    g, x, fullstep = as in agents/npg.py (rlpg.trust_region.natural_gradient_direction)
    theta          = theta_old + backtrack_coef^k * fullstep, for the first k = 0, 1, ... with
                     mean KL(old || new) <= max_kl and surrogate(new) > surrogate(old)

When no candidate is accepted the old actor is kept (`train/line_search_accepted` = 0). The critic is
fitted afterwards by its own first-order optimizer on the GAE returns. Metrics as in agents/npg.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from rlpg.config import AgentConfig, in_range, positive
from rlpg.trust_update import TrustRegionAgent, check_trust_region, check_vf_minibatches
from rlpg.types import Batch


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


class TRPO(TrustRegionAgent):
    """TRPO over an ActorCritic: natural-gradient direction + line search; critic fitted by its own optimizer."""

    def update(self, batch: Batch, progress: float) -> dict[str, Tensor]:
        c = self.config
        d = self.natural_direction(batch)
        ls = self.axis.line_search(d.evaluate, d.x0, d.step, c.max_kl, c.max_backtracks, c.backtrack_coef,
                                   c.accept_ratio, d.f0)
        return self.finish_update(batch, progress, d, ls.kl, ls.improvement, ls.steps, ls.accepted)
