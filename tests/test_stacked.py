"""K seeds stacked in one network: each seed computes what its own ActorCritic computes, gets its own gradient, its
own optimizer steps, its own clipping and its own samples."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlpg.errors import ConfigError
from rlpg.optim import clip_per_seed, make_optimizer, seed_grad_norms
from rlpg.policies import ActorCritic
from rlpg.rollout import critic_values
from rlpg.stacked import StackedActorCritic, sample, stacked_critic_values

K, N = 3, 5
SPACES = {
    "discrete": (gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(3)),
    "box": (gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (2,))),
    "multidiscrete": (gym.spaces.Box(-1, 1, (4,)), gym.spaces.MultiDiscrete([2, 3])),
    "discrete-obs": (gym.spaces.Discrete(6), gym.spaces.Discrete(2)),
}


def policies(obs_space, act_space, k=K):
    out = []
    for s in range(k):
        torch.manual_seed(100 + s)  # as a single run of that seed builds its policy
        out.append(ActorCritic(obs_space, act_space, (16, 16), log_std_init=-0.3 * s))
    return out


def observations(obs_space, n=N, k=K):
    g = torch.Generator().manual_seed(0)
    if isinstance(obs_space, gym.spaces.Discrete):
        return torch.randint(0, obs_space.n, (k, n), generator=g)
    return torch.randn((k, n, *obs_space.shape), generator=g)


@pytest.mark.parametrize("kind", SPACES)
def test_each_seed_computes_what_its_own_policy_computes(kind):
    obs_space, act_space = SPACES[kind]
    singles = policies(obs_space, act_space)
    stacked = StackedActorCritic(singles)
    obs = observations(obs_space)
    d = stacked.dist(obs)
    assert d.batch_shape == (K, N)
    actions = d.mode
    for k, single in enumerate(singles):
        dk = single.dist(obs[k])
        torch.testing.assert_close(d.log_prob(actions)[k], dk.log_prob(actions[k]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(d.entropy()[k], dk.entropy(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(actions[k], dk.mode.to(actions.dtype))
        torch.testing.assert_close(stacked.value(obs)[k], single.value(obs[k]), rtol=1e-5, atol=1e-6)
        # seed k out and back: the single run's names, shapes and values
        assert stacked.state_dict_of(k).keys() == dict(single.named_parameters()).keys()
        for name, p in stacked.policy(k).state_dict().items():
            torch.testing.assert_close(p, single.state_dict()[name])


@pytest.mark.parametrize("kind", SPACES)
def test_sampling_draws_each_seed_from_its_own_generator_like_a_single_run(kind):
    obs_space, act_space = SPACES[kind]
    singles = policies(obs_space, act_space)
    stacked = StackedActorCritic(singles)
    obs = observations(obs_space)
    generators = [torch.Generator().manual_seed(7 + k) for k in range(K)]
    batched = [sample(stacked.dist(obs), generators) for _ in range(3)]  # three steps
    for k, single in enumerate(singles):
        torch.manual_seed(7 + k)  # a single run samples from the global generator
        for step in range(3):
            torch.testing.assert_close(batched[step][k], single.dist(obs[k]).sample().to(batched[step].dtype),
                                       rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_one_optimizer_over_stacked_parameters_is_k_independent_optimizers_with_per_seed_clipping(optimizer):
    obs_space, act_space = SPACES["box"]
    singles = policies(obs_space, act_space)
    stacked = StackedActorCritic(singles)
    obs = observations(obs_space)
    actions = torch.randn(K, N, 2, generator=torch.Generator().manual_seed(3))
    returns = torch.randn(K, N, generator=torch.Generator().manual_seed(4)) * 10  # large: clipping bites
    max_norm = 0.5

    def loss_of(policy, o, a, r):  # a per-seed loss; the stacked loss is the sum over seeds
        return -(policy.dist(o).log_prob(a) * r).mean(-1) + ((policy.value(o) - r) ** 2).mean(-1)

    opt = make_optimizer(optimizer, stacked.parameters(), 1e-2)
    single_opts = [make_optimizer(optimizer, s.parameters(), 1e-2) for s in singles]
    for _ in range(3):
        opt.zero_grad()
        loss_of(stacked, obs, actions, returns).sum().backward()
        grads = [p.grad for p in stacked.parameters()]
        total, per = seed_grad_norms(grads)
        clip_per_seed(grads, total, max_norm)
        opt.step()
        for k, (single, sopt) in enumerate(zip(singles, single_opts, strict=True)):
            sopt.zero_grad()
            loss_of(single, obs[k], actions[k], returns[k]).backward()
            before = torch.stack([p.grad.norm() for p in single.parameters()])
            norm = torch.nn.utils.clip_grad_norm_(single.parameters(), max_norm)
            assert norm > max_norm  # the clip is exercised
            torch.testing.assert_close(total[k], norm, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(per[k], before, rtol=1e-5, atol=1e-6)
            sopt.step()
    # RMSprop's first steps divide by sqrt(0.01 g^2): a gradient element near zero turns float32 rounding (batched vs
    # single matrix products) into a visible difference, so it is compared at a looser tolerance
    tol = dict(rtol=1e-4, atol=1e-5) if optimizer == "rmsprop" else dict(rtol=1e-5, atol=1e-6)
    for k, single in enumerate(singles):
        for name, p in single.named_parameters():
            torch.testing.assert_close(stacked.state_dict_of(k)[name], p.detach(), **tol)


def test_per_seed_norms_in_other_p_norms_match_torch():
    grads = [torch.randn(K, 4, 3), torch.randn(K, 5)]
    for norm_type in (1.0, 2.0, float("inf")):
        total, per = seed_grad_norms(grads, norm_type)
        for k in range(K):
            expect = torch.nn.utils.get_total_norm([g[k] for g in grads], norm_type)
            torch.testing.assert_close(total[k], expect)
            torch.testing.assert_close(per[k], torch.stack([torch.linalg.vector_norm(g[k], norm_type) for g in grads]))


def test_stacking_refuses_mixed_architectures_and_images():
    obs_space, act_space = SPACES["discrete"]
    a = ActorCritic(obs_space, act_space, (16, 16))
    b = ActorCritic(obs_space, act_space, (8, 8))
    with pytest.raises(ConfigError, match="share one architecture"):
        StackedActorCritic([a, b])
    image = gym.spaces.Box(0, 255, (4, 10, 10), dtype=np.uint8)
    with pytest.raises(ConfigError, match="image observations"):
        StackedActorCritic([ActorCritic(image, act_space)])


def test_frozen_parameters_stay_frozen_when_stacked():
    obs_space, act_space = SPACES["discrete"]
    singles = policies(obs_space, act_space)
    for s in singles:
        s.actor.net[0].weight.requires_grad_(False)
    stacked = StackedActorCritic(singles)
    assert not stacked.actor.net[0].weight.requires_grad and stacked.critic[0].weight.requires_grad


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCar-v0",
                                    "MountainCarContinuous-v0"])
def test_a_torch_env_with_k_seeds_steps_each_row_group_as_its_own_env(env_id):
    from rlpg.envs.native import TORCH_ENVS

    cls, seeds, n = TORCH_ENVS[env_id], [11, 12, 13], 4
    together = cls(len(seeds) * n, seed=seeds, max_episode_steps=30)  # short episodes: many resets
    apart = [cls(n, seed=s, max_episode_steps=30) for s in seeds]
    obs = together.reset()[0]
    torch.testing.assert_close(obs, torch.cat([e.reset()[0] for e in apart]), rtol=0, atol=0)
    g = torch.Generator().manual_seed(0)
    space = together.single_action_space
    resets = 0
    for step in range(120):
        if step == 60:  # a checkpoint in the middle continues exactly
            saved = together.state_dict()
            together = cls(len(seeds) * n, seed=[0, 0, 0], max_episode_steps=30)
            together.load_state_dict(saved)
        if isinstance(space, gym.spaces.Discrete):
            actions = torch.randint(0, int(space.n), (len(seeds) * n,), generator=g)
        else:
            actions = torch.rand((len(seeds) * n, *space.shape), generator=g) * 2 - 1
        out = together.step(actions)
        parts = [e.step(actions[k * n:(k + 1) * n]) for k, e in enumerate(apart)]
        for i in range(4):
            torch.testing.assert_close(out[i], torch.cat([p[i] for p in parts]), rtol=0, atol=0)
        torch.testing.assert_close(out[4]["final_obs"], torch.cat([p[4]["final_obs"] for p in parts]), rtol=0, atol=0)
        resets += int((out[2] | out[3]).sum())
    assert resets >= 4 * len(seeds) * n  # every row was reset several times, each group from its own generator
    with pytest.raises(ValueError, match="multiple of the number of seeds"):
        cls(5, seed=[1, 2])
    with pytest.raises(ValueError, match="3 seed group"):
        together.reset(seed=[1, 2])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_a_stacked_rollout_is_each_seeds_single_rollout(env_id):
    """K seeds collected together give, column group by column group, the rollouts K single runs collect: the same
    observations, actions, rewards and episode ends, log-probs and values up to the batched products' rounding."""
    from rlpg.envs import make
    from rlpg.rollout import Collector
    from rlpg.stacked import StackedCollector

    seeds, n, t = [5, 6, 7], 4, 40
    probe = make(env_id, 1)
    obs_space, act_space = probe.single_observation_space, probe.single_action_space
    singles, generators, rollouts = [], [], []
    for s in seeds:
        torch.manual_seed(s)  # a single run: the global generator builds the policy, then samples its actions
        policy = ActorCritic(obs_space, act_space, (16, 16))
        singles.append(policy)
        generators.append(torch.Generator().set_state(torch.get_rng_state()))
        collector = Collector(make(env_id, n, seed=s), policy, t)
        collector.reset(seed=s)
        rollouts.append([collector.collect(), collector.collect()])  # two rollouts: episodes carry over
    stacked = StackedActorCritic(singles)
    together = StackedCollector(make(env_id, len(seeds) * n, seed=seeds), stacked, t, generators)
    together.reset(seeds)
    for r in range(2):
        both = together.collect()
        assert both.obs.shape[:2] == (t, len(seeds) * n) and both.episode_count.shape == (len(seeds),)
        for k, single in enumerate(rollouts):
            one, cols = single[r], slice(k * n, (k + 1) * n)
            for name in ("obs", "actions", "rewards", "terminated", "truncated"):
                torch.testing.assert_close(getattr(both, name)[:, cols], getattr(one, name), rtol=1e-5, atol=1e-5,
                                           msg=f"{name} of seed {seeds[k]}, rollout {r}")
            for name in ("logp", "values", "next_values"):
                torch.testing.assert_close(getattr(both, name)[:, cols], getattr(one, name), rtol=1e-4, atol=1e-4)
            for name in ("episode_return_sum", "episode_length_sum", "episode_count"):
                torch.testing.assert_close(getattr(both, name)[k], getattr(one, name), rtol=1e-5, atol=1e-3)
    if env_id == "CartPole-v1":  # CartPole's episodes end within the rollouts (Pendulum's last 200 steps)
        assert float(both.episode_count.min()) > 0


UPDATES = [
    ("ppo", "CartPole-v1", {"num_minibatches": 4, "update_epochs": 3}),
    ("ppo", "Pendulum-v1", {"num_minibatches": 4, "update_epochs": 3, "clip_vloss": True, "ent_coef": 0.01,
                            "max_grad_norm": 0.1}),
    # each seed stops its epochs at its own time (per-seed KL, SeedAdam stepping only the seeds still going)
    ("ppo", "CartPole-v1", {"num_minibatches": 4, "update_epochs": 8, "target_kl": 0.004, "learning_rate": 3e-3}),
    ("ppo", "CartPole-v1", {"num_minibatches": 4, "update_epochs": 8, "target_kl": 0.002, "learning_rate": 1e-3,
                            "optimizer": "rmsprop"}),
    ("ppo", "CartPole-v1", {"num_minibatches": 4, "update_epochs": 8, "target_kl": 0.0005, "learning_rate": 0.2,
                            "optimizer": "sgd"}),
    ("reinforce", "CartPole-v1", {}),
    ("reinforce", "Pendulum-v1", {"num_minibatches": 2, "update_epochs": 2, "ent_coef": 0.01, "optimizer": "rmsprop"}),
    ("trpo", "CartPole-v1", {}),
    # Pendulum: CG's absolute stopping test (squared residual <= 1e-10) sits at float32 rounding there, so a batched
    # product can stop one iteration later than a single one; a tolerance below rounding runs every iteration on both
    # (per-seed stopping is tested in float64 below)
    ("trpo", "Pendulum-v1", {"max_kl": 0.05, "vf_minibatches": 4, "cg_residual_tol": 1e-30}),
    # a step the quadratic model overshoots: candidates are rejected and backtracked, per seed
    ("trpo", "CartPole-v1", {"max_kl": 1.0, "accept_ratio": 0.5, "cg_iters": 3}),
    ("npg", "CartPole-v1", {"optimizer": "sgd"}),
    ("npg", "Pendulum-v1", {"max_kl": 0.05, "kl_guard": 1.0, "cg_residual_tol": 1e-30}),
]


@pytest.mark.parametrize("algo, env_id, extra", UPDATES)
def test_an_update_of_k_seeds_is_each_seeds_own_update(algo, env_id, extra):
    """Rollouts, advantages and updates of K seeds in one stacked computation leave each seed's parameters where its
    single run's are: after the third update for the first-order ones; after the first for NPG and TRPO, in float64
    (their conjugate gradient amplifies the batched products' rounding, to ~1e-4 relative in float32 on Pendulum,
    which the next rollouts would then carry)."""
    from rlpg.axes import Seeds
    from rlpg.envs import make
    from rlpg.rollout import Collector
    from rlpg.stacked import StackedCollector, seed_batch
    from rlpg.trainer import ALGOS, flatten

    agent_cls, config_cls = ALGOS[algo]
    seeds, n, t = [3, 4, 5], 8, 32
    first_order = algo in ("ppo", "reinforce")
    updates, dtype = (3, torch.float32) if first_order else (1, torch.float64)
    cfg = config_cls(**extra)
    probe = make(env_id, 1)
    singles, generators, finals = [], [], []
    for s in seeds:
        torch.manual_seed(s)
        policy = ActorCritic(probe.single_observation_space, probe.single_action_space, (16, 16)).to(dtype)
        singles.append(policy)
        generators.append(torch.Generator().set_state(torch.get_rng_state()))
    stacked = StackedActorCritic(singles)  # before the single runs train their policies
    for s, policy, g in zip(seeds, singles, generators, strict=True):
        torch.set_rng_state(g.get_state())
        agent, collector = agent_cls(policy, cfg), Collector(make(env_id, n, seed=s), policy, t)
        collector.reset(seed=s)
        for it in range(updates):
            rollout = collector.collect()
            metrics = agent.update(flatten(rollout, *agent.advantages(rollout)), it / 3)
        finals.append((policy, metrics))
    axis = Seeds(generators)
    agent = agent_cls(stacked, cfg, axis)
    collector = StackedCollector(make(env_id, len(seeds) * n, seed=seeds), stacked, t, generators)
    collector.reset(seeds)
    for it in range(updates):
        rollout = collector.collect()
        metrics = agent.update(seed_batch(rollout, *agent.advantages(rollout), len(seeds)), it / 3)
    for k, (policy, single_metrics) in enumerate(finals):
        for name, p in policy.named_parameters():
            torch.testing.assert_close(stacked.state_dict_of(k)[name], p.detach(), rtol=1e-4, atol=1e-5,
                                       msg=lambda m, name=name, k=k: f"{name} of seed {seeds[k]}: {m}")
        for name in ("train/policy_loss", "train/value_loss", "train/approx_kl", "grad_norm/total",
                     "grad_norm/actor.net.0.weight", "train/explained_variance", "train/kl", "train/cg_iterations",
                     "train/line_search_steps", "train/line_search_accepted", "grad_norm/actor_total",
                     "grad_norm/critic_total", "train/step_size", "train/epochs", "train/clip_fraction"):
            if name in single_metrics:
                mine = metrics[name][k] if metrics[name].dim() else metrics[name]  # [K], or one number for all
                torch.testing.assert_close(mine, single_metrics[name], rtol=1e-3, atol=1e-5, msg=name)
    if algo == "trpo" and extra.get("accept_ratio"):  # the backtracking case does backtrack
        assert float(metrics["train/line_search_steps"].max()) > 1
    if extra.get("target_kl"):  # the seeds stopped after different numbers of epochs, some before the last
        epochs = [float(single_metrics["train/epochs"]) for _, single_metrics in finals]
        assert len(set(epochs)) > 1 and min(epochs) < extra["update_epochs"], epochs


@pytest.mark.parametrize("gather", [True, False])
@pytest.mark.parametrize("K", [1, 3])
def test_stacked_critic_values_are_each_seeds_own(gather, K):
    """V(s_t) and V(s_{t+1}) of K seeds (V(final_obs) on done rows, V(s_T) after the last step) are what each seed's
    critic gives alone, whether only the done rows' final observations are evaluated (the CPU) or all of them; a
    seed without a done row and one with every row done included."""
    torch.manual_seed(0)
    N, T, D = 4, 5, 3
    policies = [ActorCritic(gym.spaces.Box(-1, 1, (D,), np.float32), gym.spaces.Discrete(2)) for _ in range(K)]
    stacked = StackedActorCritic(policies)
    obs, next_obs, last = torch.randn(T, K * N, D), torch.randn(T, K * N, D), torch.randn(K * N, D)
    dones = torch.rand(T, K * N) < 0.3
    if K == 3:
        dones[:, N:2 * N] = False
        dones[:, 2 * N:] = True
    # as a rollout records them: s_{t+1} where the episode goes on, the final observation where it ended
    following = torch.cat([obs[1:], last.unsqueeze(0)])
    next_obs = torch.where(dones.unsqueeze(-1), next_obs, following)
    with torch.no_grad():
        values, next_values = stacked_critic_values(stacked, obs, next_obs, last, dones, gather=gather)
        for k, policy in enumerate(policies):
            cols = slice(k * N, (k + 1) * N)
            v, nv = critic_values(policy, obs[:, cols], next_obs[:, cols], last[cols], dones[:, cols], gather=False)
            torch.testing.assert_close(values[:, cols], v, rtol=0, atol=1e-6)
            torch.testing.assert_close(next_values[:, cols], nv, rtol=0, atol=1e-6)
    assert not torch.equal(next_values[:, :N], torch.cat([values[1:, :N], values[:1, :N]]))  # final obs were used


@pytest.mark.parametrize("kind", ["discrete", "box", "multidiscrete"])
def test_each_seeds_fisher_vector_product_is_its_own_policys(kind):
    from rlpg.trust_region import fisher_vector_product, fisher_vector_product_seeds, flat_params_seeds

    obs_space, act_space = SPACES[kind]
    singles = [p.double() for p in policies(obs_space, act_space)]
    stacked = StackedActorCritic(singles)
    obs = observations(obs_space, n=32).double()
    params = [p for _, p in stacked.actor_parameters()]
    v = torch.randn_like(flat_params_seeds(params), generator=torch.Generator().manual_seed(2))
    out = fisher_vector_product_seeds(stacked, obs, params, damping=0.1)(v)
    for k, single in enumerate(singles):
        mine = fisher_vector_product(single, obs[k], [p for _, p in single.actor_parameters()], damping=0.1)(v[k])
        torch.testing.assert_close(out[k], mine, rtol=1e-10, atol=1e-12)
    assert (out - 0.1 * v).abs().max() > 1e-3  # F itself is not zero


def test_batched_conjugate_gradient_stops_each_seed_where_it_would_stop_alone():
    from rlpg.trust_region import _cg, conjugate_gradient_seeds

    g = torch.Generator().manual_seed(0)
    k, p = 4, 12
    a = torch.randn(k, p, p, generator=g, dtype=torch.float64)
    # SPD systems of different conditioning: the seeds converge after different numbers of iterations
    mats = a @ a.transpose(1, 2) + torch.tensor([1e-3, 1e-1, 10.0, 1e3], dtype=torch.float64).reshape(k, 1, 1) * \
        torch.eye(p, dtype=torch.float64)
    b = torch.randn(k, p, generator=g, dtype=torch.float64)
    b[3] = 0  # a seed with nothing to solve
    x, r, iters, rr = conjugate_gradient_seeds(lambda v: torch.einsum("kij,kj->ki", mats, v), b, 30, 1e-12)
    alone = [_cg(lambda v, m=m: m @ v, b[i], 30, 1e-12) for i, m in enumerate(mats)]
    assert len({int(i) for i in iters}) >= 3  # the seeds stopped at different iterations
    for i, (xi, _, it, rri) in enumerate(alone):
        assert int(iters[i]) == it
        torch.testing.assert_close(x[i], xi, rtol=1e-6, atol=1e-9)  # einsum vs matmul, sum vs dot: rounding
        assert (float(rr[i]) <= 1e-12) == (float(rri) <= 1e-12)  # converged alike (the residuals themselves: rounding)


def test_batched_line_search_accepts_each_seeds_first_good_candidate():
    from rlpg.trust_region import line_search, line_search_seeds

    # per seed a 1-D surrogate f(x) = -(x - c)^2 with KL = x^2 / 2 from x0 = 0: the candidates halve until both pass
    centres = torch.tensor([1.0, 0.1, 0.01, 5.0], dtype=torch.float64)
    full = torch.tensor([[2.0], [2.0], [2.0], [2.0]], dtype=torch.float64)
    skipped = torch.tensor([False, False, False, True])
    state = {}

    def f_eval_seeds(x):
        state["x"] = x.clone()
        return -(x[:, 0] - centres) ** 2, x[:, 0] ** 2 / 2

    x0 = torch.zeros(4, 1, dtype=torch.float64)
    f0 = -(centres ** 2)
    res = line_search_seeds(f_eval_seeds, x0, torch.where(skipped.unsqueeze(1), 0.0, full), torch.ones(4), 0.5, 6,
                            0.5, 0.0, f0, skipped)
    for i in range(3):
        one = line_search(lambda x, i=i: (-(x[0] - centres[i]) ** 2, x[0] ** 2 / 2), x0[i], full[i],
                          torch.tensor(1.0), 0.5, 6, 0.5, 0.0, f0=f0[i])
        assert bool(res.accepted[i]) == one.accepted and int(res.steps[i]) == one.steps
        torch.testing.assert_close(res.params[i], one.params)
        torch.testing.assert_close(res.kl[i], one.kl.to(res.kl.dtype))
    assert [bool(a) for a in res.accepted] == [True, True, False, False]  # seed 2: no candidate improves enough
    assert int(res.steps[3]) == 0 and torch.equal(state["x"][3], x0[3])  # skipped: untouched, restored
    torch.testing.assert_close(state["x"], res.params)  # the parameters are left at the result


def test_normalisers_of_a_k_seed_env_keep_each_seeds_own_statistics():
    from rlpg.envs import find_wrapper, make
    from rlpg.envs.wrappers import NormalizeObservation, NormalizeReward

    seeds, n = [11, 12, 13], 4
    kw = dict(normalize_obs=True, normalize_reward=True, gamma=0.9)
    together = make("Pendulum-v1", len(seeds) * n, seed=seeds, **kw)
    apart = [make("Pendulum-v1", n, seed=s, **kw) for s in seeds]
    obs = together.reset(seed=seeds)[0]
    torch.testing.assert_close(obs, torch.cat([e.reset(seed=s)[0] for e, s in zip(apart, seeds, strict=True)]))
    g = torch.Generator().manual_seed(0)
    for _ in range(250):  # past Pendulum's 200-step episodes: the discounted returns restart
        actions = torch.rand((len(seeds) * n, 1), generator=g) * 4 - 2
        out = together.step(actions)
        parts = [e.step(actions[k * n:(k + 1) * n]) for k, e in enumerate(apart)]
        for i in range(4):
            torch.testing.assert_close(out[i], torch.cat([p[i] for p in parts]), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out[4]["final_obs"], torch.cat([p[4]["final_obs"] for p in parts]), rtol=1e-6,
                                   atol=1e-6)
    for cls in (NormalizeObservation, NormalizeReward):
        rms = find_wrapper(together, cls).rms
        for k, e in enumerate(apart):
            alone = find_wrapper(e, cls).rms
            torch.testing.assert_close(rms.mean[k], alone.mean)
            torch.testing.assert_close(rms.var[k], alone.var)
            torch.testing.assert_close(rms.count[k], alone.count)
    assert not torch.allclose(find_wrapper(together, NormalizeObservation).rms.mean[0],
                              find_wrapper(together, NormalizeObservation).rms.mean[1])  # the seeds' differ


def test_a_non_finite_loss_of_one_seed_names_it_and_updates_no_seed():
    from rlpg.errors import NonFiniteError
    from rlpg.optim import step_with_clip

    obs_space, act_space = SPACES["box"]
    stacked = StackedActorCritic(policies(obs_space, act_space))
    before = {n: p.detach().clone() for n, p in stacked.named_parameters()}
    obs = observations(obs_space)
    opt = make_optimizer("adam", stacked.parameters(), 1e-2)
    scale = torch.tensor([1.0, float("nan"), 1.0])
    loss = (stacked.value(obs) ** 2).mean(-1) * scale  # seed index 1's loss is NaN
    with pytest.raises(NonFiniteError, match="non-finite loss for seed index 1 of 3"):
        step_with_clip(opt, loss, list(stacked.named_parameters()), 0.5, per_seed=True)
    for n, p in stacked.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None
