"""The torch-native classic-control envs by Gymnasium id, and their registration with Gymnasium.

`TORCH_ENVS` maps a Gymnasium id to its torch class (rlpg.types.VecEnv: tensors in, tensors out).
`register_gymnasium()` registers each as "rlpg/<id>" with a `vector_entry_point`, so code outside rlpg can use them
as an ordinary `gymnasium.vector.VectorEnv` with numpy actions and numpy outputs:

    register_gymnasium()
    envs = gymnasium.make_vec("rlpg/CartPole-v1", num_envs=8, vectorization_mode="vector_entry_point", device="cuda")

They autoreset as Gymnasium's own vector envs do by default (NEXT_STEP); `autoreset_mode=` picks another.
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

    `autoreset_mode` is one of Gymnasium's (`metadata["autoreset_mode"]` says which), as in `SyncVectorEnv`:

    - NEXT_STEP (the default, Gymnasium's own): a done row returns the last obs of its episode; the next step()
      resets that row instead of stepping it, ignores its action and returns the first obs, reward 0 and
      terminated = truncated = False. Gymnasium's stateful vector wrappers (NormalizeObservation, ...) need it.
    - SAME_STEP: a done row returns the first obs of the next episode; the infos of such a step hold "final_obs"
      (object array [N], the last obs on done rows, None elsewhere), "final_info" ({}), and their masks
      "_final_obs", "_final_info" [N] bool. This is how the torch env itself steps.
    - DISABLED: a done row returns its last obs and must be reset with `reset(options={"reset_mask": mask})`
      before it is stepped again.

    `reset(options={"reset_mask": mask})` ([N] bool numpy) resets only the masked rows in every mode.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        max_episode_steps: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        if env_id not in TORCH_ENVS:
            raise KeyError(f"no torch-native env {env_id!r}; known: {sorted(TORCH_ENVS)}")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.env = TORCH_ENVS[env_id](num_envs, device=device, seed=seed, max_episode_steps=max_episode_steps)
        self.num_envs = num_envs
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self.observation_space = self.env.observation_space
        self.action_space = self.env.action_space
        self._ended = np.zeros(num_envs, dtype=np.bool_)
        """rows whose episode ended at the last step and are not reset yet (NEXT_STEP, DISABLED)"""
        self._obs: np.ndarray | None = None
        """the last obs returned [N, D], for the rows a partial reset leaves alone"""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all sub-envs, or those in `options["reset_mask"]`; `seed` reseeds the torch env's generator.
        Returns obs [N, D] float32, {}."""
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if options:
            raise ValueError(f"{type(self).__name__}.reset takes only the option 'reset_mask', got {options}")
        super().reset(seed=seed)
        if mask is None:
            obs, _ = self.env.reset(seed=seed)
            self._ended[:] = False
            self._obs = obs.cpu().numpy()
            return self._obs.copy(), {}
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be a numpy bool array of shape ({self.num_envs},)")
        if not mask.any():
            raise ValueError("options['reset_mask'] must contain at least one True value")
        if self._obs is None:
            raise RuntimeError(f"{self!r}: call reset() without a mask first")
        if seed is not None:
            self.env.generator.manual_seed(seed)
        obs = self.env.reset_rows(torch.as_tensor(mask, device=self.env.device)).cpu().numpy()
        self._obs[mask] = obs[mask]
        self._ended[mask] = False
        return self._obs.copy(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step with numpy actions ([N] ints or [N, A] floats); returns numpy obs, reward, terminated, truncated."""
        ended = self._ended
        if self.autoreset_mode == AutoresetMode.DISABLED and ended.any():
            raise RuntimeError(f"sub-envs {np.flatnonzero(ended).tolist()} finished and were not reset; with "
                               "autoreset_mode DISABLED call reset(options={'reset_mask': mask}) first")
        space = self.single_action_space
        dtype = torch.int64 if isinstance(space, gym.spaces.Discrete) else torch.float32
        obs, reward, terminated, truncated, info = self.env.step(
            torch.as_tensor(np.asarray(actions), dtype=dtype, device=self.env.device)
        )
        obs_np, final_np = obs.cpu().numpy(), info["final_obs"].cpu().numpy()
        reward_np, terminated_np, truncated_np = reward.cpu().numpy(), terminated.cpu().numpy(), truncated.cpu().numpy()
        infos: dict[str, Any] = {}
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            done = terminated_np | truncated_np
            if done.any():
                final_obs = np.full(self.num_envs, None, dtype=object)
                for i in np.flatnonzero(done):
                    final_obs[i] = final_np[i]
                infos = {"final_obs": final_obs, "_final_obs": done, "final_info": {}, "_final_info": done.copy()}
        else:
            if ended.any():  # NEXT_STEP: these rows were stepped above but are reset now, their action ignored
                reset_obs = self.env.reset_rows(torch.as_tensor(ended, device=self.env.device)).cpu().numpy()
                final_np[ended] = reset_obs[ended]
                reward_np[ended], terminated_np[ended], truncated_np[ended] = 0.0, False, False
            # the torch env has already reset the rows that finished now; until they are reset here (NEXT_STEP's
            # next step, or reset(reset_mask) with DISABLED) their obs is the episode's last one
            obs_np = final_np
            self._ended = terminated_np | truncated_np
        self._obs = obs_np.copy()
        return obs_np, reward_np, terminated_np, truncated_np, infos

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env.spec_id}, num_envs={self.num_envs}, device={self.env.device})"


def register_gymnasium() -> list[str]:
    """Register every torch-native env with Gymnasium as "rlpg/<id>"; returns the registered ids.

    Idempotent: ids already registered are left alone, so a second call registers nothing and warns nothing.
    Extra `make_vec` keyword arguments (`device`, `seed`, `max_episode_steps`, `autoreset_mode`) reach
    `NumpyVectorEnv`.
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
