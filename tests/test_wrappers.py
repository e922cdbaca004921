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


def test_running_mean_std_never_absorbs_non_finite_rows():
    clean = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    dirty = torch.cat([clean[:1], torch.tensor([[float("nan"), 0.0], [1.0, float("inf")]]), clean[1:]])
    a, b = RunningMeanStd((2,), torch.device("cpu")), RunningMeanStd((2,), torch.device("cpu"))
    a.update(clean)
    b.update(dirty)
    for x, y in ((a.mean, b.mean), (a.var, b.var), (a.count, b.count)):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    before = (b.mean.clone(), b.var.clone(), b.count.clone())
    b.update(torch.full((3, 2), float("nan")))  # nothing finite: nothing changes
    assert all(torch.equal(x, y) for x, y in zip(before, (b.mean, b.var, b.count), strict=True))


def test_grouped_running_mean_std_is_each_groups_own_with_or_without_non_finite_rows():
    # K groups (K seeds) keep the statistics K lone ones would, on the all-finite shortcut and on the masked path
    g = torch.Generator().manual_seed(0)
    together = RunningMeanStd((2,), torch.device("cpu"), groups=3)
    apart = [RunningMeanStd((2,), torch.device("cpu")) for _ in range(3)]
    for step in range(6):
        x = torch.randn(12, 2, generator=g, dtype=torch.float64) * (step + 1)
        if step % 2:
            x[5, 0] = float("nan")  # a bad row in group 1 only
        together.update(x)
        for k, rms in enumerate(apart):
            rms.update(x[4 * k:4 * (k + 1)])
    for k, rms in enumerate(apart):
        for a, b in ((together.mean[k], rms.mean), (together.var[k], rms.var), (together.count[k], rms.count)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert float(together.count[1]) == float(together.count[0]) - 3  # group 1 left out its 3 bad rows


def test_normalize_reward_forgets_the_discounted_return_on_reset():
    # env a runs 60 steps, then resets; env b starts fresh with a's statistics: from the reset on they must agree
    a = make("Pendulum-v1", 4, backend="torch", normalize_reward=True, gamma=0.9)
    a.reset(seed=0)
    for _ in range(60):
        a.step(torch.ones(4, 1))
    b = make("Pendulum-v1", 4, backend="torch", normalize_reward=True, gamma=0.9)
    wa, wb = find_wrapper(a, NormalizeReward), find_wrapper(b, NormalizeReward)
    wb.rms.load_state_dict(wa.rms.state_dict())
    a.reset(seed=1)
    b.reset(seed=1)
    for _ in range(5):
        ra = a.step(torch.ones(4, 1))[1]
        rb = b.step(torch.ones(4, 1))[1]
        torch.testing.assert_close(ra, rb)
    torch.testing.assert_close(wa.rms.var, wb.rms.var)


def test_check_finite_on_an_accelerator_reports_the_first_bad_step_once_per_rollout():
    from rlpg.envs.wrappers import CheckFinite
    from rlpg.errors import NonFiniteError

    class Scripted:
        num_envs, device = 3, torch.device("cpu")

        def __init__(self):
            self.t = 0

        def reset(self, seed=None):
            return torch.zeros(3, 2), {}

        def step(self, actions):
            self.t += 1
            obs, reward = torch.zeros(3, 2), torch.zeros(3)
            if self.t == 3:
                reward[2] = float("nan")
            if self.t == 4:
                obs[0, 1] = float("inf")
            return obs, reward, torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool), {"final_obs": obs}

    env = CheckFinite(Scripted(), "Scripted-v0")
    env._immediate = False  # what a CUDA env does: record on the device, no sync per step
    env.reset()
    for _ in range(5):
        env.step(torch.zeros(3))  # no error yet
    # the reward at step 3 comes first; the inf observation (and final observation) at step 4 are counted too
    with pytest.raises(NonFiniteError, match=r"non-finite reward .* in sub-env 2 at step 3 .*\(3 such"):
        env.check_finite()
    env.check_finite()  # reported once
    immediate = CheckFinite(Scripted(), "Scripted-v0")  # on the CPU: at the step itself
    immediate.reset()
    immediate.step(torch.zeros(3))
    immediate.step(torch.zeros(3))
    with pytest.raises(NonFiniteError, match="sub-env 2 at step 3"):
        immediate.step(torch.zeros(3))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCarContinuous-v0"])
def test_env_state_restores_a_wrapped_torch_env_exactly(env_id):
    from rlpg.envs import env_state, load_env_state

    def build():
        return make(env_id, 6, backend="torch", seed=3, normalize_obs=True, normalize_reward=True)

    env = build()
    env.reset(seed=3)
    space = env.single_action_space
    g = torch.Generator().manual_seed(0)

    def actions():
        if hasattr(space, "n"):
            return torch.randint(0, int(space.n), (6,), generator=g)
        return torch.randn(6, *space.shape, generator=g)

    for _ in range(150):  # some episodes end on the way
        env.step(actions())
    saved = env_state(env)
    acts = [actions() for _ in range(300)]
    expected = [env.step(a) for a in acts]
    other = build()
    load_env_state(other, saved)
    for a, (obs, rew, term, trunc, info) in zip(acts, expected, strict=True):
        o2, r2, t2, tr2, i2 = other.step(a)
        assert torch.equal(obs, o2) and torch.equal(rew, r2) and torch.equal(term, t2) and torch.equal(trunc, tr2)
        assert torch.equal(info["episode_return"], i2["episode_return"])


def test_env_state_of_other_wrappers_or_sizes_is_a_clear_error():
    from rlpg.envs import env_state, load_env_state
    from rlpg.errors import CheckpointError

    saved = env_state(make("CartPole-v1", 4, backend="torch", normalize_obs=True))
    with pytest.raises(CheckpointError, match="wrappers"):
        load_env_state(make("CartPole-v1", 4, backend="torch"), saved)
    env = make("CartPole-v1", 8, backend="torch", normalize_obs=True)
    env.reset(seed=0)
    with pytest.raises(CheckpointError, match="another number of envs|another --num-envs"):
        load_env_state(env, saved)


def test_check_finite_on_the_cpu_tells_an_overflowing_sum_from_a_non_finite_value():
    """On the CPU a step is first checked through the sum of each signal; a sum that overflows on finite values must
    not stop the run, and a NaN or infinity anywhere must, with the per-row error."""
    from rlpg.envs.wrappers import CheckFinite
    from rlpg.errors import NonFiniteError

    class Big:
        num_envs, device = 2, torch.device("cpu")

        def __init__(self, bad):
            self.bad = bad

        def reset(self, seed=None):
            return torch.zeros(2, 3), {}

        def step(self, actions):
            obs = torch.full((2, 3), 3e38)  # finite, but their sum overflows float32
            final = obs.clone()
            if self.bad == "final":
                final[1, 2] = float("-inf")
            reward = torch.tensor([1.0, float("nan") if self.bad == "reward" else 2.0])
            return obs, reward, torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool), {"final_obs": final}

    fine = CheckFinite(Big(None), "Big-v0")
    fine.reset()
    obs, *_ = fine.step(torch.zeros(2))
    assert bool(torch.isfinite(obs).all())
    for bad, signal in (("final", "final observation"), ("reward", "reward")):
        env = CheckFinite(Big(bad), "Big-v0")
        env.reset()
        with pytest.raises(NonFiniteError, match=f"non-finite {signal} .* in sub-env 1 at step 1"):
            env.step(torch.zeros(2))
