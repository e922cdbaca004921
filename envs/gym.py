"""Adapter from a Gymnasium vector env to rlpg's tensor VecEnv: the one place numpy meets torch.

It forces Gymnasium's same-step autoreset (`AutoresetMode.SAME_STEP`), so the observation returned on
a done row is the first of the next episode and `info["final_obs"]` holds the last one, which the
rollout needs to bootstrap a truncated episode from V(final_obs). Per-sub-env wrappers (envs/ids.py: Atari
preprocessing, time limits, flattening) are applied inside the vector env; where they record the game's own episodes
(Atari's whole games over the learner's per-life episodes) the adapter reports those (`episode_stats`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlpg.encoders import image_shape


class GymVecEnv:
    """`gymnasium.make_vec(env_id, num_envs, "sync" | "async", wrappers=...)` with tensors in and out on `device`.

    wrappers: applied to each sub-env in order; max_episode_steps: the episode limit they impose (None: the registered
    one); episode_stats: the sub-envs carry gymnasium's RecordEpisodeStatistics below wrappers that cut episodes, and
    `step` reports its statistics as `info["episode_done"]` [N] bool, `info["episode_return"]` [N] float32 and
    `info["episode_length"]` [N] int64 (valid where episode_done), which rlpg's RecordEpisodeStatistics passes on.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        device: torch.device | str = "cpu",
        async_envs: bool = False,
        env_kwargs: dict[str, Any] | None = None,
        wrappers: Sequence[Callable[[gym.Env], gym.Env]] = (),
        max_episode_steps: int | None = None,
        episode_stats: bool = False,
    ) -> None:
        self.env = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="async" if async_envs else "sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
            wrappers=list(wrappers) or None,
            **(env_kwargs or {}),
        )
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self.spec_id = env_id
        self.max_episode_steps: int | None = max_episode_steps or gym.spec(env_id).max_episode_steps
        """the time limit (None: episodes may never end)"""
        self.episode_stats = episode_stats
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
        final = np.array(obs, copy=True)  # the obs dtype: pixels stay uint8 (see _obs)
        mask = info.get("_final_obs")
        if mask is not None:
            for i in np.flatnonzero(mask):
                final[i] = info["final_obs"][i]
        to = self.device
        out = {"final_obs": self._obs(final)}
        if self.episode_stats:
            out.update(self._episodes(info))
        return (
            self._obs(obs),
            torch.as_tensor(reward, dtype=torch.float32).to(to),
            torch.as_tensor(terminated, dtype=torch.bool).to(to),
            torch.as_tensor(truncated, dtype=torch.bool).to(to),
            out,
        )

    def _episodes(self, info: dict[str, Any]) -> dict[str, Tensor]:
        """The sub-envs' own finished episodes this step. With SAME_STEP autoreset the last step's info of an episode
        is in info["final_info"]; gymnasium's RecordEpisodeStatistics put "episode" {"r", "l"} there, with the mask
        "_episode" (False on a done row that was only a lost life)."""
        n = self.num_envs
        final = info.get("final_info", {})
        stats = final.get("episode", {})
        done = np.asarray(final.get("_episode", np.zeros(n, bool)), dtype=bool)
        ret = np.where(done, np.asarray(stats.get("r", np.zeros(n)), dtype=np.float64), 0.0)
        length = np.where(done, np.asarray(stats.get("l", np.zeros(n)), dtype=np.int64), 0)
        to = self.device
        return {
            "episode_done": torch.as_tensor(done).to(to),
            "episode_return": torch.as_tensor(ret, dtype=torch.float32).to(to),
            "episode_length": torch.as_tensor(length, dtype=torch.int64).to(to),
        }

    def close(self) -> None:
        self.env.close()
