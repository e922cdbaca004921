"""The torch-native classic-control envs by Gymnasium id, and their registration with Gymnasium.

`TORCH_ENVS` maps a Gymnasium id to its torch class (rlpg.types.VecEnv: tensors in, tensors out).
`register_gymnasium()` registers each as "rlpg/<id>" with a `vector_entry_point`, so code outside rlpg can use them
as an ordinary `gymnasium.vector.VectorEnv` with numpy actions and numpy outputs:

    register_gymnasium()
    envs = gymnasium.make_vec("rlpg/CartPole-v1", num_envs=8, vectorization_mode="vector_entry_point", device="cuda")
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from rlpg.envs.acrobot import Acrobot
from rlpg.envs.cartpole import CartPole
from rlpg.envs.mountain_car import MountainCar, MountainCarContinuous
from rlpg.envs.pendulum import Pendulum
from rlpg.envs.torch_base import TorchVecEnv

TORCH_ENVS: dict[str, type[TorchVecEnv]] = {
    cls.spec_id: cls for cls in (CartPole, Acrobot, Pendulum, MountainCar, MountainCarContinuous)
}
NAMESPACE = "rlpg"


class NumpyVectorEnv(gym.vector.VectorEnv):
    """A torch-native env seen as a Gymnasium `VectorEnv`: numpy actions in, numpy arrays out.

    Autoreset is SAME_STEP, and the infos of a step where some sub-envs finished hold Gymnasium's keys:
    "final_obs" (object array [N], the last obs on done rows, None elsewhere), "final_info" ({}), and their
    masks "_final_obs", "_final_info" [N] bool, as `SyncVectorEnv(..., autoreset_mode=SAME_STEP)` returns them.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        max_episode_steps: int | None = None,
    ) -> None:
        if env_id not in TORCH_ENVS:
            raise KeyError(f"no torch-native env {env_id!r}; known: {sorted(TORCH_ENVS)}")
        self.env = TORCH_ENVS[env_id](num_envs, device=device, seed=seed, max_episode_steps=max_episode_steps)
        self.num_envs = num_envs
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self.observation_space = self.env.observation_space
        self.action_space = self.env.action_space

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all sub-envs; `seed` reseeds the torch env's generator. Returns obs [N, D] float32, {}."""
        if options:
            raise ValueError(f"{type(self).__name__}.reset takes no options, got {options}")
        super().reset(seed=seed)
        obs, _ = self.env.reset(seed=seed)
        return obs.cpu().numpy(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step with numpy actions ([N] ints or [N, A] floats); returns numpy obs, reward, terminated, truncated."""
        space = self.single_action_space
        dtype = torch.int64 if isinstance(space, gym.spaces.Discrete) else torch.float32
        obs, reward, terminated, truncated, info = self.env.step(
            torch.as_tensor(np.asarray(actions), dtype=dtype, device=self.env.device)
        )
        obs_np, final_np = obs.cpu().numpy(), info["final_obs"].cpu().numpy()
        terminated_np, truncated_np = terminated.cpu().numpy(), truncated.cpu().numpy()
        done = terminated_np | truncated_np
        infos: dict[str, Any] = {}
        if done.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = final_np[i]
            infos = {"final_obs": final_obs, "_final_obs": done, "final_info": {}, "_final_info": done.copy()}
        return obs_np, reward.cpu().numpy(), terminated_np, truncated_np, infos

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env.spec_id}, num_envs={self.num_envs}, device={self.env.device})"


def register_gymnasium() -> list[str]:
    """Register every torch-native env with Gymnasium as "rlpg/<id>"; returns the registered ids.

    Idempotent: ids already registered are left alone, so a second call registers nothing and warns nothing.
    Extra `make_vec` keyword arguments (`device`, `seed`, `max_episode_steps`) reach `NumpyVectorEnv`.
    """
    ids = []
    for env_id, cls in TORCH_ENVS.items():
        rlpg_id = f"{NAMESPACE}/{env_id}"
        ids.append(rlpg_id)
        if rlpg_id in gym.registry:
            continue
        gym.register(
            id=rlpg_id,
            vector_entry_point=f"{__name__}:{NumpyVectorEnv.__name__}",
            max_episode_steps=cls.default_max_episode_steps,
            reward_threshold=gym.spec(env_id).reward_threshold,
            kwargs={"env_id": env_id},
        )
    return ids
