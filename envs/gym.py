"""Adapter from a Gymnasium vector env to rlpg's tensor VecEnv: the one place numpy meets torch.

It forces Gymnasium's same-step autoreset (`AutoresetMode.SAME_STEP`), so the observation returned on
a done row is the first of the next episode and `info["final_obs"]` holds the last one, which the
rollout needs to bootstrap a truncated episode from V(final_obs). Per-sub-env wrappers (envs/ids.py: Atari
preprocessing, time limits, flattening) are applied inside the vector env; where they record the game's own episodes
(Atari's whole games over the learner's per-life episodes) the adapter reports those (`episode_stats`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import CloudpickleWrapper
from torch import Tensor

from rlpg.encoders import image_shape
from rlpg.envs.ids import Recipe, make_single
from rlpg.errors import RLPGError


class SameStepVecEnv:
    """Gymnasium sub-envs stepped one after another in this process, resetting a finished one in the same step: what
    `gymnasium.vector.SyncVectorEnv` does in its SAME_STEP autoreset mode, with the same sub-envs (gym.make + the
    wrappers), the same seeds (sub-env i of `reset(seed)` gets seed + i) and the same observations, rewards and flags,
    bit for bit (tests/test_gym_backend.py), but without what the trainer never reads: SyncVectorEnv merges every
    sub-env's info dict into batched arrays on every step and deep-copies the batch of observations, which on cheap
    environments is a large part of the cost (stepping 1,024 CartPoles: 1.2-1.4x faster without it).

    step() returns (obs, final_obs, rewards, terminated, truncated, final_infos): final_obs holds each sub-env's last
    observation of this step (the next episode's first observation is in obs where an episode ended), final_infos
    maps a sub-env that finished an episode to that step's info."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]) -> None:
        self.envs: list[gym.Env] = []
        try:
            for fn in env_fns:
                self.envs.append(fn())
        except BaseException:
            self.close()
            raise
        first = self.envs[0]
        self.num_envs = len(self.envs)
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.action_space = gym.vector.utils.batch_space(first.action_space, self.num_envs)
        space = self.single_observation_space
        self._obs = np.zeros((self.num_envs, *space.shape), dtype=space.dtype)
        self._rewards = np.zeros(self.num_envs, dtype=np.float64)
        self._terminated = np.zeros(self.num_envs, dtype=np.bool_)
        self._truncated = np.zeros(self.num_envs, dtype=np.bool_)
        # Discrete actions go in as Python ints: Discrete.contains (which many envs assert on every step) takes an int
        # at once, but runs numpy's dtype checks on an np.int64, ~5 us per call
        self._ints = isinstance(first.action_space, gym.spaces.Discrete)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        for i, env in enumerate(self.envs):
            self._obs[i], _ = env.reset(seed=None if seed is None else seed + i)
        return self._obs.copy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 dict[int, dict[str, Any]]]:
        obs, final = self._obs, np.empty_like(self._obs)
        final_infos: dict[int, dict[str, Any]] = {}
        for i, (env, action) in enumerate(zip(self.envs, actions.tolist() if self._ints else actions, strict=True)):
            final[i], self._rewards[i], term, trunc, info = env.step(action)
            self._terminated[i], self._truncated[i] = term, trunc
            if term or trunc:
                final_infos[i] = info
                obs[i], _ = env.reset()
            else:
                obs[i] = final[i]
        return obs.copy(), final, self._rewards.copy(), self._terminated.copy(), self._truncated.copy(), final_infos

    def close(self) -> None:
        for env in self.envs:
            env.close()


class SplitVecEnv:
    """SameStepVecEnv with the sub-envs split into `groups` contiguous groups stepped at the same time: the first in
    this process, each other one in a worker process of its own (one per core, rather than Gymnasium's
    AsyncVectorEnv's one per sub-env). Actions and results travel through shared memory; a pipe carries the commands
    and the infos of finished episodes. The same sub-envs, seeds and results as SameStepVecEnv, bit for bit."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], groups: int) -> None:
        n = len(env_fns)
        cuts = [round(k * n / groups) for k in range(groups + 1)]
        self.bounds = list(zip(cuts[:-1], cuts[1:], strict=True))
        self.local = SameStepVecEnv(env_fns[: cuts[1]])
        self.envs = self.local.envs  # this process's sub-envs (the others live in the workers)
        self.num_envs = n
        self.single_observation_space = self.local.single_observation_space
        self.single_action_space = self.local.single_action_space
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, n)
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        obs_space, act = self.single_observation_space, self.action_space
        self._shm = {
            "obs": _shared(ctx, (n, *obs_space.shape), obs_space.dtype),
            "final": _shared(ctx, (n, *obs_space.shape), obs_space.dtype),
            "rewards": _shared(ctx, (n,), np.float64),
            "terminated": _shared(ctx, (n,), np.bool_),
            "truncated": _shared(ctx, (n,), np.bool_),
            "actions": _shared(ctx, act.shape, act.dtype),
        }
        self.views = {k: _view(*v) for k, v in self._shm.items()}
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        try:
            for lo, hi in self.bounds[1:]:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(child, CloudpickleWrapper(env_fns[lo:hi]), lo, hi, self._shm),
                                   daemon=True)
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)
            for conn in self.conns:
                _answer(conn)
        except BaseException:
            self.close()
            raise

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        for conn in self.conns:
            conn.send(("reset", seed))
        obs = np.empty_like(self.views["obs"])
        obs[: self.bounds[0][1]], _ = self.local.reset(seed=seed)
        for conn, (lo, hi) in zip(self.conns, self.bounds[1:], strict=True):
            _answer(conn)
            obs[lo:hi] = self.views["obs"][lo:hi]
        return obs, {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 dict[int, dict[str, Any]]]:
        self.views["actions"][:] = actions
        for conn in self.conns:
            conn.send(("step", None))
        mine = self.bounds[0][1]
        local = self.local.step(actions[:mine])  # meanwhile the workers step theirs
        out = [np.empty_like(self.views[k]) for k in ("obs", "final", "rewards", "terminated", "truncated")]
        for o, part in zip(out, local[:5], strict=True):
            o[:mine] = part
        final_infos = dict(local[5])
        for conn, (lo, hi) in zip(self.conns, self.bounds[1:], strict=True):
            final_infos.update(_answer(conn))
            for o, k in zip(out, ("obs", "final", "rewards", "terminated", "truncated"), strict=True):
                o[lo:hi] = self.views[k][lo:hi]
        return out[0], out[1], out[2], out[3], out[4], final_infos

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (OSError, EOFError):
                pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self.conns, self.procs = [], []
        self.local.close()


def _shared(ctx: Any, shape: tuple[int, ...], dtype: Any) -> tuple[Any, tuple[int, ...], str]:
    dtype = np.dtype(dtype)
    return ctx.RawArray("b", max(1, int(np.prod(shape)) * dtype.itemsize)), shape, dtype.str


def _view(buf: Any, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.dtype(dtype), count=int(np.prod(shape))).reshape(shape)


def _answer(conn: Any) -> Any:
    """A worker's reply; its error, raised here as one line."""
    try:
        kind, value = conn.recv()
    except EOFError:
        raise RLPGError("an environment worker process died (see its output above)") from None
    if kind == "error":
        raise RLPGError(f"an environment worker failed: {value}")
    return value


def _worker(conn: Any, fns: Any, lo: int, hi: int, shm: dict[str, Any]) -> None:
    """Steps sub-envs lo..hi-1 of a SplitVecEnv on command. Stop signals are left to the parent (Ctrl-C and a
    scheduler's SIGTERM reach the whole process group): it finishes its update, saves last.pt and closes the workers,
    which a worker that died of the signal would turn into an error instead."""
    for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
        if s is not None:
            signal.signal(s, signal.SIG_IGN)
    try:
        envs = SameStepVecEnv(fns.fn)
        views = {k: _view(*v) for k, v in shm.items()}
        conn.send(("ok", None))
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        try:
            cmd, arg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            break
        try:
            if cmd == "step":
                obs, final, rewards, terminated, truncated, infos = envs.step(views["actions"][lo:hi])
                for k, v in (("obs", obs), ("final", final), ("rewards", rewards), ("terminated", terminated),
                             ("truncated", truncated)):
                    views[k][lo:hi] = v
                conn.send(("ok", {lo + i: info for i, info in infos.items()}))
            elif cmd == "reset":
                views["obs"][lo:hi], _ = envs.reset(seed=None if arg is None else arg + lo)
                conn.send(("ok", None))
            elif cmd == "close":
                envs.close()
                conn.send(("ok", None))
                break
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))


class GymVecEnv:
    """Gymnasium sub-envs (`SameStepVecEnv`; with `async_envs`, `SplitVecEnv` over one process per core) with tensors in
    and out on `device`.

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
        fns = [partial(make_single, Recipe(env_id, tuple(wrappers), dict(env_kwargs or {})))] * num_envs
        groups = min(num_envs, os.cpu_count() or 1) if async_envs else 1
        self.env: SameStepVecEnv | SplitVecEnv = SplitVecEnv(fns, groups) if groups > 1 else SameStepVecEnv(fns)
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
        obs, final, reward, terminated, truncated, final_infos = self.env.step(a)
        to = self.device
        out = {"final_obs": self._obs(final)}
        if self.episode_stats:
            out.update(self._episodes(final_infos))
        return (
            self._obs(obs),
            torch.as_tensor(reward, dtype=torch.float32).to(to),
            torch.as_tensor(terminated, dtype=torch.bool).to(to),
            torch.as_tensor(truncated, dtype=torch.bool).to(to),
            out,
        )

    def _episodes(self, final_infos: dict[int, dict[str, Any]]) -> dict[str, Tensor]:
        """The sub-envs' own finished episodes this step: gymnasium's RecordEpisodeStatistics puts "episode" {"r", "l"}
        in the info of an episode's last step (absent on a done row that was only a lost life)."""
        n = self.num_envs
        done = np.zeros(n, dtype=bool)
        ret = np.zeros(n, dtype=np.float64)
        length = np.zeros(n, dtype=np.int64)
        for i, info in final_infos.items():
            if "episode" in info:
                done[i], ret[i], length[i] = True, float(np.asarray(info["episode"]["r"])), int(np.asarray(
                    info["episode"]["l"]))
        to = self.device
        return {
            "episode_done": torch.as_tensor(done).to(to),
            "episode_return": torch.as_tensor(ret, dtype=torch.float32).to(to),
            "episode_length": torch.as_tensor(length, dtype=torch.int64).to(to),
        }

    def close(self) -> None:
        self.env.close()

