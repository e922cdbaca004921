"""Videos of evaluation episodes (`rlpg eval RUN --video DIR`).

rlpg's batched envs cannot render (the torch-native tasks step tensors), so an evaluation with videos runs its
episodes one after another on one Gymnasium env made with `render_mode="rgb_array"` as rlpg's evaluation envs build
their sub-envs (envs/ids.py: Atari's preprocessing, time limits), wrapped in Gymnasium's `RecordVideo`; for the
torch-native tasks that is Gymnasium's own implementation of the same task (the same id, spaces and dynamics). The
policy acts through `TrainedPolicy`, i.e. with the run's observation normalisation and the actions clipped to a Box
space's bounds, as in training. Needs `rlpg[video]` (moviepy, and pygame to render the classic-control tasks).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np

from rlpg.checkpoint import TrainedPolicy
from rlpg.envs.ids import Recipe, import_packages, make_single, recipe
from rlpg.errors import ConfigError, RLPGError, install_line
from rlpg.rollout import EVAL_STEPS_WITHOUT_TIME_LIMIT

INSTALL = install_line("video")


def check_video_dependencies() -> None:
    """RLPGError naming the install line when moviepy is missing (checked before any work is done)."""
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise RLPGError(f"--video needs moviepy (and pygame to render the classic-control tasks): {INSTALL}") from None


def video_names(prefix: str, count: int) -> list[str]:
    """The file names RecordVideo gives the first `count` episodes."""
    return [f"{prefix}-episode-{i}.mp4" for i in range(count)]


def evaluate_with_video(policy: TrainedPolicy, env_id: str, episodes: int, video_dir: Path, video_episodes: int,
                        seed: int, deterministic: bool = True, prefix: str = "eval",
                        env_packages: Sequence[str] = ()) -> tuple[np.ndarray, list[Path]]:
    """Returns of `episodes` episodes [episodes] and the videos of the first `video_episodes` of them
    (`video_dir/<prefix>-episode-<i>.mp4`). The env is seeded once, at the first reset, as Gymnasium seeds;
    `env_packages` are imported first (the run's --env-packages)."""
    if video_dir.exists() and not video_dir.is_dir():
        raise ConfigError(f"--video {video_dir} is a file; pass a directory for the videos")
    # pygame greets on stdout (which --json owns), and SDL's display and sound drivers report on stderr that a
    # headless machine has neither; rgb_array frames need neither
    for key in ("PYGAME_HIDE_SUPPORT_PROMPT", "SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):
        os.environ.setdefault(key, "1" if key == "PYGAME_HIDE_SUPPORT_PROMPT" else "dummy")
    names = video_names(prefix, min(video_episodes, episodes))
    if existing := [n for n in names if (video_dir / n).exists()]:
        print(f"rlpg: warning: replacing {len(existing)} video(s) in {video_dir}", file=sys.stderr)
    # the sub-env that rlpg's evaluation env is built from (its preprocessing, e.g. Atari's, and time limit), rendering
    import_packages(env_packages)
    r = recipe(env_id, training=False, env_kwargs={"render_mode": "rgb_array"})
    try:
        returns = _run(policy, r, episodes, video_dir, len(names), seed, deterministic, prefix)
    except gym.error.DependencyNotInstalled as e:  # pygame, when a classic-control task renders its first frame
        raise RLPGError(f"--video needs a package that is not installed ({str(e).splitlines()[0]}): "
                        f"{INSTALL}") from None
    return returns, [video_dir / n for n in names]


def _run(policy: TrainedPolicy, r: Recipe, episodes: int, video_dir: Path, recorded: int, seed: int,
         deterministic: bool, prefix: str) -> np.ndarray:
    try:
        env = make_single(r)
    except gym.error.DependencyNotInstalled:
        raise
    except (gym.error.Error, TypeError, ValueError) as e:
        raise RLPGError(f"--video: cannot make {r.env_id} with render_mode='rgb_array' ({e})") from None
    try:
        for key, space, saved in (("observation", env.observation_space, policy.policy.obs_space),
                                  ("action", env.action_space, policy.policy.action_space)):
            if space != saved:
                raise ConfigError(f"--video: the Gymnasium env {r.env_id} has {key} space {space}, but the policy "
                                  f"was trained on {saved}; evaluate without --video")
        limit = r.max_episode_steps or (env.spec.max_episode_steps if env.spec else None) or \
            EVAL_STEPS_WITHOUT_TIME_LIMIT
        with warnings.catch_warnings():  # evaluate_with_video's own line says which videos are replaced
            warnings.filterwarnings("ignore", message=".*Overwriting existing videos")
            env = gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda i: i < recorded,
                                           name_prefix=prefix, disable_logger=True)
        returns = np.zeros(episodes)
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed if episode == 0 else None)
            for _ in range(limit):
                obs, reward, terminated, truncated, _ = env.step(policy.predict(obs, deterministic=deterministic))
                returns[episode] += float(reward)
                if terminated or truncated:
                    break
            else:
                raise RLPGError(f"--video: episode {episode} of {r.env_id} did not end within {limit} steps; an env "
                                "without a time limit needs one (gymnasium.wrappers.TimeLimit)")
    finally:
        env.close()  # RecordVideo writes the last recorded episode's video here
    return returns
