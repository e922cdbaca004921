"""Proximal Policy Optimization with a clipped surrogate (Schulman et al. 2017).

Details follow "The 37 Implementation Details of PPO" (Huang et al. 2022): per-minibatch advantage
normalisation, global gradient-norm clipping, linear learning-rate annealing, an optional clipped value loss
(off by default, see PPOConfig.clip_vloss) and an optional early stop on the approximate KL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlpg.agent_base import AgentBase
from rlpg.axes import SINGLE, Single
from rlpg.config import AgentConfig, positive
from rlpg.distributed import all_reduce_sum
from rlpg.errors import ConfigError
from rlpg.optim import GradNormMeter
from rlpg.policies import ActorCritic
from rlpg.types import Batch

STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")


@dataclass
class PPOConfig(AgentConfig):
    """PPO hyperparameters (defaults: CleanRL's ppo.py / the PPO paper's Atari-independent settings)."""

    learning_rate: float = 3e-4
    """learning rate of the optimizer"""
    update_epochs: int = 10
    """passes over the batch per update (K epochs)"""
    num_minibatches: int = 32
    """minibatches per epoch; must divide the batch size num_envs * num_steps"""
    clip_coef: float = 0.2
    """surrogate clipping coefficient epsilon"""
    anneal_clip: bool = False
    """decay clip_coef linearly to 0 over training (rl-zoo's lin_0.2)"""
    clip_vloss: bool = False
    """clip the value loss around the old values with clip_coef (the PPO paper's implementation). Off by default:
    the clip is in raw return units, so on returns of hundreds it freezes the critic (Engstrom et al. 2020 and
    Andrychowicz et al. 2021 found it does not help or hurts)"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    norm_adv: bool = True
    """normalise advantages within each minibatch"""
    target_kl: float | None = None
    """stop the epochs early once the approximate KL exceeds this (none to disable)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "update_epochs", "num_minibatches", "clip_coef", "target_kl")
        positive(self, "vf_coef", "ent_coef", allow_zero=True)

    def validate_batch(self, num_envs: int, num_steps: int) -> None:
        batch = num_envs * num_steps
        if batch % self.num_minibatches:
            raise ConfigError(
                f"--num-minibatches {self.num_minibatches} does not divide the batch size "
                f"num_envs * num_steps = {batch}; pick a divisor of {batch}"
            )


class PPO(AgentBase):
    """PPO over an ActorCritic; one optimizer for actor and critic (they share the loss)."""

    def __init__(self, policy: ActorCritic, config: PPOConfig, axis: Single = SINGLE) -> None:
        super().__init__(policy, config, axis)
        # K seeds with target_kl: each seed stops its epochs at its own time, so the optimizer must be able to step
        # some seeds and not others (rlpg.optim.SeedAdam)
        self.seed_kl = axis.k is not None and config.target_kl is not None
        self.params = self.trainable(policy.named_parameters())
        self.optimizer = self.add_optimizer("optimizer", self.params, seed_steps=self.seed_kl)

    def update(self, batch: Batch, progress: float) -> dict[str, Tensor]:
        c = self.config
        lr = self.anneal(progress)
        clip = c.clip_coef * (1.0 - progress) if c.anneal_clip else c.clip_coef
        ax = self.axis  # one run, or K seeds in one batch (rlpg.axes)
        meter = GradNormMeter([n for n, _ in self.params])
        sums: Tensor | None = None
        steps: int | Tensor = 0
        epochs: int | Tensor = 0
        active = torch.ones(ax.k, dtype=torch.bool) if self.seed_kl else None  # [K]: the seeds whose epochs go on
        for _ in range(c.update_epochs):
            if active is not None:
                if not bool(active.any()):
                    break
                self.optimizer.active = active  # type: ignore[attr-defined]
            epochs = epochs + 1 if active is None else epochs + active.float()
            # count: the global minibatch size under torchrun, whose losses are this rank's share of the mean
            shuffled, parts = self.shuffled(batch, c.num_minibatches, active)
            # per minibatch; under torchrun over the global minibatch, every minibatch's moments in one all-reduce
            advs = ax.normalize_each(shuffled.advantages, [idx for idx, _ in parts]) if c.norm_adv else None
            for k, (idx, count) in enumerate(parts):
                mb = ax.index(shuffled, idx)
                dist = self.policy.dist(mb.obs)
                newlogp = dist.log_prob(mb.actions)  # [M]
                logratio = newlogp - mb.logp
                ratio = logratio.exp()
                adv = advs[k] if advs is not None else mb.advantages

                neg_adv = -adv
                pg_loss = ax.mean(torch.max(neg_adv * ratio, neg_adv * ratio.clamp(1 - clip, 1 + clip)), count)
                new_values = self.policy.value(mb.obs)
                if c.clip_vloss:
                    clipped = mb.values + (new_values - mb.values).clamp(-clip, clip)
                    v_loss = 0.5 * ax.mean(torch.max((new_values - mb.returns) ** 2, (clipped - mb.returns) ** 2),
                                           count)
                else:
                    v_loss = 0.5 * ax.mean((new_values - mb.returns) ** 2, count)
                loss = pg_loss + c.vf_coef * v_loss
                if c.ent_coef:
                    entropy = ax.mean(dist.entropy(), count)
                    loss = loss - c.ent_coef * entropy
                else:  # only reported: no graph needed
                    with torch.no_grad():
                        entropy = ax.mean(dist.entropy(), count)

                if active is not None:  # a stopped seed's loss is 0: no gradient, and SeedAdam leaves it be
                    loss = torch.where(active.to(loss.device), loss, 0.0)
                meter.add(*self.step(self.optimizer, loss, self.params), taken=active)
                with torch.no_grad():
                    ratio_1 = ratio - 1
                    approx_kl = ax.mean(ratio_1 - logratio, count)  # k3 estimator (Schulman, "Approximating KL")
                    clip_frac = ax.mean((ratio_1.abs() > clip).float(), count)
                    stats = torch.stack([pg_loss, v_loss, entropy, approx_kl, clip_frac])
                if active is None:
                    sums = stats if sums is None else sums + stats
                    steps += 1
                else:  # each seed's means over the steps it took
                    taken = active.to(stats.device)
                    stats = torch.where(taken, stats, 0.0)
                    sums = stats if sums is None else sums + stats
                    steps = steps + taken.float()
            # one sync per epoch, only when enabled; the KL of the global minibatch under torchrun
            if c.target_kl is not None and active is None and all_reduce_sum(approx_kl) > c.target_kl:
                break
            if active is not None:
                active = active & ~(approx_kl.cpu() > c.target_kl)
        if active is not None:
            self.optimizer.active = None  # type: ignore[attr-defined]
        assert sums is not None
        means = ax.reduce_sum(sums) / steps
        metrics = {f"train/{k}": means[i] for i, k in enumerate(STATS)}
        metrics["train/clip_coef"] = torch.tensor(clip)
        metrics["train/epochs"] = epochs if isinstance(epochs, Tensor) else torch.tensor(float(epochs))
        metrics.update(self.common_metrics(batch, lr, meter))
        return metrics
