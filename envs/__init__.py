"""Environments: `make()` builds a tensor VecEnv from a Gymnasium id, torch-native when rlpg has the task.

env = make("CartPole-v1", num_envs=64, device="cuda")    # torch-native, stays on the GPU
env = make("HalfCheetah-v5", num_envs=8)                  # Gymnasium's SyncVectorEnv behind an adapter
env = make("my_pkg.envs:Maze-v0", num_envs=8)             # imports my_pkg.envs first (see envs/ids.py)
env = make("ALE/Breakout-v5", num_envs=8, training=True)  # Atari preprocessing for the learner (envs/atari.py)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import torch

from rlpg.envs.gym import GymVecEnv
from rlpg.envs.ids import import_packages, install_hint, make_single, recipe
from rlpg.envs.native import NAMESPACE, TORCH_ENVS, register_gymnasium
from rlpg.envs.wrappers import (
    CheckFinite,
    NormalizeObservation,
    NormalizeReward,
    RecordEpisodeStatistics,
    env_state,
    find_wrapper,
    load_env_state,
    load_normalizer_state,
    normalizer_state,
    set_training,
    sync_normalizers,
)
from rlpg.errors import ConfigError, RLPGError, unknown_name

register_gymnasium()

BACKENDS = ("auto", "torch", "gymnasium")


def resolve_backend(env_id: str, backend: str = "auto") -> str:
    """The backend `make(env_id, backend=...)` uses: "torch" when asked for (or "auto") and rlpg has the task,
    else "gymnasium". Asking for "torch" for a task rlpg does not have is an UnknownNameError."""
    if backend == "torch" and env_id not in TORCH_ENVS:
        raise unknown_name("torch-native environment (use --backend gymnasium for other tasks)", env_id, TORCH_ENVS)
    return "torch" if backend in ("torch", "auto") and env_id in TORCH_ENVS else "gymnasium"


def spaces_of(env_id: str, backend: str = "auto", env_packages: Sequence[str] = (),
              env_kwargs: dict[str, Any] | None = None) -> tuple[gymnasium.Space, gymnasium.Space] | None:
    """The single observation and action spaces `make()` gives `env_id` (after its preprocessing and flattening),
    from one sub-env instead of a vector env; None when the env cannot be made (`make()` reports why)."""
    try:
        import_packages(env_packages)
        if resolve_backend(env_id, backend) == "torch":
            cls = TORCH_ENVS[env_id]
            return cls.single_observation_space, cls.single_action_space
        env = make_single(recipe(env_id, env_kwargs=env_kwargs))
    except Exception:  # unknown id, missing extra, ...: make() reports it with its own message
        return None
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def make(
    env_id: str,
    num_envs: int,
    device: torch.device | str = "cpu",
    backend: str = "auto",
    seed: int | Sequence[int] | None = None,
    async_envs: bool = False,
    normalize_obs: bool = False,
    normalize_reward: bool = False,
    gamma: float = 0.99,
    clip_obs: float = 10.0,
    clip_reward: float = 10.0,
    env_kwargs: dict[str, Any] | None = None,
    env_packages: Sequence[str] = (),
    training: bool = False,
) -> Any:
    """A VecEnv of `num_envs` copies of `env_id` (see rlpg.types.VecEnv), wrapped with episode statistics
    and optional running normalisation. backend: "torch" (rlpg's batched tensor envs), "gymnasium", or
    "auto" (torch when rlpg has the task). `seed` seeds a torch-native env at construction; every backend
    is (re)seeded by `reset(seed=...)`.

    env_id: a Gymnasium id, or `module:EnvId`; env_packages: modules imported first (they register ids); both are
    resolved by envs/ids.py, which also registers ALE/ and MinAtar/ ids. training: the learner's env, where a game's
    training conventions apply (Atari: a lost life ends the episode, rewards clipped to their sign); the default is
    the game as it is scored, for evaluation. Both report whole-game returns (`info["episode_return"]`). Dict and
    Tuple observations are flattened into one Box.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs <= 0:
        raise ConfigError(f"--num-envs must be a positive integer, got {num_envs!r}")
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    device = torch.device(device)
    import_packages(env_packages)
    if env_id.startswith(f"{NAMESPACE}/"):
        raise ConfigError(f"{env_id} is the Gymnasium registration of rlpg's torch-native env for code outside "
                          f"rlpg; here use --env {env_id.removeprefix(NAMESPACE + '/')} (the torch backend is the "
                          "default)")
    if resolve_backend(env_id, backend) == "torch":
        env: Any = TORCH_ENVS[env_id](num_envs, device=device, seed=seed, **(env_kwargs or {}))
    else:
        r = recipe(env_id, training, env_kwargs)  # RLPGError for an unknown id or a missing package
        try:
            env = GymVecEnv(r.env_id, num_envs, device, async_envs, r.env_kwargs, r.wrappers, r.max_episode_steps,
                            r.episode_stats)
        except RLPGError:
            raise
        except gymnasium.error.DependencyNotInstalled as e:
            raise RLPGError(f"{env_id} needs an extra package ({e}); {install_hint(r.env_id)}") from None
        except (gymnasium.error.Error, ImportError, AttributeError, TypeError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise RLPGError(f"cannot create environment {env_id}: {type(e).__name__}: {first}") from None
    env = CheckFinite(env, env_id)
    env = RecordEpisodeStatistics(env)
    # a torch-native env seeded with K seeds keeps K seed groups of rows (rlpg.stacked): K sets of statistics
    groups = len(seed) if isinstance(seed, list | tuple) else None
    if normalize_reward:
        env = NormalizeReward(env, gamma=gamma, clip=clip_reward, groups=groups)
    if normalize_obs:
        if not isinstance(env.single_observation_space, gymnasium.spaces.Box):
            raise ConfigError(
                f"--normalize-obs needs a Box observation space, {env_id} has {env.single_observation_space}"
            )
        env = NormalizeObservation(env, clip=clip_obs, groups=groups)
    return env


__all__ = [
    "make",
    "spaces_of",
    "TORCH_ENVS",
    "resolve_backend",
    "GymVecEnv",
    "RecordEpisodeStatistics",
    "CheckFinite",
    "env_state",
    "load_env_state",
    "NormalizeObservation",
    "NormalizeReward",
    "find_wrapper",
    "normalizer_state",
    "load_normalizer_state",
    "set_training",
    "sync_normalizers",
]
