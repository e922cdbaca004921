"""What every agent shares, so that an algorithm is written as its loss and its update alone.

    class MyAgent(AgentBase):
        def __init__(self, policy, config, axis=SINGLE):
            super().__init__(policy, config, axis)
            self.params = self.trainable(policy.named_parameters())
            self.optimizer = self.add_optimizer("optimizer", self.params)
        def update(self, batch, progress):
            lr = self.anneal(progress)                              # sets every optimizer's learning rate
            meter = GradNormMeter([n for n, _ in self.params])
            for idx, count in self.minibatches(batch, self.config.num_minibatches):
                mb = self.axis.index(batch, idx)
                loss = ...                                          # the algorithm
                meter.add(*self.step(self.optimizer, loss, self.params))
            return {..., **self.common_metrics(batch, lr, meter)}

`AgentBase` holds the policy, the config and the batch axis (one run or K seeds, rlpg.axes), the minibatch shuffle
generator (rlpg.distributed), its optimizers by name (their state is the agent's state_dict, under those names), the
learning-rate schedule, GAE advantages (REINFORCE overrides them with reward-to-go), the clipped gradient step with
the config's clipping settings, and the metrics every update reports (explained variance, learning rate, gradient
norms). NPG and TRPO add the trust-region step (rlpg.trust_update.TrustRegionAgent).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from rlpg.advantage import rollout_gae
from rlpg.axes import SINGLE, Single
from rlpg.optim import GradNormMeter, NamedParams, make_optimizer, set_lr
from rlpg.types import Batch, Rollout


class AgentBase:
    """The scaffolding of an agent (see the module docstring); subclasses write `update` (and their loss)."""

    def __init__(self, policy: nn.Module, config: Any, axis: Single = SINGLE) -> None:
        self.policy, self.config, self.axis = policy, config, axis  # axis: one run or K seeds (rlpg.axes)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.shuffle: torch.Generator | None = None
        """draws the minibatches when set (identically seeded on every rank of a job, see rlpg.distributed)"""

    # ------------------------------------------------------------------------------------------ parameters
    @staticmethod
    def trainable(named: Iterable[tuple[str, nn.Parameter]]) -> NamedParams:
        """The trainable (name, parameter) pairs, each parameter once (a shared image encoder belongs to both the
        actor and the critic)."""
        seen: set[int] = set()
        return [(n, p) for n, p in named if p.requires_grad and not (id(p) in seen or seen.add(id(p)))]

    def add_optimizer(self, name: str, named: NamedParams, seed_steps: bool = False) -> torch.optim.Optimizer:
        """The config's optimizer over `named`, saved in the agent's state_dict under `name`. `seed_steps`: with K
        seeds, one that can step some seeds and not others (rlpg.optim.SeedAdam, SeedSGD, SeedRMSprop)."""
        c = self.config
        seeds = self.axis.k if seed_steps else None
        optimizer = make_optimizer(c.optimizer, (p for _, p in named), c.learning_rate, c.momentum,
                                   seeds=seeds)
        self.optimizers[name] = optimizer
        return optimizer

    def anneal(self, progress: float) -> float:
        """The learning rate at `progress` in [0, 1) (linearly to 0 with anneal_lr), set on every optimizer."""
        c = self.config
        lr = c.learning_rate * (1.0 - progress) if c.anneal_lr else c.learning_rate
        for optimizer in self.optimizers.values():
            set_lr(optimizer, lr)
        return lr

    # --------------------------------------------------------------------------------------------- batches
    def advantages(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        """GAE(gamma, gae_lambda) advantages and returns [T, N] (rlpg.advantage.rollout_gae)."""
        return rollout_gae(rollout, self.config.gamma, self.config.gae_lambda)

    def minibatches(self, batch: Batch, num_minibatches: int,
                    active: Tensor | None = None) -> Iterator[tuple[Tensor | slice, int | None]]:
        """One pass over the batch in `num_minibatches` shuffled minibatches (each seed's own permutation with K
        seeds; `active` [K]: the seeds still stepping, the others draw no permutation): (index, the global
        minibatch size under torchrun or None) each."""
        return self.axis.minibatches(self.axis.size(batch), num_minibatches, batch.obs.device, self.shuffle, active)

    def shuffled(self, batch: Batch, num_minibatches: int,
                 active: Tensor | None = None) -> tuple[Batch, list[tuple[Tensor | slice, int | None]]]:
        """`minibatches` as (the batch to take them from, [(index, size), ...]). For one run in one process that batch
        is reordered once by the pass's permutation and each minibatch is a slice of it: the same rows in the same
        order, as views, with one indexing per field and pass instead of one per field and minibatch."""
        parts = list(self.minibatches(batch, num_minibatches, active))
        if type(self.axis) is not Single or len(parts) < 2 or any(count is not None for _, count in parts):
            return batch, parts
        lengths = [len(idx) for idx, _ in parts]
        starts = [sum(lengths[:k]) for k in range(len(lengths))]
        order = batch.index(torch.cat([idx for idx, _ in parts]))
        return order, [(slice(a, a + n), None) for a, n in zip(starts, lengths, strict=True)]

    def step(self, optimizer: torch.optim.Optimizer, loss: Tensor, params: NamedParams) -> tuple[Tensor, Tensor]:
        """zero_grad -> backward -> clip (the config's max_grad_norm, norm_type, clip_value) -> step, per seed with
        K seeds; returns the gradient norms before clipping (rlpg.optim.step_with_clip)."""
        c = self.config
        return self.axis.step(optimizer, loss, params, c.max_grad_norm, c.norm_type, c.clip_value)

    def common_metrics(self, batch: Batch, lr: float, meter: GradNormMeter | None = None) -> dict[str, Tensor]:
        """`train/explained_variance`, `train/learning_rate` and the meter's `grad_norm/*`."""
        out = {"train/explained_variance": self.axis.explained_variance(batch.values, batch.returns),
               "train/learning_rate": torch.tensor(lr)}
        if meter is not None:
            out.update(meter.metrics())
        return out

    # --------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])
