"""Adapter from a Gymnasium vector env to rlpg's tensor VecEnv: the one place numpy meets torch.

It forces Gymnasium's same-step autoreset (`AutoresetMode.SAME_STEP`), so the observation returned on
a done row is the first of the next episode and `info["final_obs"]` holds the last one, which the
rollout needs to bootstrap a truncated episode from V(final_obs).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlpg.encoders import image_shape


class GymVecEnv:
    """`gymnasium.make_vec(env_id, num_envs, "sync" | "async")` with tensors in and out on `device`."""

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        device: torch.device | str = "cpu",
        async_envs: bool = False,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.env = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="async" if async_envs else "sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
            **(env_kwargs or {}),
        )
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self.spec_id = env_id
        spec = gym.spec(env_id)
        self.max_episode_steps: int | None = spec.max_episode_steps
        """the registered time limit (None: episodes may never end)"""
        space = self.single_action_space
        self._low = self._high = None
        self._action_start: np.ndarray | None = None
        if isinstance(space, gym.spaces.Box):
            # the Gaussian policy samples on R^A; clip to the bounds only here, at the env boundary, so the
            # stored action (and its log-prob) stays the one the policy actually sampled
            self._low, self._high = space.low, space.high
        elif isinstance(space, gym.spaces.Discrete | gym.spaces.MultiDiscrete) and np.any(space.start != 0):
            # the policy's categorical heads index actions from 0; the env's first action is `start`
            self._action_start = np.asarray(space.start)

    def _obs(self, obs: np.ndarray) -> Tensor:
        # images stay uint8 / bool (a quarter of the memory; the policy's encoder scales them), the rest float32
        dtype = None if image_shape(self.single_observation_space) else torch.float32
        return torch.as_tensor(np.asarray(obs), dtype=dtype).to(self.device, non_blocking=True)

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]:
        obs, _ = self.env.reset(seed=seed)
        if seed is not None:
            self.env.action_space.seed(seed)
        return self._obs(obs), {}

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        a = actions.detach().cpu().numpy()
        if self._low is not None:
            a = np.clip(a, self._low, self._high)
        elif self._action_start is not None:
            a = a + self._action_start
        obs, reward, terminated, truncated, info = self.env.step(a)
        final = np.array(obs, dtype=np.float32, copy=True)
        mask = info.get("_final_obs")
        if mask is not None:
            for i in np.flatnonzero(mask):
                final[i] = info["final_obs"][i]
        to = self.device
        return (
            self._obs(obs),
            torch.as_tensor(reward, dtype=torch.float32).to(to),
            torch.as_tensor(terminated, dtype=torch.bool).to(to),
            torch.as_tensor(truncated, dtype=torch.bool).to(to),
            {"final_obs": self._obs(final)},
        )

    def close(self) -> None:
        self.env.close()
