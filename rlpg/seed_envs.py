"""The environments of K seeds trained in one process (rlpg.seeds), and each seed's share of their state.

A K-seed run steps one VecEnv of K x N rows in seed groups (rows k*N .. k*N+N-1 are seed k's N envs):

- torch-native envs: one env of K x N rows seeded with the K seeds (envs/torch_base.py), its normalisers keeping K
  sets of statistics (RunningMeanStd's groups): one batch on the device, whatever K;
- Gymnasium envs: K vector envs, each made exactly as a single run of its seed makes it, joined by `SeedVecEnv`.

Either way seed k's part of every saved state (env, wrappers, normalisers) is what a single run of seed k holds, so
its checkpoints are single-run checkpoints (`seed_env_state`, `seed_normalizer_state`) and a K-seed run resumes from
K of them (`load_seed_env_states`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rlpg.envs import (
    env_state,
    load_env_state,
    load_normalizer_state,
    make,
    normalizer_state,
    set_training,
)


class SeedVecEnv:
    """K vector envs (one per seed, N rows each) as one VecEnv of K x N rows: seed k's rows are k*N .. k*N+N-1.

    reset(seed=[s_1, ..., s_K]) resets env k with seed s_k; step(actions [K*N, ...]) steps env k with its rows and
    joins the results (and the per-row info entries) in seed order."""

    def __init__(self, envs: Sequence[Any]) -> None:
        self.envs = list(envs)
        first = self.envs[0]
        self.n = first.num_envs
        self.num_envs = self.n * len(self.envs)
        self.device = first.device
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.max_episode_steps = getattr(first, "max_episode_steps", None)

    def reset(self, seed: Sequence[int] | None = None) -> tuple[Tensor, dict[str, Any]]:
        seeds = [None] * len(self.envs) if seed is None else list(seed)
        obs = [env.reset(seed=s)[0] for env, s in zip(self.envs, seeds, strict=True)]
        return torch.cat(obs), {}

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        results = [env.step(a) for env, a in zip(self.envs, actions.split(self.n), strict=True)]
        obs, reward, terminated, truncated = (torch.cat([r[i] for r in results]) for i in range(4))
        info: dict[str, Any] = {}
        for key, value in results[0][4].items():
            if isinstance(value, Tensor) and value.dim() and value.shape[0] == self.n:
                info[key] = torch.cat([r[4][key] for r in results])
        return obs, reward, terminated, truncated, info

    def check_finite(self) -> None:
        for env in self.envs:
            env.check_finite()

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_seed_env(env_id: str, num_envs: int, seeds: Sequence[int], backend: str, **kwargs: Any) -> Any:
    """The K seeds' envs, `num_envs` per seed (rlpg.envs.make's keyword arguments): a torch-native env of
    K x num_envs rows in seed groups, or K Gymnasium vector envs joined by SeedVecEnv."""
    seeds = list(seeds)
    if backend == "torch":
        return make(env_id, len(seeds) * num_envs, backend="torch", seed=seeds, **kwargs)
    envs: list[Any] = []
    try:
        for s in seeds:
            envs.append(make(env_id, num_envs, backend=backend, seed=s, **kwargs))
    except BaseException:
        for env in envs:
            env.close()
        raise
    return SeedVecEnv(envs)


def set_training_all(env: Any, training: bool) -> None:
    """rlpg.envs.set_training for every seed's envs."""
    for e in env.envs if isinstance(env, SeedVecEnv) else [env]:
        set_training(e, training)


# ------------------------------------------------------------------------------------ seed k's share of a state
def _rms_slice(rms: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    return {key: value[k].clone() for key, value in rms.items()}


def _rms_stack(parts: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {key: torch.stack([torch.as_tensor(p[key]) for p in parts]) for key in parts[0]}


def _rows(x: Tensor, k: int, n: int) -> Tensor:
    return x[k * n:(k + 1) * n].clone()


def seed_normalizer_state(env: Any, k: int, num_seeds: int) -> dict[str, Any]:
    """Seed k's normalisation statistics, as a single run's checkpoint holds them."""
    if isinstance(env, SeedVecEnv):
        return normalizer_state(env.envs[k])
    return {name: _rms_slice(rms, k) for name, rms in normalizer_state(env).items()}


def load_seed_normalizers(env: Any, states: Sequence[dict[str, Any]]) -> None:
    """Load each seed's normalisation statistics (single-run format, seed order) into the K-seed env."""
    if isinstance(env, SeedVecEnv):
        for e, state in zip(env.envs, states, strict=True):
            load_normalizer_state(e, state)
        return
    load_normalizer_state(env, {name: _rms_stack([s[name] for s in states]) for name in states[0]})


def copy_normalizers(source: Any, target: Any) -> None:
    """The training env's statistics into the evaluation env (both K-seed envs of the same seeds)."""
    if isinstance(source, SeedVecEnv):
        for s, t in zip(source.envs, target.envs, strict=True):
            load_normalizer_state(t, normalizer_state(s))
    else:
        load_normalizer_state(target, normalizer_state(source))


def seed_env_state(env: Any, k: int, num_seeds: int) -> dict[str, Any]:
    """Seed k's part of rlpg.envs.env_state(env): what env_state gives for a single run of that seed (its rows of
    every per-row tensor, its normaliser statistics, its env generator)."""
    if isinstance(env, SeedVecEnv):
        return env_state(env.envs[k])
    full = env_state(env)
    n = env.num_envs // num_seeds
    layers = []
    for layer in full["wrappers"]:
        state = {}
        for key, value in layer["state"].items():
            if key == "rms":
                value = _rms_slice(value, k)
            elif isinstance(value, Tensor) and value.dim() and value.shape[0] == env.num_envs:
                value = _rows(value, k, n)
            state[key] = value
        layers.append({"type": layer["type"], "state": state})
    base = full["base"]
    if base is not None:
        base = {**{key: v for key, v in base.items() if key != "generators"},
                "state": _rows(base["state"], k, n), "elapsed": _rows(base["elapsed"], k, n),
                "generator": base.get("generators", [base["generator"]])[k]}
    return {"wrappers": layers, "base": base}


def load_seed_env_states(env: Any, states: Sequence[dict[str, Any]], restore_base: bool) -> None:
    """Load K single-run env states (seed order) into the K-seed env: the inverse of seed_env_state."""
    if isinstance(env, SeedVecEnv):
        for e, state in zip(env.envs, states, strict=True):
            load_env_state(e, state, restore_base=restore_base)
        return
    layers = []
    for i, layer in enumerate(states[0]["wrappers"]):
        parts = [s["wrappers"][i]["state"] for s in states]
        state = {}
        for key, value in layer["state"].items():
            if key == "rms":
                value = _rms_stack([p[key] for p in parts])
            elif isinstance(value, Tensor) and value.dim():
                value = torch.cat([p[key] for p in parts])
            state[key] = value
        layers.append({"type": layer["type"], "state": state})
    base = states[0]["base"]
    if base is not None and restore_base:
        gens = [s["base"]["generator"] for s in states]
        base = {**base, "state": torch.cat([s["base"]["state"] for s in states]),
                "elapsed": torch.cat([s["base"]["elapsed"] for s in states]), "generator": gens[0],
                **({"generators": gens} if len(gens) > 1 else {})}
    load_env_state(env, {"wrappers": layers, "base": base}, restore_base=restore_base)
