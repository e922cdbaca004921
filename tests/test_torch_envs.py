"""The torch-native classic-control envs against Gymnasium's own: step for step, resets, seeds, autoreset, registration.

The step-for-step test syncs each torch sub-env to a Gymnasium env (`gymnasium.make(id)`, TimeLimit included) before
every step, from states spread over the whole state space so that termination, time-limit truncation, clipping,
wrapping and the walls all happen, and compares obs, reward, terminated and truncated.
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.acrobot import wrap as gym_wrap
from gymnasium.vector import AutoresetMode

from rlpg.envs import find_wrapper, make
from rlpg.envs.acrobot import wrap
from rlpg.envs.cartpole import CartPole
from rlpg.envs.native import TORCH_ENVS, NumpyVectorEnv, register_gymnasium
from rlpg.envs.torch_base import TorchVecEnv
from rlpg.errors import ConfigError

ENV_IDS = list(TORCH_ENVS)
PI = math.pi

# Gymnasium's reset distributions (classic_control sources): uniform in [low, high] per state coordinate
RESET_BOUNDS = {
    "CartPole-v1": ([-0.05] * 4, [0.05] * 4),
    "Acrobot-v1": ([-0.1] * 4, [0.1] * 4),
    "Pendulum-v1": ([-PI, -1.0], [PI, 1.0]),
    "MountainCar-v0": ([-0.6, 0.0], [-0.4, 0.0]),
    "MountainCarContinuous-v0": ([-0.6, 0.0], [-0.4, 0.0]),
}
# states spread over the whole state space, so one batch of steps hits termination and the walls and bounds
WIDE_STATES = {
    "CartPole-v1": ([-2.5, -3.0, -0.25, -3.0], [2.5, 3.0, 0.25, 3.0]),
    "Acrobot-v1": ([-PI, -PI, -4 * PI, -9 * PI], [PI, PI, 4 * PI, 9 * PI]),
    "Pendulum-v1": ([-20.0, -8.0], [20.0, 8.0]),  # th is never wrapped in Gymnasium: try large angles
    "MountainCar-v0": ([-1.2, -0.07], [0.6, 0.07]),
    "MountainCarContinuous-v0": ([-1.2, -0.07], [0.6, 0.07]),
}
LEFT_WALL = np.float32(-1.2)
# events that must have happened in the step-for-step test, so that it checks the code that handles them
MUST_HAPPEN = {
    "CartPole-v1": {"terminated": lambda o, te: te.any()},
    "Acrobot-v1": {
        "terminated": lambda o, te: te.any(),
        "dtheta2 bound": lambda o, te: (np.abs(o[:, 5]) > 28.27).any(),  # 9 * pi = 28.274
    },
    "Pendulum-v1": {"speed clip": lambda o, te: (np.abs(o[:, 2]) == 8.0).any()},
    "MountainCar-v0": {
        "terminated": lambda o, te: te.any(),
        "left wall": lambda o, te: ((o[:, 0] == LEFT_WALL) & (o[:, 1] == 0)).any(),
    },
    "MountainCarContinuous-v0": {
        "terminated": lambda o, te: te.any(),
        "left wall": lambda o, te: ((o[:, 0] == LEFT_WALL) & (o[:, 1] == 0)).any(),
    },
}


def random_actions(space: gym.Space, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n] ints for Discrete; [n, A] floats 1.5x beyond the bounds for Box, so the clipping is exercised."""
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(0, space.n, size=n)
    return rng.uniform(1.5 * space.low, 1.5 * space.high, size=(n, *space.shape)).astype(np.float32)


def wide_state(env_id: str, rng: np.random.Generator) -> np.ndarray:
    low, high = WIDE_STATES[env_id]
    return rng.uniform(low, high)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spaces_and_time_limit_match_gymnasium(env_id: str) -> None:
    env, ref = TORCH_ENVS[env_id](3), gym.make(env_id)
    assert env.spec_id == env_id
    assert env.single_observation_space == ref.observation_space
    assert env.single_action_space == ref.action_space
    assert env.max_episode_steps == gym.spec(env_id).max_episode_steps
    assert env.observation_space.shape == (3, *ref.observation_space.shape)
    assert isinstance(env.device, torch.device) and env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP


def clip_to(space: gym.Space, actions: np.ndarray) -> np.ndarray:
    return np.clip(actions, space.low, space.high) if isinstance(space, gym.spaces.Box) else actions


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_steps_match_gymnasium(env_id: str) -> None:
    """64 envs x 100 steps from the same state and actions as Gymnasium's env: same obs, reward, done flags, state."""
    n, steps, rng = 64, 100, np.random.default_rng(0)
    env = TORCH_ENVS[env_id](n, seed=0)
    refs = [gym.make(env_id) for _ in range(n)]
    max_steps = env.max_episode_steps
    for ref in refs:  # start anywhere in the state space, at most 150 steps before the time limit
        ref.reset(seed=int(rng.integers(1 << 30)))
        ref.unwrapped.state = wide_state(env_id, rng)
        ref._elapsed_steps = max_steps - int(rng.integers(1, 150))  # gymnasium.wrappers.TimeLimit's counter
    ref_obs, ref_term, num_truncated = [], [], 0
    for _ in range(steps):
        env.state = torch.tensor(np.stack([np.asarray(ref.unwrapped.state, dtype=np.float64) for ref in refs]))
        env.elapsed = torch.tensor([ref._elapsed_steps for ref in refs])
        actions = random_actions(env.single_action_space, n, rng)
        obs, reward, terminated, truncated, info = env.step(torch.as_tensor(actions))
        # the env boundary clips Box actions for every backend, as rlpg's Gymnasium adapter does
        clipped = clip_to(env.single_action_space, actions)
        expected = [ref.step(a) for ref, a in zip(refs, clipped, strict=True)]
        exp_obs = np.stack([e[0] for e in expected])
        exp_term, exp_trunc = np.array([e[2] for e in expected]), np.array([e[3] for e in expected])
        np.testing.assert_allclose(info["final_obs"].numpy(), exp_obs, rtol=0, atol=1e-5)
        np.testing.assert_allclose(reward.numpy(), np.array([e[1] for e in expected]), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(terminated.numpy(), exp_term)
        np.testing.assert_array_equal(truncated.numpy(), exp_trunc)
        done = torch.as_tensor(exp_term | exp_trunc)
        assert torch.equal(obs[~done], info["final_obs"][~done])
        exp_state = np.stack([np.asarray(ref.unwrapped.state, dtype=np.float64) for ref in refs])
        np.testing.assert_allclose(env.state[~done].double().numpy(), exp_state[~done.numpy()], rtol=0, atol=1e-5)
        assert (env.elapsed[done] == 0).all() and (env.elapsed[~done] > 0).all()
        ref_obs.append(exp_obs)
        ref_term.append(exp_term)
        num_truncated += exp_trunc.sum()
        for ref in (ref for ref, d in zip(refs, done.tolist(), strict=True) if d):
            ref.reset()
            ref.unwrapped.state = wide_state(env_id, rng)
            ref._elapsed_steps = max_steps - int(rng.integers(1, 150))
    assert num_truncated > 0
    all_obs, all_term = np.concatenate(ref_obs), np.concatenate(ref_term)
    for event, happened in MUST_HAPPEN[env_id].items():
        assert happened(all_obs, all_term), f"no '{event}' in the test rollout: the test checked nothing about it"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_truncation_exactly_at_max_episode_steps(env_id: str) -> None:
    env = TORCH_ENVS[env_id](8, seed=1, max_episode_steps=5)
    obs, _ = env.reset()
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 11):
        prev_state = env.state
        actions = sample_actions(env, gen)
        obs, _, terminated, truncated, info = env.step(actions)
        assert not terminated.any()  # no task can end within 10 steps of its reset states
        assert bool(truncated.all()) == (t % 5 == 0) and bool(truncated.any()) == (t % 5 == 0)
        if t % 5 == 0:  # final_obs is the step from the old state, obs the first one of a new episode
            expected_final, _, _ = env._transition(prev_state, env._check_actions(actions))
            torch.testing.assert_close(info["final_obs"], env._observation(expected_final))
            assert not torch.isclose(obs, info["final_obs"]).all(dim=1).any()
            assert (env.elapsed == 0).all()
        else:
            assert torch.equal(obs, info["final_obs"]) and (env.elapsed == t % 5).all()


def sample_actions(env: TorchVecEnv, gen: torch.Generator) -> torch.Tensor:
    space = env.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(0, int(space.n), (env.num_envs,), generator=gen, device=env.device)
    low, high = float(space.low[0]), float(space.high[0])
    return torch.rand((env.num_envs, *space.shape), generator=gen, device=env.device) * (high - low) + low


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_distribution_matches_gymnasium(env_id: str) -> None:
    """Reset states lie in Gymnasium's ranges and are spread uniformly over them; Gymnasium's resets span the same."""
    env = TORCH_ENVS[env_id](4096)
    env.reset(seed=0)
    states = env.state.double().numpy()
    low, high = np.array(RESET_BOUNDS[env_id][0]), np.array(RESET_BOUNDS[env_id][1])
    width = high - low
    random = width > 0  # all but MountainCar's velocity, which starts at exactly 0

    def assert_uniform(x: np.ndarray) -> None:  # x: [num_samples, S]
        assert (x >= low).all() and (x <= high).all()
        assert (np.abs(x.min(0) - low) <= 0.01 * width).all() and (np.abs(x.max(0) - high) <= 0.01 * width).all()
        assert (np.abs(x.mean(0) - (low + high) / 2) <= 0.02 * width).all()
        np.testing.assert_allclose(x.std(0)[random], width[random] / math.sqrt(12), rtol=0.05)

    assert_uniform(states)
    ref = gym.make(env_id).unwrapped
    ref_states = []
    for seed in range(300):
        ref.reset(seed=seed)
        ref_states.append(np.asarray(ref.state, dtype=np.float64))
    ref_states = np.stack(ref_states)  # the bounds above are Gymnasium's: its resets fill them too
    assert (ref_states >= low).all() and (ref_states <= high).all()
    assert (np.abs(ref_states.min(0) - low) <= 0.03 * width).all()
    assert (np.abs(ref_states.max(0) - high) <= 0.03 * width).all()
    # and the autoreset draws come from the same distribution
    env.elapsed = torch.full((4096,), env.max_episode_steps - 1)
    env.step(sample_actions(env, torch.Generator().manual_seed(0)))
    reset_states = env.state.double().numpy()
    assert not np.array_equal(reset_states, states)
    assert_uniform(reset_states)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_rollout(env_id: str) -> None:
    def rollout(env: TorchVecEnv, seed: int | None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(123)  # the same actions for every rollout
        obs = [env.reset(seed=seed)[0]]
        for _ in range(60):
            obs.append(env.step(sample_actions(env, gen))[0])
        return torch.stack(obs)

    cls = TORCH_ENVS[env_id]
    kwargs = {"max_episode_steps": 20}  # so autoreset draws are part of the rollout
    first = rollout(cls(16, **kwargs), seed=7)
    assert torch.equal(first, rollout(cls(16, **kwargs), seed=7))
    assert torch.equal(first, rollout(cls(16, seed=7, **kwargs), seed=None))  # seed at construction == at reset
    env = cls(16, **kwargs)
    rollout(env, seed=8)
    assert torch.equal(first, rollout(env, seed=7))  # reseeding a used env restarts its stream
    other = rollout(cls(16, **kwargs), seed=8)
    assert (first[0] != other[0]).any(dim=1).all() and (first[41] != other[41]).any(dim=1).all()


def test_same_step_autoreset_after_termination() -> None:
    """CartPole rows pushed past the edge terminate: obs is a fresh reset state, final_obs the terminal obs."""
    env = TORCH_ENVS["CartPole-v1"](8, seed=0)
    env.reset()
    state = env.state
    state[:3] = torch.tensor([2.39, 5.0, 0.0, 0.0])  # x + tau * x_dot = 2.49 > 2.4
    env.state = state
    env.elapsed = torch.arange(8) + 10
    ref = gym.make("CartPole-v1").unwrapped
    ref.reset()
    ref.state = np.array([2.39, 5.0, 0.0, 0.0])
    terminal_obs, ref_reward, ref_terminated, _, _ = ref.step(1)
    obs, reward, terminated, truncated, info = env.step(torch.ones(8, dtype=torch.int64))
    assert ref_terminated and terminated[:3].all() and not terminated[3:].any() and not truncated.any()
    assert (reward == ref_reward).all()
    torch.testing.assert_close(info["final_obs"][:3], torch.as_tensor(terminal_obs).expand(3, 4))
    assert (obs[:3].abs() <= 0.05).all() and torch.equal(obs[:3], env.state[:3].float())
    assert len(set(obs[:3, 0].tolist())) == 3  # each row draws its own reset state
    assert torch.equal(obs[3:], info["final_obs"][3:])
    assert env.elapsed.tolist() == [0, 0, 0, 14, 15, 16, 17, 18]


def test_cartpole_physics_parameters() -> None:
    """Default constants are Gymnasium's; a heavier, longer pole follows Gymnasium's formula with those constants
    (and moves differently from the default pole); a non-positive constant is rejected."""
    default = TORCH_ENVS["CartPole-v1"](16, seed=0)
    ref = gym.make("CartPole-v1").unwrapped
    for name in ("gravity", "masscart", "masspole", "length", "force_mag", "total_mass", "polemass_length", "tau"):
        assert getattr(default, name) == getattr(ref, name), name
    heavy = find_wrapper(make("CartPole-v1", 16, env_kwargs={"masspole": 0.5, "length": 1.0}), CartPole)
    ref.masspole, ref.length = 0.5, 1.0
    ref.total_mass, ref.polemass_length = ref.masspole + ref.masscart, ref.masspole * ref.length
    rng = np.random.default_rng(0)
    states = rng.uniform([-1.0, -1.0, -0.15, -1.0], [1.0, 1.0, 0.15, 1.0], size=(16, 4))
    actions = rng.integers(0, 2, size=16)
    expected = []
    for state, action in zip(states, actions, strict=True):
        ref.reset()
        ref.state = state.copy()
        expected.append(ref.step(int(action))[0])
    moved = {}
    for env in (heavy, default):
        env.reset()
        env.state = torch.tensor(states)
        moved[env] = env.step(torch.as_tensor(actions))[4]["final_obs"].numpy()
    np.testing.assert_allclose(moved[heavy], np.stack(expected), rtol=0, atol=1e-5)
    theta_dot_change = np.abs(moved[heavy][:, 3] - moved[default][:, 3])
    assert (theta_dot_change > 1e-3).all()  # the pole's angular acceleration depends on its mass and length
    for bad in ({"masspole": 0.0}, {"length": -1.0}, {"gravity": float("nan")}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TORCH_ENVS["CartPole-v1"](2, **bad)


def test_state_setter_keeps_elapsed_and_checks_shape() -> None:
    env = TORCH_ENVS["Pendulum-v1"](4)
    env.reset(seed=0)
    env.elapsed = torch.tensor([1, 2, 3, 4])
    env.state = torch.zeros(4, 2)
    assert env.elapsed.tolist() == [1, 2, 3, 4] and torch.equal(env.state, torch.zeros(4, 2, dtype=env.state_dtype))
    with pytest.raises(ValueError, match="shape"):
        env.state = torch.zeros(4, 3)


def test_bad_actions_and_step_before_reset_raise() -> None:
    env = TORCH_ENVS["CartPole-v1"](4)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(4, dtype=torch.int64))
    env.reset(seed=0)
    with pytest.raises(TypeError, match="integer"):
        env.step(torch.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(TypeError, match="Tensor"):
        env.step(np.zeros(4, dtype=np.int64))  # type: ignore[arg-type]
    pendulum = TORCH_ENVS["Pendulum-v1"](4)
    pendulum.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        pendulum.step(torch.zeros(4, 2))


def test_discrete_actions_accept_n_by_1() -> None:
    a, b = TORCH_ENVS["Acrobot-v1"](16, seed=0), TORCH_ENVS["Acrobot-v1"](16, seed=0)
    a.reset(), b.reset()
    actions = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(0))
    for x, y in zip(a.step(actions)[:4], b.step(actions[:, None])[:4], strict=True):
        assert torch.equal(x, y)


def test_acrobot_wrap_matches_gymnasium() -> None:
    x = torch.cat([torch.linspace(-30.0, 30.0, 2001, dtype=torch.float64), torch.tensor([-PI, PI, 3 * PI, -3 * PI])])
    expected = torch.tensor([gym_wrap(v, -PI, PI) for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(wrap(x, -PI, PI), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_reads_no_tensor_value_on_the_host(env_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU stand-in for the CUDA sync check: step must not branch on, or copy out, any tensor value."""
    env = TORCH_ENVS[env_id](8, seed=0, max_episode_steps=3)
    env.reset()
    actions = [sample_actions(env, torch.Generator().manual_seed(i)) for i in range(6)]

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("step read a tensor value on the host")

    for name in ("__bool__", "item", "tolist", "numpy", "cpu", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for a in actions:  # crosses the time limit twice
        env.step(a)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_registration_with_numpy(env_id: str) -> None:
    ids = register_gymnasium()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert register_gymnasium() == ids  # idempotent and silent
        envs = gym.make_vec(f"rlpg/{env_id}", num_envs=8, vectorization_mode="vector_entry_point", device="cpu")
    assert isinstance(envs, gym.vector.VectorEnv) and isinstance(envs, NumpyVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP  # Gymnasium's default
    assert envs.env.device == torch.device("cpu") and envs.env.max_episode_steps == gym.spec(env_id).max_episode_steps
    same_step = {"autoreset_mode": AutoresetMode.SAME_STEP}
    ref = gym.make_vec(env_id, 8, vectorization_mode="sync", vector_kwargs=same_step, max_episode_steps=10)
    assert envs.single_observation_space == ref.single_observation_space
    torch_env = TORCH_ENVS[env_id](8, seed=5, max_episode_steps=10)
    envs = gym.make_vec(f"rlpg/{env_id}", num_envs=8, max_episode_steps=10, **same_step)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, info = envs.reset(seed=5)
    assert isinstance(obs, np.ndarray) and obs.dtype == np.float32 and obs.shape == ref.observation_space.shape
    np.testing.assert_array_equal(obs, torch_env.reset()[0].numpy())
    envs.action_space.seed(0)
    ref.reset(seed=0)
    final_keys = {"final_obs", "_final_obs", "final_info", "_final_info"}
    for _ in range(10):
        actions = envs.action_space.sample()  # numpy actions
        obs, reward, terminated, truncated, info = envs.step(actions)
        t_obs, t_reward, t_terminated, t_truncated, t_info = torch_env.step(torch.as_tensor(actions))
        for x, y in ((obs, t_obs), (reward, t_reward), (terminated, t_terminated), (truncated, t_truncated)):
            assert isinstance(x, np.ndarray) and x.dtype == y.numpy().dtype
            np.testing.assert_array_equal(x, y.numpy())
        done = terminated | truncated
        assert set(info) == (final_keys if done.any() else set())
        if done.any():  # Gymnasium's SAME_STEP layout: an object array of final obs, None where not done
            assert info["final_obs"].dtype == object and np.array_equal(info["_final_obs"], done)
            assert all(o is None for o in info["final_obs"][~done]) and info["final_info"] == {}
            np.testing.assert_array_equal(np.stack(list(info["final_obs"][done])), t_info["final_obs"].numpy()[done])
        ref_info = ref.step(actions)[4]
    assert truncated.all() and set(ref_info) == final_keys  # step 10: time limit for every row, in both
    envs.close()


def test_gymnasium_stateful_vector_wrappers_accept_the_registered_envs() -> None:
    register_gymnasium()
    envs = gym.make_vec("rlpg/CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point")
    wrapped = gym.wrappers.vector.NormalizeReward(gym.wrappers.vector.NormalizeObservation(envs))
    obs, _ = wrapped.reset(seed=0)
    for _ in range(30):
        obs, reward, *_ = wrapped.step(envs.action_space.sample())
    assert obs.shape == (4, 4) and np.isfinite(obs).all() and np.isfinite(reward).all()
    disabled = gym.make_vec("rlpg/CartPole-v1", num_envs=4, autoreset_mode="Disabled")  # by name, as Gymnasium
    assert gym.wrappers.vector.NormalizeReward(disabled).metadata["autoreset_mode"] == AutoresetMode.DISABLED
    same_step = gym.make_vec("rlpg/CartPole-v1", num_envs=4, autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises((ValueError, AssertionError), match="autoreset_mode"):  # Gymnasium refuses SAME_STEP here
        gym.wrappers.vector.NormalizeObservation(same_step)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP  # set per instance, not on the class
    assert TORCH_ENVS["CartPole-v1"].metadata["autoreset_mode"] == AutoresetMode.SAME_STEP  # rlpg's own envs


@pytest.mark.parametrize("mode", list(AutoresetMode))
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])  # terminations; truncations and Box actions
def test_autoreset_modes_match_sync_vector_env(env_id: str, mode: AutoresetMode) -> None:
    """The registered env against `SyncVectorEnv([gymnasium.make(env_id)] * N, autoreset_mode=mode)`, step for step
    from the same states and actions, across autoresets. Before every step each torch row is set to its Gymnasium
    twin's state and elapsed steps, so a row's fresh reset state (random in both) is synced before it is stepped."""
    n, max_steps, rng = 16, 20, np.random.default_rng(0)
    register_gymnasium()
    ours = gym.make_vec(f"rlpg/{env_id}", num_envs=n, vectorization_mode="vector_entry_point", seed=0,
                        max_episode_steps=max_steps, autoreset_mode=mode)
    ref = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, max_episode_steps=max_steps)] * n, autoreset_mode=mode)
    assert ours.metadata["autoreset_mode"] == ref.metadata["autoreset_mode"] == mode
    ours.reset(seed=0)
    ref.reset(seed=0)
    for sub in ref.envs:  # anywhere in the state space, anywhere before the time limit
        sub.unwrapped.state = wide_state(env_id, rng)
        sub._elapsed_steps = int(rng.integers(0, max_steps))
    torch_env = ours.env

    def sync() -> None:
        torch_env.state = torch.tensor(np.stack([np.asarray(e.unwrapped.state, dtype=np.float64) for e in ref.envs]))
        torch_env.elapsed = torch.tensor([e._elapsed_steps for e in ref.envs])

    events = {"done": 0, "fresh": 0, "partial reset": 0}
    fresh = np.zeros(n, dtype=bool)  # NEXT_STEP: rows that the coming step resets instead of stepping
    for _ in range(60):
        sync()
        actions = random_actions(ours.single_action_space, n, rng)
        obs, reward, terminated, truncated, info = ours.step(actions)
        r_obs, r_reward, r_terminated, r_truncated, r_info = ref.step(actions)
        np.testing.assert_array_equal(terminated, r_terminated)
        np.testing.assert_array_equal(truncated, r_truncated)
        np.testing.assert_allclose(reward, r_reward, rtol=0, atol=1e-5)
        done = terminated | truncated
        if mode == AutoresetMode.SAME_STEP:
            fresh = done
            assert set(info) == set(r_info)
            if done.any():
                np.testing.assert_array_equal(info["_final_obs"], r_info["_final_obs"])
                np.testing.assert_allclose(np.stack(list(info["final_obs"][done])),
                                           np.stack(list(r_info["final_obs"][done])), rtol=0, atol=1e-5)
        else:
            assert info == {}
        # rows that began a new episode in this step: a fresh random reset in both, elsewhere the same physics
        np.testing.assert_allclose(obs[~fresh], r_obs[~fresh], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(obs[fresh], torch_env._observation(torch_env.state).numpy()[fresh])
        assert (torch_env.elapsed.numpy()[fresh] == 0).all()
        if mode == AutoresetMode.NEXT_STEP:
            assert (reward[fresh] == 0).all() and not (terminated[fresh] | truncated[fresh]).any()
        events["fresh"] += fresh.sum()
        events["done"] += done.sum()
        fresh = done & (mode == AutoresetMode.NEXT_STEP)
        if mode == AutoresetMode.DISABLED and done.any():
            with pytest.raises(RuntimeError, match="reset_mask"):
                ours.step(actions)  # a finished row must be reset first
            mask = done | (rng.random(n) < 0.2)  # also some rows that are still running
            obs, _ = ours.reset(options={"reset_mask": mask})
            r_obs, _ = ref.reset(options={"reset_mask": mask.copy()})
            np.testing.assert_allclose(obs[~mask], r_obs[~mask], rtol=0, atol=1e-5)  # untouched rows
            np.testing.assert_array_equal(obs[mask], torch_env._observation(torch_env.state).numpy()[mask])
            assert (torch_env.elapsed.numpy()[mask] == 0).all()
            events["partial reset"] += 1
    assert events["done"] > 0 and (events["fresh"] > 0 or mode == AutoresetMode.DISABLED)
    assert events["partial reset"] > 0 or mode != AutoresetMode.DISABLED


def test_reset_rows_resets_only_the_masked_rows() -> None:
    env = TORCH_ENVS["CartPole-v1"](4, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.reset_rows(torch.ones(4, dtype=torch.bool))
    env.reset()
    state = torch.tensor([[1.0, 0, 0, 0], [2.0, 0, 0, 0], [3.0, 0, 0, 0], [4.0, 0, 0, 0]])
    env.state, env.elapsed = state, torch.tensor([5, 6, 7, 8])
    mask = torch.tensor([True, False, True, False])
    obs = env.reset_rows(mask)
    assert torch.equal(env.state[~mask], state[~mask]) and torch.equal(env.elapsed, torch.tensor([0, 6, 0, 8]))
    assert (env.state[mask].abs() <= 0.05).all() and torch.equal(obs, env.state)
    with pytest.raises(ValueError, match="bool"):
        env.reset_rows(torch.ones(4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_cuda_step_never_syncs(env_id: str) -> None:
    env = TORCH_ENVS[env_id](1024, device="cuda", seed=0, max_episode_steps=7)
    obs, _ = env.reset()
    gen = torch.Generator(device="cuda").manual_seed(0)
    actions = [sample_actions(env, gen) for _ in range(20)]
    truncs = []
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for a in actions:  # crosses the time limit, so the autoreset path runs
            obs, reward, terminated, truncated, info = env.step(a)
            truncs.append(truncated)
        env.reset_rows(truncated)  # the partial reset that the Gymnasium registration's NEXT_STEP mode uses
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert obs.is_cuda and obs.dtype == torch.float32 and reward.dtype == torch.float32
    assert terminated.dtype == torch.bool and info["final_obs"].shape == obs.shape
    assert torch.stack(truncs)[6].all()  # no task ends within 7 steps of a reset: all rows hit the time limit


@pytest.mark.parametrize("backend", ["torch", "gymnasium"])
def test_out_of_range_actions_are_clipped_at_the_env_boundary_on_every_backend(backend: str) -> None:
    # MountainCarContinuous penalises 0.1 * action^2: with the action clipped to [-1, 1] first, +-3 costs 0.1, not 0.9
    env = make("MountainCarContinuous-v0", 4, backend=backend)
    env.reset(seed=0)
    _, reward, terminated, _, _ = env.step(torch.tensor([[3.0], [-3.0], [0.5], [-1.0]]))
    assert not terminated.any()
    torch.testing.assert_close(reward, torch.tensor([-0.1, -0.1, -0.025, -0.1]))
