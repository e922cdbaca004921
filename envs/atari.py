"""Atari (ALE) preprocessing by the conventions of DQN (Mnih et al. 2015) as CleanRL's ppo_atari and SB3's
AtariWrapper apply them, built from Gymnasium's wrappers where it has them.

Each sub-env, innermost first (`wrappers(training)`):

  AtariPreprocessing      up to 30 no-op starts, the action repeated for 4 frames with the last two max-pooled,
                          84 x 84 grayscale, kept uint8 (the encoder scales pixels; a quarter of float32's memory)
  FrameStackObservation   the last 4 frames: observations [4, 84, 84] uint8
  RecordEpisodeStatistics whole games, raw rewards: the score rlpg logs as rollout/episodic_return and evaluates
  EpisodicLife            training only: a lost life ends the learner's episode, the game resets only at game over
  FireReset               games that wait for FIRE (Breakout, ...): pressed at the start of every life
  sign(reward)            training only: rewards clipped to {-1, 0, +1}

The game's statistics sit below the learner's changes (per-life episodes, clipped rewards), so the returns rlpg
reports are true game scores in training and evaluation alike (SB3 reads its Monitor below AtariWrapper the same way,
for the same reason). Evaluation envs (`training=False`) play the full game with its raw rewards. ALE v5 ids keep
their sticky actions (repeat_action_probability 0.25, Machado et al. 2018); CleanRL's published scores use the v4
ids without them (`env_kwargs={"repeat_action_probability": 0.0}` gives that protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

PREFIX = "ALE/"
FRAME_SKIP = 4
FRAME_STACK = 4
SCREEN_SIZE = 84
NOOP_MAX = 30


def lives(env: gym.Env) -> int:
    """The lives left in the game, read from the emulator as SB3's EpisodicLifeEnv and Gymnasium's
    AtariPreprocessing do (`env.unwrapped.ale.lives()`)."""
    return int(env.unwrapped.ale.lives())  # type: ignore[attr-defined]


class EpisodicLife(gym.Wrapper):
    """A lost life is a termination for the learner, but the game goes on: `reset()` after a life loss takes one
    no-op step instead of restarting (SB3's EpisodicLifeEnv; Mnih et al. 2015). A termination that is only a life
    loss does not bootstrap, which teaches the value of staying alive; restarting the game there instead would
    make every life the first and lose the later, harder parts of the game."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        now = lives(self.env)
        # lives > 0: some games report 0 lives during their first frames (the check of openai/baselines)
        if 0 < now < self.lives:
            terminated = True
        self.lives = now
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        # a seed (a new run, a resumed one) restarts the game, so seeding stays reproducible
        if self.game_over or seed is not None or options is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)  # the game goes on after the lost life
            if terminated or truncated:  # the no-op ended the game: start a new one
                obs, info = self.env.reset()
        self.game_over = False
        self.lives = lives(self.env)
        return obs, info


class FireReset(gym.Wrapper):
    """Presses FIRE (then action 2) at the start of every life, for games that wait for it (openai/baselines'
    FireResetEnv): on reset, and after a life lost within an episode, which happens only without EpisodicLife
    (evaluation), so that a policy trained with every life started for it plays the full game the same way."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]
        assert meanings[1] == "FIRE" and len(meanings) >= 3, meanings
        self.lives = 0

    def _fire(self) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total = 0.0
        for action in (1, 2):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        obs, _, terminated, truncated, info = self._fire()
        if terminated or truncated:  # rare: FIRE ended it; start again without firing (as baselines does)
            obs, info = self.env.reset()
        self.lives = lives(self.env)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        now = lives(self.env)
        if not (terminated or truncated) and now < self.lives:
            obs, more, terminated, truncated, info = self._fire()
            reward = float(reward) + more
        self.lives = lives(self.env)
        return obs, reward, terminated, truncated, info


def fire_reset_if_needed(env: gym.Env) -> gym.Env:
    """FireReset for games whose action 1 is FIRE (Breakout, Space Invaders, ...), the env itself otherwise."""
    meanings = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]
    return FireReset(env) if len(meanings) >= 3 and meanings[1] == "FIRE" else env


def wrappers(training: bool) -> list[Callable[[gym.Env], gym.Env]]:
    """The per-sub-env preprocessing of an ALE id made with frameskip=1, innermost first (see the module doc)."""
    return [
        partial(gym.wrappers.AtariPreprocessing, noop_max=NOOP_MAX, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE,
                grayscale_obs=True, scale_obs=False, terminal_on_life_loss=False),
        partial(gym.wrappers.FrameStackObservation, stack_size=FRAME_STACK),
        *game_wrappers(training),
    ]


def game_wrappers(training: bool) -> list[Callable[[gym.Env], gym.Env]]:
    """What sits above the frame processing: the game's statistics, then the learner's per-life episodes, FIRE at
    the start of each life and clipped rewards. Needs only `unwrapped.ale.lives()` and `get_action_meanings()`."""
    out: list[Callable[[gym.Env], gym.Env]] = [gym.wrappers.RecordEpisodeStatistics]
    if training:
        out.append(EpisodicLife)
    out.append(fire_reset_if_needed)
    if training:
        out.append(partial(gym.wrappers.TransformReward, func=np.sign))
    return out


def max_episode_steps(spec: gym.envs.registration.EnvSpec, env_kwargs: dict[str, Any]) -> int | None:
    """The agent steps of the longest game: ALE ends (truncates) a game after `max_num_frames_per_episode` frames
    (108,000 for v5, 30 minutes of play), each agent step taking FRAME_SKIP of them."""
    frames = env_kwargs.get("max_num_frames_per_episode", spec.kwargs.get("max_num_frames_per_episode"))
    return int(frames) // FRAME_SKIP if frames else None
