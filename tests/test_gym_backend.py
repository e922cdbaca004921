"""The Gymnasium backend's own vector loop (SameStepVecEnv) steps exactly as Gymnasium's SyncVectorEnv in SAME_STEP
autoreset mode: the same observations, final observations, rewards and flags, bit for bit, over episodes that end by
termination and by truncation, with discrete and continuous (clipped) actions, and the same episode statistics."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlpg.envs import make
from rlpg.envs.gym import GymVecEnv, SameStepVecEnv, SplitVecEnv
from rlpg.errors import RLPGError


def reference_steps(env_id, num_envs, seed, actions, env_kwargs=None):
    """(obs, final_obs, rewards, terminated, truncated) per step from gymnasium's SyncVectorEnv, as rlpg read it."""
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}, **(env_kwargs or {}))
    out = [(env.reset(seed=seed)[0], None, None, None, None)]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        final = np.array(obs, copy=True)
        for i in np.flatnonzero(info.get("_final_obs", np.zeros(num_envs, bool))):
            final[i] = info["final_obs"][i]
        out.append((obs, final, reward, terminated, truncated))
    env.close()
    return out


@pytest.mark.parametrize("env_id, steps", [("CartPole-v1", 300), ("Pendulum-v1", 450), ("MountainCar-v0", 420),
                                           ("Acrobot-v1", 520)])
def test_same_steps_as_gymnasium_sync_vector_env(env_id, steps):
    n, seed = 5, 11
    space = gym.make(env_id).action_space
    space.seed(3)
    actions = [np.stack([space.sample() for _ in range(n)]) for _ in range(steps)]
    ref = reference_steps(env_id, n, seed, actions)
    for env in (SameStepVecEnv([lambda: gym.make(env_id)] * n), SplitVecEnv([lambda: gym.make(env_id)] * n, 2)):
        check_against_reference(env, env_id, seed, actions, ref)


def check_against_reference(env, env_id, seed, actions, ref):
    obs, _ = env.reset(seed=seed)
    assert np.array_equal(obs, ref[0][0])
    ends = {"terminated": 0, "truncated": 0}
    for t, a in enumerate(actions, start=1):
        obs, final, reward, terminated, truncated, final_infos = env.step(a)
        r_obs, r_final, r_reward, r_term, r_trunc = ref[t]
        assert np.array_equal(obs, r_obs) and np.array_equal(final, r_final), t
        assert np.array_equal(reward, r_reward) and reward.dtype == r_reward.dtype
        assert np.array_equal(terminated, r_term) and np.array_equal(truncated, r_trunc)
        assert sorted(final_infos) == np.flatnonzero(terminated | truncated).tolist()
        ends["terminated"] += int(terminated.sum())
        ends["truncated"] += int(truncated.sum())
    env.close()
    if env_id in ("Pendulum-v1", "MountainCar-v0", "Acrobot-v1"):
        assert ends["truncated"] > 0  # time limits were hit (random actions rarely finish these)
    if env_id == "CartPole-v1":
        assert ends["terminated"] > 0


def test_returned_arrays_are_not_overwritten_by_the_next_step():
    env = SameStepVecEnv([lambda: gym.make("CartPole-v1")] * 3)
    obs0, _ = env.reset(seed=0)
    first = obs0.copy()
    obs1, final1, reward1, *_ = env.step(np.zeros(3, dtype=np.int64))
    kept = obs1.copy(), final1.copy(), reward1.copy()
    env.step(np.ones(3, dtype=np.int64))
    assert np.array_equal(obs0, first)
    assert all(np.array_equal(a, b) for a, b in zip((obs1, final1, reward1), kept, strict=True))
    env.close()


def test_gym_vec_env_clips_box_actions_and_reports_final_obs():
    env = make("Pendulum-v1", 2, backend="gymnasium")
    obs, _ = env.reset(seed=0)
    low = torch.full((2, 1), -100.0)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(low)
    # torque clipped to -2 (a torque of -100 would give a far larger cost); truncation at 200 with final_obs set
    assert bool(truncated.all()) and not bool(terminated.any())
    assert not torch.equal(info["final_obs"], obs)
    assert float(reward.min()) > -20
    env.close()


def test_async_and_own_loop_agree():
    """`--async-envs` (gymnasium's AsyncVectorEnv) and the default own loop see the same episodes."""
    a, b = (GymVecEnv("CartPole-v1", 3, async_envs=flag) for flag in (False, True))
    try:
        oa, _ = a.reset(seed=4)
        ob, _ = b.reset(seed=4)
        assert torch.equal(oa, ob)
        g = torch.Generator().manual_seed(0)
        for _ in range(60):
            act = torch.randint(0, 2, (3,), generator=g)
            sa, sb = a.step(act), b.step(act)
            for x, y in zip(sa[:4], sb[:4], strict=True):
                assert torch.equal(x, y)
            assert torch.equal(sa[4]["final_obs"], sb[4]["final_obs"])
    finally:
        a.close()
        b.close()


class Breaks(gym.Env):
    """Fails on its third step."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t == 3:
            raise ValueError("sensor offline")
        return np.zeros(2, np.float32), 1.0, False, False, {}


class Fine(Breaks):
    def step(self, action):
        return np.zeros(2, np.float32), 1.0, False, False, {}


def test_a_failing_env_in_a_worker_is_one_clear_error():
    env = SplitVecEnv([Fine, Fine, Breaks, Breaks], 2)  # sub-envs 2 and 3 live in the worker
    procs = list(env.procs)
    assert len(procs) == 1 and procs[0].is_alive()
    try:
        env.reset(seed=0)
        env.step(np.zeros(4, dtype=np.int64))
        env.step(np.zeros(4, dtype=np.int64))
        with pytest.raises(RLPGError, match="sensor offline"):
            env.step(np.zeros(4, dtype=np.int64))
    finally:
        env.close()
    assert not procs[0].is_alive()


def test_workers_leave_stop_signals_to_the_parent():
    """Ctrl-C or a scheduler's SIGTERM reaches the workers too; they keep stepping so the trainer can finish its update
    and save."""
    import os
    import signal

    env = SplitVecEnv([lambda: gym.make("CartPole-v1")] * 4, 2)
    try:
        env.reset(seed=0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            os.kill(env.procs[0].pid, sig)
        env.step(np.zeros(4, dtype=np.int64))
        assert env.procs[0].is_alive()
    finally:
        env.close()


def test_sub_envs_are_stepped_beneath_gym_makes_pass_through_wrappers_only():
    """After its checked first steps a CartPole is stepped beneath OrderEnforcing and PassiveEnvChecker, its TimeLimit
    counted in place (the reference tests above check every result); any other wrapper on top is stepped as it is."""
    from gymnasium.envs.classic_control import CartPoleEnv
    from gymnasium.wrappers import TimeLimit

    class Custom(gym.Wrapper):
        pass

    env = SameStepVecEnv([lambda: gym.make("CartPole-v1"), lambda: Custom(gym.make("CartPole-v1"))])
    env.reset(seed=0)
    assert env._lean == [None, None]
    for _ in range(3):
        env.step(np.zeros(2, dtype=np.int64))
    inner, limit = env._lean[0]
    assert type(inner) is CartPoleEnv and type(limit) is TimeLimit and limit is env.envs[0]
    assert env._lean[1] == (env.envs[1], None)
    env.close()


def test_int_discrete_answers_contains_as_discrete_does():
    from rlpg.envs.gym import _fast_int_actions

    env = gym.make("CartPole-v1")
    original = env.unwrapped.action_space
    original.seed(7)
    _fast_int_actions(env)
    fast = env.unwrapped.action_space
    assert fast is not original and fast == original and fast.np_random is original.np_random
    shifted = gym.spaces.Discrete(3, start=-1)
    holder = gym.make("CartPole-v1").unwrapped
    holder.action_space = shifted
    _fast_int_actions(holder)
    for space, ref in ((fast, gym.spaces.Discrete(2)), (holder.action_space, gym.spaces.Discrete(3, start=-1))):
        for x in (-2, -1, 0, 1, 2, 3, 2**70, np.int64(1), np.int32(-1), np.int64(5), True, 1.0, "1", None):
            assert space.contains(x) == ref.contains(x), (space, x)


def test_a_worker_that_dies_is_one_clear_error_not_a_hang():
    import os
    import signal

    env = SplitVecEnv([lambda: gym.make("CartPole-v1")] * 4, 2)
    try:
        env.reset(seed=0)
        env.step(np.zeros(4, dtype=np.int64))
        os.kill(env.procs[0].pid, signal.SIGKILL)
        env.procs[0].join(timeout=10)
        with pytest.raises(RLPGError, match="worker process died"):
            env.step(np.zeros(4, dtype=np.int64))
    finally:
        env.close()


def test_a_split_env_dropped_without_close_stops_its_workers():
    import gc

    env = SplitVecEnv([lambda: gym.make("CartPole-v1")] * 4, 2)
    env.reset(seed=0)
    procs = list(env.procs)
    del env
    gc.collect()
    for proc in procs:
        proc.join(timeout=10)
        assert not proc.is_alive()


def test_split_env_without_spinning_gives_the_same_steps(monkeypatch):
    """Where the CPU may reorder writes (not x86) every message goes through the semaphores; that protocol gives the
    same results (the workers are forked with the flag as set here)."""
    import rlpg.envs.gym as gym_module

    monkeypatch.setattr(gym_module, "_SPIN", False)
    n, seed = 5, 11
    space = gym.make("CartPole-v1").action_space
    space.seed(3)
    actions = [np.stack([space.sample() for _ in range(n)]) for _ in range(300)]
    ref = reference_steps("CartPole-v1", n, seed, actions)
    check_against_reference(SplitVecEnv([lambda: gym.make("CartPole-v1")] * n, 2), "CartPole-v1", seed, actions, ref)


class Ends(Breaks):
    """Ends an episode on every step; its info counts its steps over its life."""

    def __init__(self):
        self.steps = 0

    def step(self, action):
        self.steps += 1
        return np.zeros(2, np.float32), 1.0, True, False, {"steps": self.steps}


def test_the_infos_of_a_step_whose_reply_was_never_read_are_not_taken_for_the_next():
    import rlpg.envs.gym as gym_module

    env = SplitVecEnv([Ends, Ends], 2, infos=True)  # sub-env 1 lives in the worker
    try:
        env.reset(seed=0)
        env.views["actions"][:] = 0
        env._request(gym_module._STEP)  # a step interrupted before its reply was read: the worker's sub-env steps
        ctrl = env.ctrl[0]
        while ctrl[gym_module._REP] != ctrl[gym_module._REQ]:  # and replies, its infos waiting in the pipe
            pass
        *_, infos = env.step(np.zeros(2, dtype=np.int64))
        assert infos == {0: {"steps": 1}, 1: {"steps": 2}}
    finally:
        env.close()


class _BufferEnv(gym.Env):
    """Returns one array it keeps writing into (as some envs do): step and reset both overwrite it."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.buf = np.zeros(2, np.float32)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.buf[:] = -1.0
        return self.buf, {}

    def step(self, action):
        self.t += 1
        self.buf[:] = self.t
        return self.buf, 1.0, self.t == 3, False, {}


def test_an_env_that_rewrites_its_observation_array_keeps_its_final_observation():
    env = SameStepVecEnv([_BufferEnv, _BufferEnv])
    env.reset(seed=0)
    for t in (1, 2):
        obs, final, *_ = env.step(np.zeros(2, dtype=np.int64))
        assert (obs == t).all() and (final == t).all()
    obs, final, _, terminated, _, _ = env.step(np.zeros(2, dtype=np.int64))
    assert terminated.all() and (final == 3).all() and (obs == -1).all()  # the last observation, then the reset's
