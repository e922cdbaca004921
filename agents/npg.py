"""Natural Policy Gradient (Kakade 2001) with the KL-radius step of TRPO's appendix C ("truncated NPG").

    g    = grad_theta mean(ratio * A),  ratio = exp(logp_theta - logp_old)   (= 1 at theta_old)
    x    = CG(F + damping I, g)         F v by double backprop of the mean KL, see rlpg.trust_region
    step = sqrt(2 max_kl / x.F x) * x   so that 0.5 step.F step = max_kl

The critic is fitted afterwards by its own first-order optimizer on the GAE returns. Unlike TRPO there
is no line search: the step is taken whole, unless x.F x is not positive and finite (skipped) or the
KL measured after the step is not finite or above `kl_guard * max_kl` (undone). Both are reported:
`train/step_skipped`, `train/line_search_accepted` (0 when undone; `train/line_search_steps` is 1 when
the step was evaluated, as if a line search of one candidate); `train/step_size` is the L2 norm of the
parameter change actually made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlpg.config import AgentConfig
from rlpg.trust_update import TrustRegionAgent, check_trust_region, check_vf_minibatches
from rlpg.types import Batch


@dataclass
class NPGConfig(AgentConfig):
    """NPG hyperparameters (defaults tuned on CartPole-v1 and Pendulum-v1, see rlpg presets)."""

    gae_lambda: float = 0.97
    """GAE lambda (1 = Monte Carlo returns, 0 = one-step TD)"""
    learning_rate: float = 1e-3
    """learning rate of the critic's optimizer (the actor's step is set by max_kl)"""
    max_kl: float = 0.01
    """KL radius delta of the natural-gradient step: 0.5 step.F step = max_kl"""
    cg_iters: int = 10
    """conjugate-gradient iterations (Fisher-vector products) per update"""
    cg_damping: float = 0.1
    """damping added to the Fisher matrix: (F + damping I) x = g"""
    cg_residual_tol: float = 1e-10
    """stop CG once the squared residual is below this"""
    kl_guard: float = 2.0
    """undo the step when the KL measured after it exceeds kl_guard * max_kl (the quadratic model failed)"""
    vf_epochs: int = 5
    """passes of the critic's optimizer over the batch per update"""
    vf_minibatches: int = 8
    """critic minibatches per pass; must divide the batch size num_envs * num_steps"""
    norm_adv: bool = True
    """normalise the advantages over the batch"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_trust_region(self)

    def validate_batch(self, num_envs: int, num_steps: int) -> None:
        check_vf_minibatches(self.vf_minibatches, num_envs, num_steps)


class NPG(TrustRegionAgent):
    """NPG over an ActorCritic: natural-gradient actor step, critic fitted by its own optimizer."""

    def update(self, batch: Batch, progress: float) -> dict[str, Tensor]:
        c = self.config
        d = self.natural_direction(batch)
        took = ~torch.as_tensor(d.step.skipped, device=d.x0.device)  # a skipped step is zero
        f, kl = d.evaluate(d.x0 + d.step.fullstep)
        improvement = f - d.f0
        kept = took & torch.isfinite(f) & torch.isfinite(kl) & (kl <= c.kl_guard * c.max_kl)
        # where the quadratic model broke down (the KL far past max_kl, or not finite), undo the step
        self.axis.set_flat_params(d.params, torch.where(kept.unsqueeze(-1), d.x0 + d.step.fullstep, d.x0))
        kl, improvement = torch.where(kept, kl, 0.0), torch.where(kept, improvement, 0.0)
        return self.finish_update(batch, progress, d, kl, improvement, took, kept)
