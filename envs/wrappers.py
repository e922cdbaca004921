"""Tensor wrappers for any VecEnv: episode statistics and running observation / reward normalisation.

All statistics live on the env's device, so they work unchanged for torch-native envs on a GPU; their
`state_dict()` goes into checkpoints so an evaluated or resumed policy sees the same normalisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class VecEnvWrapper:
    """Forwards everything to the wrapped env; subclasses override reset/step."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]:
        return self.env.reset(seed=seed)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        return self.env.step(actions)

    def close(self) -> None:
        self.env.close()


class RunningMeanStd:
    """Running mean and variance over a stream of batches (Chan et al.'s parallel update), float64."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, epsilon: float = 1e-4) -> None:
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        self.count = torch.tensor(epsilon, dtype=torch.float64, device=device)

    def update(self, x: Tensor) -> None:
        """x: [N, *shape]."""
        x = x.to(torch.float64)
        b_mean, b_var, b_count = x.mean(0), x.var(0, correction=0), x.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta.pow(2) * self.count * b_count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean.cpu(), "var": self.var.cpu(), "count": self.count.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        device = self.mean.device
        self.mean, self.var, self.count = (state[k].to(device, torch.float64) for k in ("mean", "var", "count"))


class RecordEpisodeStatistics(VecEnvWrapper):
    """Adds `info["episode_return"]`, `info["episode_length"]` [N] (valid where done) from the raw rewards;
    sits below reward normalisation so the returns are the environment's own."""

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        self._ret = torch.zeros(self.num_envs, device=obs.device)
        self._len = torch.zeros(self.num_envs, dtype=torch.long, device=obs.device)
        return obs, info

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._ret = self._ret + reward
        self._len = self._len + 1
        info["episode_return"], info["episode_length"] = self._ret, self._len
        done = terminated | truncated
        self._ret = torch.where(done, 0.0, self._ret)
        self._len = torch.where(done, 0, self._len)
        return obs, reward, terminated, truncated, info


class NormalizeObservation(VecEnvWrapper):
    """obs -> clip((obs - mean) / sqrt(var + eps)); statistics updated while `training` is True. Applied to
    `info["final_obs"]` too, so bootstrap values see the same input scale as the policy."""

    def __init__(self, env: Any, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__(env)
        shape = tuple(env.single_observation_space.shape)
        self.rms = RunningMeanStd(shape, torch.device(env.device))
        self.clip, self.epsilon, self.training = clip, epsilon, True

    def normalize(self, obs: Tensor) -> Tensor:
        out = (obs - self.rms.mean) / torch.sqrt(self.rms.var + self.epsilon)
        return out.clamp(-self.clip, self.clip).to(torch.float32)

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        if self.training:
            self.rms.update(obs)
        return self.normalize(obs), info

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self.training:
            self.rms.update(obs)
        if "final_obs" in info:
            info["final_obs"] = self.normalize(info["final_obs"])
        return self.normalize(obs), reward, terminated, truncated, info


class NormalizeReward(VecEnvWrapper):
    """reward -> clip(reward / sqrt(Var[discounted return] + eps)), the scaling of Engstrom et al. 2020
    ("Implementation Matters"): only scaled, never shifted, so the sign of rewards is kept."""

    def __init__(self, env: Any, gamma: float = 0.99, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__(env)
        self.rms = RunningMeanStd((), torch.device(env.device))
        self.gamma, self.clip, self.epsilon, self.training = gamma, clip, epsilon, True
        self._returns = torch.zeros(env.num_envs, dtype=torch.float64, device=torch.device(env.device))

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._returns = self._returns * self.gamma + reward
        if self.training:
            self.rms.update(self._returns)
        scaled = (reward / torch.sqrt(self.rms.var + self.epsilon)).clamp(-self.clip, self.clip).to(torch.float32)
        self._returns = torch.where(terminated | truncated, 0.0, self._returns)
        return obs, scaled, terminated, truncated, info


def find_wrapper(env: Any, cls: type) -> Any | None:
    """The first wrapper of type `cls` in the chain, or None."""
    while env is not None:
        if isinstance(env, cls):
            return env
        env = getattr(env, "env", None) if isinstance(env, VecEnvWrapper) else None
    return None


def normalizer_state(env: Any) -> dict[str, Any]:
    """The normalisation statistics of a wrapped env, for checkpoints."""
    out: dict[str, Any] = {}
    if (w := find_wrapper(env, NormalizeObservation)) is not None:
        out["obs_rms"] = w.rms.state_dict()
    if (w := find_wrapper(env, NormalizeReward)) is not None:
        out["ret_rms"] = w.rms.state_dict()
    return out


def load_normalizer_state(env: Any, state: dict[str, Any]) -> None:
    if "obs_rms" in state and (w := find_wrapper(env, NormalizeObservation)) is not None:
        w.rms.load_state_dict(state["obs_rms"])
    if "ret_rms" in state and (w := find_wrapper(env, NormalizeReward)) is not None:
        w.rms.load_state_dict(state["ret_rms"])


def set_training(env: Any, training: bool) -> None:
    """Freeze (False) or resume (True) updates of the normalisation statistics, e.g. for evaluation."""
    for cls in (NormalizeObservation, NormalizeReward):
        if (w := find_wrapper(env, cls)) is not None:
            w.training = training
