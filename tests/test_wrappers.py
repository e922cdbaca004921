import numpy as np
import pytest
import torch

from rlpg.envs import make, normalizer_state, set_training
from rlpg.envs.wrappers import NormalizeObservation, NormalizeReward, RunningMeanStd, find_wrapper


def test_running_mean_std_matches_numpy_over_batches():
    rms = RunningMeanStd((3,), torch.device("cpu"), epsilon=0.0)
    rng = np.random.default_rng(0)
    chunks = [rng.normal(2.0, 3.0, size=(n, 3)) for n in (5, 17, 1, 40)]
    for c in chunks:
        rms.update(torch.as_tensor(c))
    allx = np.concatenate(chunks)
    np.testing.assert_allclose(rms.mean.numpy(), allx.mean(0), rtol=1e-10)
    np.testing.assert_allclose(rms.var.numpy(), allx.var(0), rtol=1e-10)


def test_observation_normalisation_applies_to_final_obs_and_freezes_for_eval():
    env = make("Pendulum-v1", 8, backend="torch", normalize_obs=True)
    obs, _ = env.reset(seed=0)
    for _ in range(300):
        obs, _, term, trunc, info = env.step(torch.zeros(8, 1))
    assert obs.abs().max() <= 10.0
    w = find_wrapper(env, NormalizeObservation)
    # final_obs is normalised with the same statistics as obs (identical on rows that did not end)
    torch.testing.assert_close(info["final_obs"][~(term | trunc)], obs[~(term | trunc)])
    set_training(env, False)
    count = w.rms.count.clone()
    env.step(torch.zeros(8, 1))
    assert torch.equal(w.rms.count, count)
    state = normalizer_state(env)
    assert set(state) == {"obs_rms"} and state["obs_rms"]["mean"].shape == (3,)


def test_reward_scaling_keeps_sign_and_uses_raw_rewards_for_statistics():
    env = make("Pendulum-v1", 4, backend="torch", normalize_reward=True, gamma=0.9)
    env.reset(seed=0)
    for _ in range(250):
        _, r, term, trunc, info = env.step(torch.zeros(4, 1))
        assert (r <= 0).all()  # Pendulum's rewards are <= 0: scaling never shifts them
        if (term | trunc).any():
            # episode statistics come from the raw rewards (Pendulum returns are far below -10 per 200 steps)
            assert (info["episode_return"][term | trunc] < -100).all()
    assert find_wrapper(env, NormalizeReward).rms.var > 0


def test_async_gymnasium_backend_steps():
    env = make("CartPole-v1", 2, backend="gymnasium", async_envs=True)
    obs, _ = env.reset(seed=0)
    obs2, r, term, trunc, info = env.step(torch.tensor([0, 1]))
    assert obs2.shape == (2, 4) and r.tolist() == [1.0, 1.0] and "episode_return" in info
    env.close()


@pytest.mark.gpu
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Acrobot-v1"])
def test_rollout_on_cuda_never_syncs_with_the_host(env_id):
    from rlpg.policies import ActorCritic
    from rlpg.rollout import Collector

    env = make(env_id, 1024, device="cuda", backend="torch", normalize_obs=True, normalize_reward=True)
    policy = ActorCritic(env.single_observation_space, env.single_action_space).to("cuda")
    collector = Collector(env, policy, num_steps=64)
    collector.reset(seed=0)
    collector.collect()  # warm-up: lazy initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        rollout = collector.collect()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert rollout.obs.is_cuda and rollout.obs.shape[:2] == (64, 1024)
