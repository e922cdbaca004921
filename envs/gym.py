"""Adapter from a Gymnasium vector env to rlpg's tensor VecEnv: the one place numpy meets torch.

It forces Gymnasium's same-step autoreset (`AutoresetMode.SAME_STEP`), so the observation returned on
a done row is the first of the next episode and `info["final_obs"]` holds the last one, which the
rollout needs to bootstrap a truncated episode from V(final_obs). Per-sub-env wrappers (envs/ids.py: Atari
preprocessing, time limits, flattening) are applied inside the vector env; where they record the game's own episodes
(Atari's whole games over the learner's per-life episodes) the adapter reports those (`episode_stats`).
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import platform
import signal
import time
import weakref
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import CloudpickleWrapper
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit
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

    It also steps each sub-env beneath the wrappers gym.make puts on every env that only pass a step through once the
    env runs (`_lean`): on CartPole they and the action check take about half of a step. The time limit stays,
    counted in the TimeLimit wrapper's own counter exactly as its step() would.

    step() returns (obs, final_obs, rewards, terminated, truncated, final_infos): final_obs holds each sub-env's last
    observation of this step (the next episode's first observation is in obs where an episode ended), final_infos
    maps a sub-env that finished an episode to that step's info (only with `infos`; else it is empty)."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], infos: bool = True) -> None:
        self.envs: list[gym.Env] = []
        try:
            for fn in env_fns:
                self.envs.append(fn())
        except BaseException:
            self.close()
            raise
        first = self.envs[0]
        self.num_envs = len(self.envs)
        self.infos = infos
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.action_space = gym.vector.utils.batch_space(first.action_space, self.num_envs)
        space = self.single_observation_space
        self._obs = np.zeros((self.num_envs, *space.shape), dtype=space.dtype)
        # Discrete actions go in as Python ints: Discrete.contains (which many envs assert on every step) takes an int
        # at once, but runs numpy's dtype checks on an np.int64, ~5 us per call
        self._ints = isinstance(first.action_space, gym.spaces.Discrete)
        # per sub-env: how to step it (see _lean); None until its first step, which goes through every wrapper
        self._lean: list[tuple[gym.Env, Any] | None] = [None] * self.num_envs
        for env in self.envs:
            _fast_int_actions(env)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        for i, env in enumerate(self.envs):
            self._obs[i], _ = env.reset(seed=None if seed is None else seed + i)
        return self._obs.copy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 dict[int, dict[str, Any]]]:
        n = self.num_envs
        obs, final = np.empty_like(self._obs), np.empty_like(self._obs)
        rewards = np.empty(n, dtype=np.float64)
        terminated, truncated = np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.bool_)
        final_infos = self.step_into(actions, obs, final, rewards, terminated, truncated)
        return obs, final, rewards, terminated, truncated, final_infos

    def step_into(self, actions: np.ndarray, obs: np.ndarray, final: np.ndarray, rewards: np.ndarray,
                  terminated: np.ndarray, truncated: np.ndarray) -> dict[int, dict[str, Any]]:
        """step(), writing its results into the given arrays ([num_envs, ...] each)."""
        final_infos: dict[int, dict[str, Any]] = {}
        lean_all = self._lean
        # the results gathered in lists and written once per array: one numpy assignment each rather than one per
        # sub-env and array (~0.3 us each, ~10% of a CartPole step)
        finals, nexts, rs, terms, truncs = [], [], [], [], []
        for i, action in enumerate(actions.tolist() if self._ints else actions):
            lean = lean_all[i]
            if lean is None:  # the first steps: every wrapper, so the env checker sees them
                env = self.envs[i]
                o, r, term, trunc, info = env.step(action)
                lean_all[i] = _lean(env)
            else:
                o, r, term, trunc, info = lean[0].step(action)
                limit = lean[1]
                if limit is not None:  # TimeLimit.step's own lines, on its own counter
                    limit._elapsed_steps += 1
                    if limit._elapsed_steps >= limit._max_episode_steps:
                        trunc = True
            finals.append(o)
            rs.append(r)
            terms.append(term)
            truncs.append(trunc)
            if term or trunc:
                if self.infos:
                    final_infos[i] = info
                finals[-1] = np.array(o)  # before the reset, which may write into the array the env returned
                nexts.append(self.envs[i].reset()[0])
            else:
                nexts.append(o)
        if finals:
            final[:], obs[:] = finals, nexts
            rewards[:], terminated[:], truncated[:] = rs, terms, truncs
        return final_infos

    def close(self) -> None:
        for env in self.envs:
            env.close()


_PASS_THROUGH = (OrderEnforcing, PassiveEnvChecker)


def _lean(env: gym.Env) -> tuple[gym.Env, Any] | None:
    """(inner, limit): step `inner` and count `limit` (a TimeLimit, or None) in place of stepping `env`, for the same
    result. From the outside in it passes over the wrappers gym.make adds to every env that do nothing on a step once
    the env runs: OrderEnforcing (it only refuses a step before the first reset, which the vector env always makes)
    and PassiveEnvChecker once it has checked its first steps, and takes the first TimeLimit over (its counter, reset
    by its own reset()). Only those exact classes: any other wrapper, or one of theirs subclassed, stops the descent
    and is stepped with all below it. None while an env checker has not yet checked its first steps."""
    limit = None
    inner = env
    while True:
        kind = type(inner)
        if kind is TimeLimit and limit is None:
            limit = inner
        elif kind is PassiveEnvChecker:
            if not all(getattr(inner, flag, True) for flag in ("checked_reset", "checked_step", "checked_data_reuse")):
                return None
        elif kind not in _PASS_THROUGH:
            return inner, limit
        inner = inner.env


class _IntDiscrete(gym.spaces.Discrete):
    """A Discrete that answers `contains` for a Python int with two comparisons. Discrete.contains converts the int
    to numpy and compares numpy scalars (~2 us; CartPole, Acrobot, MountainCar and others assert it on every step,
    ~35% of CartPole's step); for an int the answer is the same: start <= x < start + n."""

    def contains(self, x: Any) -> bool:
        if type(x) is int:
            return self._first <= x < self._end
        return super().contains(x)


def _fast_int_actions(env: gym.Env) -> None:
    """Give the innermost env a copy of its Discrete action space that checks Python ints fast (_IntDiscrete): equal
    to it, with the same random generator. Any other space, or an env whose space cannot be set, is left as it is."""
    inner = env.unwrapped
    space = getattr(inner, "action_space", None)
    if type(space) is not gym.spaces.Discrete:
        return
    fast = copy.copy(space)
    fast.__class__ = _IntDiscrete
    fast._first, fast._end = int(space.start), int(space.start) + int(space.n)
    try:
        inner.action_space = fast
    except AttributeError:
        pass


# the control block of a SplitVecEnv worker: 8 int64 (one cache line), written by the main process (M) or the worker (W)
_REQ, _CMD, _ARG, _HAS_ARG, _REP, _KIND, _W_SLEEPS, _M_SLEEPS = range(8)
_STEP, _RESET, _CLOSE = 1, 2, 3  # commands
_OK, _OK_INFOS, _ERROR = 0, 1, 2  # replies (_OK_INFOS and _ERROR send their infos / message down the pipe)
# x86's total store order keeps each side's writes in order for the other: the data before the sequence number that
# publishes it. There both sides spin on the numbers (a round trip of ~2 us against ~70-120 us through a pipe, which
# on 64 CartPoles per step would cost more than the step) and sleep on a semaphore only after a while without news.
# Other CPUs may reorder the writes, so there every message goes through the semaphores, whose operations order them.
_SPIN = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
_WORKER_SPIN_S = 0.002  # a worker waits this long for the next step before it sleeps (a rollout step is far shorter)
_MAIN_SPIN_S = 0.02  # the main process waits this long for a worker's reply before it sleeps
_NAP_S = 0.01  # a sleeper rechecks this often (a wake-up lost to a race costs at most this once)


def _await(ctrl: np.ndarray, field: int, old: int, sleeps: int, sem: Any, spin_s: float,
           alive: Callable[[], bool]) -> None:
    """Wait until ctrl[field] != old: spin (yielding the core to anything else that wants it) for spin_s, then sleep on
    `sem` with ctrl[sleeps] set so the other side wakes it; every nap, `alive()` must still hold."""
    if not _SPIN:
        # one release per message (see _signal): acquiring it orders the message's data before what this side reads
        while not sem.acquire(timeout=_NAP_S):
            if not alive():
                return
        return
    start = time.perf_counter()
    while ctrl[field] == old:
        if time.perf_counter() - start > spin_s:
            break
        os.sched_yield()
    else:
        return
    while ctrl[field] == old:
        ctrl[sleeps] = 1
        if ctrl[field] != old:  # it came as the flag went up (the other side may not have seen the flag)
            ctrl[sleeps] = 0
            break
        sem.acquire(timeout=_NAP_S)
        ctrl[sleeps] = 0
        if not alive():
            return


def _signal(ctrl: np.ndarray, sleeps: int, sem: Any) -> None:
    """Wake the other side if it sleeps (always, where the sleep is the only way: see _SPIN)."""
    if not _SPIN or ctrl[sleeps]:
        sem.release()


class SplitVecEnv:
    """SameStepVecEnv with the sub-envs split into `groups` contiguous groups stepped at the same time: the first in
    this process, each other one in a worker process of its own (one per core, rather than Gymnasium's
    AsyncVectorEnv's one per sub-env). Actions and results travel through shared memory, and so do the commands: a
    control block per worker, which both sides watch (see _SPIN); a pipe carries the infos of finished episodes (only
    with `infos`) and errors. The same sub-envs, seeds and results as SameStepVecEnv, bit for bit."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], groups: int, infos: bool = True) -> None:
        n = len(env_fns)
        cuts = [round(k * n / groups) for k in range(groups + 1)]
        self.bounds = list(zip(cuts[:-1], cuts[1:], strict=True))
        self.local = SameStepVecEnv(env_fns[: cuts[1]], infos=infos)
        self.envs = self.local.envs  # this process's sub-envs (the others live in the workers)
        self.num_envs = n
        self.single_observation_space = self.local.single_observation_space
        self.single_action_space = self.local.single_action_space
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, n)
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        obs_space, act = self.single_observation_space, self.action_space
        workers = groups - 1
        self._shm = {
            "obs": _shared(ctx, (n, *obs_space.shape), obs_space.dtype),
            "final": _shared(ctx, (n, *obs_space.shape), obs_space.dtype),
            "rewards": _shared(ctx, (n,), np.float64),
            "terminated": _shared(ctx, (n,), np.bool_),
            "truncated": _shared(ctx, (n,), np.bool_),
            "actions": _shared(ctx, act.shape, act.dtype),
            "ctrl": _shared(ctx, (max(workers, 1), 8), np.int64),
        }
        self.views = {k: _view(*v) for k, v in self._shm.items()}
        self.ctrl = self.views["ctrl"]
        self.wake_workers = [ctx.Semaphore(0) for _ in range(workers)]
        self.wake_main = [ctx.Semaphore(0) for _ in range(workers)]
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        # the one way workers stop, from close() or, for a SplitVecEnv dropped or left open at exit, from the garbage
        # collector (they ignore SIGTERM, which multiprocessing would send them at exit: see _worker)
        self._finalizer = weakref.finalize(self, _stop_workers, self.ctrl, self.wake_workers, self.procs)
        try:
            for w, (lo, hi) in enumerate(self.bounds[1:]):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(child, CloudpickleWrapper(env_fns[lo:hi]), lo, hi, self._shm,
                                                         w, self.wake_workers[w], self.wake_main[w], infos,
                                                         os.getpid()), daemon=True)
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)
            for conn in self.conns:
                _answer(conn)
        except BaseException:
            self.close()
            raise

    def _request(self, cmd: int, arg: int | None = None) -> None:
        for w in range(len(self.procs)):
            c = self.ctrl[w]
            c[_CMD], c[_ARG], c[_HAS_ARG] = cmd, 0 if arg is None else arg, arg is not None
            c[_REQ] += 1  # published after the command and the actions (see _SPIN)
            _signal(c, _W_SLEEPS, self.wake_workers[w])

    def _reply(self, w: int) -> Any:
        """Worker w's reply to the last request: its infos (or None); its error raised here as one line."""
        c, proc = self.ctrl[w], self.procs[w]
        target = int(c[_REQ])
        while (now := int(c[_REP])) != target:
            if not proc.is_alive():
                raise RLPGError("an environment worker process died (see its output above)")
            _await(c, _REP, now, _M_SLEEPS, self.wake_main[w], _MAIN_SPIN_S, proc.is_alive)
        return None if int(c[_KIND]) == _OK else _answer(self.conns[w], target)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._request(_RESET, seed)
        obs = np.empty_like(self.views["obs"])
        obs[: self.bounds[0][1]], _ = self.local.reset(seed=seed)
        for w, (lo, hi) in enumerate(self.bounds[1:]):
            self._reply(w)
            obs[lo:hi] = self.views["obs"][lo:hi]
        return obs, {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 dict[int, dict[str, Any]]]:
        v = self.views
        v["actions"][:] = actions
        self._request(_STEP)
        mine = self.bounds[0][1]
        # meanwhile the workers step theirs; this process's rows go straight into the shared arrays too
        final_infos = self.local.step_into(actions[:mine], v["obs"][:mine], v["final"][:mine], v["rewards"][:mine],
                                           v["terminated"][:mine], v["truncated"][:mine])
        for w in range(len(self.procs)):
            infos = self._reply(w)
            if infos:
                final_infos.update(infos)
        return (v["obs"].copy(), v["final"].copy(), v["rewards"].copy(), v["terminated"].copy(),
                v["truncated"].copy(), final_infos)

    def close(self) -> None:
        self._finalizer()  # _stop_workers, once
        self.conns, self.procs = [], []
        self.local.close()


def _stop_workers(ctrl: np.ndarray, wakes: list[Any], procs: list[Any]) -> None:
    """Tell every worker still running to close (it closes its envs and exits), wait a little, then kill what is
    left."""
    for w, proc in enumerate(procs):
        if proc.is_alive():
            c = ctrl[w]
            c[_CMD] = _CLOSE
            c[_REQ] += 1
            wakes[w].release()
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def _shared(ctx: Any, shape: tuple[int, ...], dtype: Any) -> tuple[Any, tuple[int, ...], str]:
    dtype = np.dtype(dtype)
    return ctx.RawArray("b", max(1, int(np.prod(shape)) * dtype.itemsize)), shape, dtype.str


def _view(buf: Any, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.dtype(dtype), count=int(np.prod(shape))).reshape(shape)


def _answer(conn: Any, request: int = 0) -> Any:
    """A worker's message about `request` (0: its first, that it built its envs or why not); its error, raised here
    as one line. Messages about earlier requests, whose replies were never read (an interrupted step), are skipped."""
    while True:
        try:
            kind, (about, value) = conn.recv()
        except EOFError:
            raise RLPGError("an environment worker process died (see its output above)") from None
        if about != request:
            continue
        if kind == "error":
            raise RLPGError(f"an environment worker failed: {value}")
        return value


def _worker(conn: Any, fns: Any, lo: int, hi: int, shm: dict[str, Any], w: int, wake: Any, wake_main: Any,
            infos: bool, parent: int) -> None:
    """Steps sub-envs lo..hi-1 of a SplitVecEnv on command (the protocol: SplitVecEnv, _SPIN). Stop signals are left
    to the parent (Ctrl-C and a scheduler's SIGTERM reach the whole process group): it finishes its update, saves
    last.pt and closes the workers, which a worker that died of the signal would turn into an error instead. A worker
    whose parent is gone exits."""
    for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
        if s is not None:
            signal.signal(s, signal.SIG_IGN)
    try:
        envs = SameStepVecEnv(fns.fn, infos=infos)
        views = {k: _view(*v) for k, v in shm.items()}
        conn.send(("ok", (0, None)))
    except Exception as e:
        conn.send(("error", (0, f"{type(e).__name__}: {e}")))
        return
    c = views["ctrl"][w]
    rows = {k: views[k][lo:hi] for k in ("obs", "final", "rewards", "terminated", "truncated", "actions")}
    seen = 0  # requests handled (the first may already be there: the parent sends it as soon as it reads "ok")
    while True:
        _await(c, _REQ, seen, _W_SLEEPS, wake, _WORKER_SPIN_S, lambda: os.getppid() == parent)
        if c[_REQ] == seen:  # the parent is gone
            return
        seen = int(c[_REQ])
        cmd = int(c[_CMD])
        message: Any = None
        try:
            if cmd == _STEP:
                found = envs.step_into(rows["actions"], rows["obs"], rows["final"], rows["rewards"],
                                       rows["terminated"], rows["truncated"])
                if found:
                    message = ("ok", {lo + i: info for i, info in found.items()})
            elif cmd == _RESET:
                rows["obs"][:], _ = envs.reset(seed=int(c[_ARG]) + lo if c[_HAS_ARG] else None)
            elif cmd == _CLOSE:
                envs.close()
        except Exception as e:
            message = ("error", f"{type(e).__name__}: {e}")
        c[_KIND] = _OK if message is None else _ERROR if message[0] == "error" else _OK_INFOS
        c[_REP] = seen  # published after the results (see _SPIN); a message follows down the pipe
        _signal(c, _M_SLEEPS, wake_main)
        if message is not None:
            conn.send((message[0], (seen, message[1])))
        if cmd == _CLOSE:
            return


# the casts GymVecEnv makes in numpy (see _tensor)
_NUMPY_DTYPES = {torch.float32: np.float32, torch.bool: np.bool_}


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
        self.env: SameStepVecEnv | SplitVecEnv = (
            SplitVecEnv(fns, groups, infos=episode_stats) if groups > 1 else SameStepVecEnv(fns, infos=episode_stats))
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self.spec_id = env_id
        self.max_episode_steps: int | None = max_episode_steps or gym.spec(env_id).max_episode_steps
        """the time limit (None: episodes may never end)"""
        self.episode_stats = episode_stats
        self._cpu = self.device.type == "cpu"
        # images stay uint8 / bool (a quarter of the memory; the policy's encoder scales them), the rest float32
        self._obs_dtype = None if image_shape(self.single_observation_space) else torch.float32
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
        return self._tensor(obs, self._obs_dtype)

    def _tensor(self, x: np.ndarray, dtype: torch.dtype | None) -> Tensor:
        """x as a tensor on the device: the vector env returns fresh arrays, so on the CPU one of the right dtype is
        taken as it is, without a copy."""
        t = torch.from_numpy(x)
        if dtype is not None and t.dtype != dtype:
            # numpy's cast (the same IEEE rounding as torch's), ~2 us cheaper than a torch op on a small array
            t = torch.from_numpy(x.astype(_NUMPY_DTYPES[dtype])) if dtype in _NUMPY_DTYPES else t.to(dtype)
        return t if self._cpu else t.to(self.device, non_blocking=True)

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]:
        obs, _ = self.env.reset(seed=seed)
        if seed is not None:
            self.env.action_space.seed(seed)
        return self._obs(obs), {}

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        a = (actions if actions.device.type == "cpu" and not actions.requires_grad else actions.detach().cpu()).numpy()
        if self._low is not None:
            a = np.clip(a, self._low, self._high)
        elif self._action_start is not None:
            a = a + self._action_start
        obs, final, reward, terminated, truncated, final_infos = self.env.step(a)
        out = {"final_obs": self._obs(final)}
        if self.episode_stats:
            out.update(self._episodes(final_infos))
        return (
            self._obs(obs),
            self._tensor(reward, torch.float32),
            self._tensor(terminated, torch.bool),
            self._tensor(truncated, torch.bool),
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

