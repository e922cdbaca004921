"""Shared data types: the Rollout storage and the VecEnv / Agent protocols.

Shapes (time-major): T = num_steps, N = num_envs, B = T * N, D = obs dim, A = action dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import torch
from torch import Tensor


@runtime_checkable
class VecEnv(Protocol):
    """A batch of N environments whose inputs and outputs are tensors on `device`.

    `step` returns obs [N, D] float32, reward [N] float32, terminated [N] bool, truncated [N] bool and an
    info dict. A finished sub-environment is reset in the same step (Gymnasium's SAME_STEP autoreset):
    the returned obs is the first of the new episode. `info["final_obs"]` [N, D] is required on every step:
    the last observation of the old episode on done rows and the returned obs elsewhere (the Collector
    raises without it, since a truncated episode must bootstrap from its own last observation). Episode
    statistics (see envs.wrappers.RecordEpisodeStatistics) appear as `info["episode_return"]`,
    `info["episode_length"]` [N], valid where `info["episode_done"]` [N] (terminated | truncated when absent; an
    Atari game, not the learner's per-life episode).
    """

    num_envs: int
    device: torch.device
    single_observation_space: gym.Space
    single_action_space: gym.Space

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]: ...

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]: ...

    def close(self) -> None: ...


@dataclass
class Rollout:
    """One rollout of T steps from N environments, all tensors on the policy's device.

    obs: [T, N, D]; actions: [T, N, *action_shape]; logp, values, next_values, rewards: [T, N] float;
    terminated, truncated: [T, N] bool. `next_values` is V(s_{t+1}), with V(final_obs) on rows where the
    episode ended, so a time-limit truncation can bootstrap. Episode statistics of the episodes that
    finished during the rollout are kept as device scalars (sums and a count) so reading them is one
    transfer, not one per step.
    """

    obs: Tensor
    actions: Tensor
    logp: Tensor
    values: Tensor
    next_values: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    episode_return_sum: Tensor
    episode_length_sum: Tensor
    episode_count: Tensor

    @property
    def num_steps(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_envs(self) -> int:
        return self.rewards.shape[1]

    @property
    def dones(self) -> Tensor:
        return self.terminated | self.truncated


@dataclass
class Batch:
    """A rollout flattened to B = T * N samples for an agent update; the `b_` prefix marks batch views.

    obs: [B, D]; actions: [B, *action_shape]; logp, values, advantages, returns: [B].
    """

    obs: Tensor
    actions: Tensor
    logp: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def index(self, idx: Tensor) -> Batch:
        """The minibatch at indices `idx`."""
        return Batch(
            self.obs[idx], self.actions[idx], self.logp[idx], self.values[idx], self.advantages[idx], self.returns[idx]
        )


class Agent(Protocol):
    """What the trainer needs from an algorithm (agents/*.py). Agents know a loss; nothing else does."""

    policy: torch.nn.Module

    def advantages(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        """Advantages and returns [T, N] for this rollout (GAE or reward-to-go, see rlpg.advantage)."""
        ...

    def update(self, batch: Batch, progress: float) -> dict[str, Tensor]:
        """One update on `batch`; `progress` in [0, 1) drives annealing. Returns `train/*` and
        `grad_norm/*` metrics as device tensors."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
