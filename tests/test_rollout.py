import gymnasium as gym
import numpy as np
import pytest
import torch

from rlpg.envs import make
from rlpg.policies import ActorCritic
from rlpg.rollout import Collector, critic_values, evaluate


@pytest.mark.parametrize("backend", ["gymnasium", "torch"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_collect_shapes_dtypes_and_no_grad(env_id, backend):
    torch.manual_seed(0)
    env = make(env_id, 4, backend=backend)
    pi = ActorCritic(env.single_observation_space, env.single_action_space, (16,))
    col = Collector(env, pi, num_steps=250)
    col.reset(seed=0)
    r = col.collect()
    D = env.single_observation_space.shape[0]
    assert r.obs.shape == (250, 4, D)
    a_shape = () if isinstance(env.single_action_space, gym.spaces.Discrete) else env.single_action_space.shape
    assert r.actions.shape == (250, 4, *a_shape)
    for x in (r.logp, r.values, r.next_values, r.rewards):
        assert x.shape == (250, 4) and x.dtype == torch.float32 and not x.requires_grad
    assert r.terminated.dtype == torch.bool and r.truncated.dtype == torch.bool
    # next_values is V(s_{t+1}) of the same episode: equal to values[t+1] where the episode went on
    cont = ~(r.terminated | r.truncated)[:-1]
    torch.testing.assert_close(r.next_values[:-1][cont], r.values[1:][cont])
    # episodes of at least 200 steps are finished somewhere in 250 steps for Pendulum (time limit 200)
    if env_id == "Pendulum-v1":
        assert r.truncated[199].all() and not r.terminated.any()
        assert r.episode_count.item() == 4 and r.episode_length_sum.item() == 800
    env.close()


def test_next_values_use_final_obs_on_truncation():
    torch.manual_seed(0)
    env = make("Pendulum-v1", 2, backend="gymnasium")
    pi = ActorCritic(env.single_observation_space, env.single_action_space, (8,))
    col = Collector(env, pi, num_steps=200)
    col.reset(seed=1)
    r = col.collect()
    assert r.truncated[199].all()
    # at the truncation, next obs (the reset obs) differs from final obs; next_values must use final obs
    reset_obs = col.obs
    with torch.no_grad():
        v_reset = pi.value(reset_obs)
    assert not torch.allclose(r.next_values[199], v_reset)
    env.close()


@pytest.mark.parametrize("gather", [True, False])
def test_critic_values_bootstrap_from_final_obs_on_done_rows(gather):
    torch.manual_seed(0)
    T, N, D = 6, 5, 3
    pi = ActorCritic(gym.spaces.Box(-1, 1, (D,)), gym.spaces.Discrete(2), (16,))
    states = torch.randn(T + 1, N, D)  # s_0 .. s_T
    dones = torch.zeros(T, N, dtype=torch.bool)
    dones[[0, 2, 2, 5], [1, 0, 4, 3]] = True  # incl. the last step
    next_obs = torch.where(dones.unsqueeze(-1), torch.randn(T, N, D), states[1:])  # final_obs on done rows
    with torch.no_grad():
        values, next_values = critic_values(pi, states[:-1], next_obs, states[-1], dones, gather=gather)
        v = lambda x: pi.value(x.reshape(-1, D)).reshape(T, N)  # noqa: E731
        ref_values, ref_next, v_reset = v(states[:-1]), v(next_obs), v(states[1:])
    torch.testing.assert_close(values, ref_values)
    torch.testing.assert_close(next_values, ref_next)  # V(final_obs) on done rows, V(s_{t+1}) elsewhere
    assert not torch.allclose(next_values[dones], v_reset[dones])


def test_episodes_continue_across_rollouts():
    env = make("Pendulum-v1", 1, backend="torch")
    pi = ActorCritic(env.single_observation_space, env.single_action_space, (8,))
    col = Collector(env, pi, num_steps=150)
    col.reset(seed=0)
    a = col.collect()
    b = col.collect()
    assert not a.truncated.any() and b.truncated[49].all()


def test_evaluate_counts_episodes_per_env():
    env = make("CartPole-v1", 3, backend="torch")
    pi = ActorCritic(env.single_observation_space, env.single_action_space, (8,))
    rets = evaluate(env, pi, episodes=7, seed=0)
    assert rets.shape == (7,) and (rets >= 8).all() and (rets <= 500).all()
    again = evaluate(env, pi, episodes=7, seed=0)
    assert torch.equal(rets, again)  # deterministic policy and seeded reset


def test_gymnasium_adapter_clips_box_actions_but_rollout_keeps_raw_action():
    env = make("Pendulum-v1", 1, backend="gymnasium")
    env.reset(seed=0)
    gym_env = gym.make("Pendulum-v1")
    gym_env.reset(seed=0)
    _, r1, *_ = env.step(torch.tensor([[50.0]]))
    _, r2, *_ = gym_env.step(np.array([2.0], np.float32))
    assert r1.item() == pytest.approx(r2, rel=1e-5)


def test_a_vec_env_without_final_obs_is_refused():
    from rlpg.errors import RLPGError

    class NoFinalObs:
        """Follows the VecEnv protocol except for info["final_obs"]."""

        num_envs, device = 2, torch.device("cpu")
        single_observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        single_action_space = gym.spaces.Discrete(2)

        def reset(self, seed=None):
            return torch.zeros(2, 3), {}

        def step(self, actions):
            done = torch.tensor([True, False])
            return torch.zeros(2, 3), torch.ones(2), torch.zeros(2, dtype=torch.bool), done, {}

    env = NoFinalObs()
    policy = ActorCritic(env.single_observation_space, env.single_action_space)
    collector = Collector(env, policy, num_steps=4)
    collector.reset(seed=0)
    with pytest.raises(RLPGError, match=r"returned no info\['final_obs'\]"):
        collector.collect()


def test_evaluate_stops_an_env_without_a_time_limit_within_seconds():
    import time

    from rlpg.errors import RLPGError
    from rlpg.rollout import EVAL_STEPS_WITHOUT_TIME_LIMIT

    env = make("RlpgTestNoTimeLimit-v0", 2, backend="gymnasium")
    policy = ActorCritic(env.single_observation_space, env.single_action_space)
    start = time.perf_counter()
    with pytest.raises(RLPGError, match=f"after {EVAL_STEPS_WITHOUT_TIME_LIMIT + 1} steps per env .* 0 of 2 episodes"):
        evaluate(env, policy, episodes=2, seed=0)
    assert time.perf_counter() - start < 30
    # with a time limit the bound is the limit itself: CartPole's 500 steps per episode always finish
    cp = make("CartPole-v1", 2, backend="torch")
    assert len(evaluate(cp, ActorCritic(cp.single_observation_space, cp.single_action_space), 4, seed=0)) == 4
