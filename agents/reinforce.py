"""REINFORCE (Williams 1992) with reward-to-go and an optional learned value baseline.

    G_t  = r_t + gamma * G_{t+1}, restarted at every episode boundary (rlpg.advantage.discounted_returns)
    A_t  = G_t - V(s_t) with a baseline, else G_t; normalised over the batch
    loss = -mean(logp(a_t | s_t) * A_t) - ent_coef * entropy + vf_coef * 0.5 * mean((V(s_t) - G_t)^2)

A termination ends the return. A time-limit truncation, and the end of the rollout, bootstrap the tail
from V(s_{t+1}) when a baseline exists; without one the unobserved tail is taken as 0 (see
discounted_returns), so long rollouts (num_steps at least an episode) suit the baseline-free variant.
The returns are Monte Carlo (GAE's lambda = 1), so `gae_lambda` is fixed at 1 and other values are refused.

Reusing the batch (`update_epochs > 1`, or `num_minibatches > 1`, whose later minibatches meet an already
updated policy) makes the samples off-policy. Rather than refuse it, the log-prob term is importance-weighted:

    loss_pg = -mean(ratio_t * A_t),  ratio_t = exp(logp_new(a_t | s_t) - logp_old(a_t | s_t))

whose gradient mean(ratio * grad logp * A) is the per-sample off-policy policy gradient, and equals the textbook
-mean(grad logp * A) while ratio = 1 (the first step on a fresh batch, which is all of the default single-step
update). It is PPO's surrogate without the clip: nothing bounds the ratio, so many epochs can take large steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlpg.advantage import discounted_returns
from rlpg.agent_base import AgentBase
from rlpg.axes import SINGLE, Single
from rlpg.config import AgentConfig, positive
from rlpg.errors import ConfigError
from rlpg.optim import GradNormMeter
from rlpg.policies import ActorCritic
from rlpg.types import Batch, Rollout


@dataclass
class REINFORCEConfig(AgentConfig):
    """REINFORCE hyperparameters (defaults tuned on CartPole-v1, see rlpg presets)."""

    gae_lambda: float = 1.0
    """fixed at 1: REINFORCE's returns are Monte Carlo reward-to-go, not GAE (other values are an error)"""
    learning_rate: float = 1e-3
    """learning rate of the optimizer"""
    baseline: bool = True
    """learn a value baseline V(s): advantage G - V(s), critic regressed on G, tails bootstrapped"""
    vf_coef: float = 0.5
    """value loss coefficient (with a baseline)"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    norm_adv: bool = True
    """normalise the advantages (G or G - V) over the batch"""
    update_epochs: int = 1
    """gradient passes over the batch per update (1 = textbook REINFORCE; reuse is importance-weighted)"""
    num_minibatches: int = 1
    """minibatches per pass; must divide the batch size num_envs * num_steps"""

    def __post_init__(self) -> None:
        if self.gae_lambda != 1.0:
            raise ConfigError(f"--gae-lambda {self.gae_lambda} does not apply to reinforce: its returns are Monte "
                              "Carlo reward-to-go (lambda = 1); drop the flag, or use ppo, npg or trpo for GAE")
        super().__post_init__()
        positive(self, "update_epochs", "num_minibatches")
        positive(self, "vf_coef", "ent_coef", allow_zero=True)

    def validate_batch(self, num_envs: int, num_steps: int) -> None:
        batch = num_envs * num_steps
        if batch % self.num_minibatches:
            raise ConfigError(f"--num-minibatches {self.num_minibatches} does not divide the batch size "
                              f"num_envs * num_steps = {batch}; pick a divisor of {batch}")


class REINFORCE(AgentBase):
    """Monte Carlo policy gradient over an ActorCritic; one optimizer (the critic only with a baseline)."""

    def __init__(self, policy: ActorCritic, config: REINFORCEConfig, axis: Single = SINGLE) -> None:
        super().__init__(policy, config, axis)
        named = policy.actor_parameters() + (policy.critic_parameters() if config.baseline else [])
        self.params = self.trainable(named)
        self.optimizer = self.add_optimizer("optimizer", self.params)

    def advantages(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        """(advantages, returns) [T, N]: A = G - V(s) with a baseline, else A = G; returns = G."""
        c = self.config
        returns = discounted_returns(rollout.rewards, rollout.terminated, rollout.truncated,
                                     rollout.next_values if c.baseline else None, c.gamma)
        return (returns - rollout.values if c.baseline else returns), returns

    def update(self, batch: Batch, progress: float) -> dict[str, Tensor]:
        c = self.config
        lr = self.anneal(progress)
        ax = self.axis  # one run, or K seeds in one batch (rlpg.axes)
        adv = ax.normalize(batch.advantages) if c.norm_adv else batch.advantages  # [B], over the whole batch
        size = ax.size(batch)
        meter = GradNormMeter([n for n, _ in self.params])
        sums: dict[str, Tensor] = {}
        for _ in range(c.update_epochs):
            # count: the global minibatch size under torchrun, whose losses are this rank's share of the mean
            parts = self.minibatches(batch, c.num_minibatches) if c.num_minibatches > 1 else [ax.whole(size)]
            for idx, count in parts:
                obs = ax.take(batch.obs, idx)
                dist = self.policy.dist(obs)
                ratio = (dist.log_prob(ax.take(batch.actions, idx)) - ax.take(batch.logp, idx)).exp()  # 1 when fresh
                # importance-weighted when the batch is reused (module docstring)
                pg_loss = -ax.mean(ratio * ax.take(adv, idx), count)
                entropy = ax.mean(dist.entropy(), count)
                loss = pg_loss - c.ent_coef * entropy
                v_loss = torch.zeros_like(pg_loss)
                if c.baseline:
                    v_loss = 0.5 * ax.mean((self.policy.value(obs) - ax.take(batch.returns, idx)).pow(2), count)
                    loss = loss + c.vf_coef * v_loss
                meter.add(*self.step(self.optimizer, loss, self.params))
                for key, v in (("policy_loss", pg_loss), ("value_loss", v_loss), ("entropy", entropy)):
                    sums[key] = sums.get(key, 0) + v.detach()
        steps = c.update_epochs * c.num_minibatches
        metrics = {f"train/{k}": ax.reduce_sum(v) / steps for k, v in sums.items()}
        metrics.update(self.common_metrics(batch, lr, meter))
        return metrics
