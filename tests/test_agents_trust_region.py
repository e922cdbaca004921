"""The updates of REINFORCE, NPG and TRPO on synthetic batches: KL radius, line search, skipped steps,
reward-to-go across episode boundaries and truncations, metric keys and config validation."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

import rlpg.trust_region as trust_region
from rlpg.agents import ALGOS, NPG, REINFORCE, TRPO, NPGConfig, REINFORCEConfig, TRPOConfig
from rlpg.errors import ConfigError
from rlpg.policies import ActorCritic, detached
from rlpg.trust_region import flat_params
from rlpg.types import Batch, Rollout

OBS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
ACTIONS = {
    "categorical": gym.spaces.Discrete(3),
    "gaussian": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
    "multidiscrete": gym.spaces.MultiDiscrete([3, 2]),
}
TR_KEYS = ["train/kl", "train/step_size", "train/cg_iterations", "train/cg_residual", "train/line_search_steps",
           "train/line_search_accepted", "train/surrogate_improvement", "train/step_skipped",
           "grad_norm/actor_total", "grad_norm/critic_total"]
SHARED_KEYS = ["train/policy_loss", "train/value_loss", "train/entropy", "train/explained_variance",
               "train/learning_rate"]


def synthetic(kind: str, size: int = 512, seed: int = 0) -> tuple[ActorCritic, Batch]:
    """A policy with a non-trivial output layer and a batch of its own actions with random advantages."""
    torch.manual_seed(seed)
    policy = ActorCritic(OBS, ACTIONS[kind], hidden_sizes=(32, 32))
    with torch.no_grad():
        policy.actor.net[-1].weight.mul_(50.0)  # away from the near-uniform 0.01 init
    obs = torch.randn(size, 4)
    with torch.no_grad():
        actions, logp, values = policy.act(obs)
    adv = torch.randn(size)
    return policy, Batch(obs, actions, logp, values, adv, values + adv)


def mean_kl(policy: ActorCritic, old: Any, obs: torch.Tensor) -> float:
    with torch.no_grad():
        return float(kl_divergence(old, policy.dist(obs)).mean())


def surrogate(policy: ActorCritic, batch: Batch) -> float:
    adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    with torch.no_grad():
        return float(((policy.dist(batch.obs).log_prob(batch.actions) - batch.logp).exp() * adv).mean())


def expected_grad_keys(policy: ActorCritic, with_critic: bool = True) -> set[str]:
    named = policy.actor_parameters() + (policy.critic_parameters() if with_critic else [])
    return {f"grad_norm/{n}" for n, _ in named}


# ---------------------------------------------------------------------------------------------- TRPO
@pytest.mark.parametrize("kind", list(ACTIONS))
def test_trpo_step_respects_kl_and_improves(kind: str) -> None:
    policy, batch = synthetic(kind)
    old = detached(policy.dist(batch.obs))
    before = surrogate(policy, batch)
    cfg = TRPOConfig(max_kl=0.01, vf_epochs=1, vf_minibatches=4)
    m = TRPO(policy, cfg).update(batch, progress=0.0)
    kl = mean_kl(policy, old, batch.obs)
    assert float(m["train/line_search_accepted"]) == 1.0
    assert 0.0 < kl <= cfg.max_kl * 1.001
    assert surrogate(policy, batch) > before
    torch.testing.assert_close(m["train/kl"], torch.tensor(kl), rtol=1e-4, atol=1e-7)
    assert set(TR_KEYS + SHARED_KEYS) <= set(m)
    assert expected_grad_keys(policy) <= set(m)
    assert all(torch.isfinite(v).all() for v in m.values())


def test_trpo_restores_when_no_step_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    policy, batch = synthetic("categorical")
    actor_before = flat_params([p for _, p in policy.actor_parameters()])
    critic_before = flat_params([p for _, p in policy.critic_parameters()])
    # a wrong direction (the negative of the natural step): the surrogate never improves
    real = trust_region.natural_gradient_direction

    def backwards(*args: Any, **kwargs: Any) -> Any:
        step = real(*args, **kwargs)
        step.fullstep = -step.fullstep
        return step

    monkeypatch.setattr(trust_region, "natural_gradient_direction", backwards)
    m = TRPO(policy, TRPOConfig(max_backtracks=4, vf_minibatches=4)).update(batch, 0.0)
    assert float(m["train/line_search_accepted"]) == 0.0
    assert float(m["train/line_search_steps"]) == 4.0
    assert float(m["train/kl"]) == 0.0 and float(m["train/step_size"]) == 0.0
    assert torch.equal(flat_params([p for _, p in policy.actor_parameters()]), actor_before)
    assert not torch.equal(flat_params([p for _, p in policy.critic_parameters()]), critic_before)  # critic fitted


# ----------------------------------------------------------------------------------------------- NPG
@pytest.mark.parametrize("kind", list(ACTIONS))
def test_npg_step_kl_close_to_max_kl(kind: str) -> None:
    policy, batch = synthetic(kind)
    old = detached(policy.dist(batch.obs))
    cfg = NPGConfig(max_kl=0.01, cg_damping=0.01, cg_iters=20, vf_epochs=1, vf_minibatches=4)
    m = NPG(policy, cfg).update(batch, 0.0)
    kl = mean_kl(policy, old, batch.obs)
    assert 0.5 * cfg.max_kl <= kl <= 1.5 * cfg.max_kl, kl  # the quadratic model 0.5 s.F s = max_kl
    assert float(m["train/step_skipped"]) == 0.0 and float(m["train/line_search_accepted"]) == 1.0
    assert set(TR_KEYS + SHARED_KEYS) <= set(m)
    assert expected_grad_keys(policy) <= set(m)
    assert float(m["train/surrogate_improvement"]) > 0


@pytest.mark.parametrize("agent", ["npg", "trpo"])
def test_non_positive_curvature_skips_the_step(agent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    policy, batch = synthetic("categorical")
    actor_before = flat_params([p for _, p in policy.actor_parameters()])
    # a broken Fisher product (-v): x.Fx <= 0 must not reach sqrt (rll/rllab#24)
    monkeypatch.setattr(trust_region, "fisher_vector_product", lambda *a, **k: (lambda v: -v))
    algo, config = ALGOS[agent]
    m = algo(policy, config(vf_minibatches=4)).update(batch, 0.0)
    assert float(m["train/step_skipped"]) == 1.0
    assert float(m["train/step_size"]) == 0.0
    assert torch.equal(flat_params([p for _, p in policy.actor_parameters()]), actor_before)
    assert all(torch.isfinite(v).all() for v in m.values())


def test_npg_undoes_a_step_whose_kl_blows_up(monkeypatch: pytest.MonkeyPatch) -> None:
    policy, batch = synthetic("categorical")
    actor_before = flat_params([p for _, p in policy.actor_parameters()])
    real = trust_region.natural_gradient_direction

    def huge(*args: Any, **kwargs: Any) -> Any:
        step = real(*args, **kwargs)
        step.fullstep = 100.0 * step.fullstep
        return step

    monkeypatch.setattr(trust_region, "natural_gradient_direction", huge)
    m = NPG(policy, NPGConfig(vf_minibatches=4)).update(batch, 0.0)
    assert float(m["train/line_search_accepted"]) == 0.0 and float(m["train/kl"]) == 0.0
    assert torch.equal(flat_params([p for _, p in policy.actor_parameters()]), actor_before)


def test_frozen_actor_parameters_are_left_out() -> None:
    policy, batch = synthetic("gaussian")
    policy.actor.log_std.requires_grad_(False)
    policy.actor.net[0].weight.requires_grad_(False)
    frozen = (policy.actor.log_std.clone(), policy.actor.net[0].weight.clone())
    m = TRPO(policy, TRPOConfig(vf_minibatches=4)).update(batch, 0.0)
    assert "grad_norm/actor.log_std" not in m and "grad_norm/actor.net.0.weight" not in m
    assert "grad_norm/actor.net.2.weight" in m
    assert torch.equal(policy.actor.log_std, frozen[0]) and torch.equal(policy.actor.net[0].weight, frozen[1])


@pytest.mark.parametrize("agent", ["npg", "trpo"])
def test_policy_loss_is_the_surrogate_after_the_step(agent: str) -> None:
    policy, batch = synthetic("gaussian")
    before = surrogate(policy, batch)
    algo, config = ALGOS[agent]
    m = algo(policy, config(vf_epochs=1, vf_minibatches=4)).update(batch, 0.0)
    assert float(m["train/line_search_accepted"]) == 1.0
    after = surrogate(policy, batch)
    assert after - before > 1e-3  # normalised advantages: `before` is ~0, so the loss before the step says nothing
    torch.testing.assert_close(m["train/policy_loss"], torch.tensor(-after), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m["train/surrogate_improvement"], torch.tensor(after - before), rtol=1e-5, atol=1e-6)


def test_policy_loss_without_a_kept_step_is_the_loss_before(monkeypatch: pytest.MonkeyPatch) -> None:
    policy, batch = synthetic("categorical")
    before = surrogate(policy, batch)
    monkeypatch.setattr(trust_region, "fisher_vector_product", lambda *a, **k: (lambda v: -v))  # step skipped
    m = TRPO(policy, TRPOConfig(vf_minibatches=4)).update(batch, 0.0)
    assert float(m["train/step_skipped"]) == 1.0 and float(m["train/surrogate_improvement"]) == 0.0
    torch.testing.assert_close(m["train/policy_loss"], torch.tensor(-before), rtol=0, atol=1e-6)


@pytest.mark.parametrize("agent", ["npg", "trpo"])
def test_actor_and_critic_grad_norms_are_separate_totals(agent: str) -> None:
    policy, batch = synthetic("gaussian")
    actor, critic = policy.actor_parameters(), policy.critic_parameters()
    # the actor's surrogate gradient and the critic's first (only) regression gradient, at the parameters before
    adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    ratio = (policy.dist(batch.obs).log_prob(batch.actions) - batch.logp).exp()
    g_actor = torch.autograd.grad((ratio * adv).mean(), [p for _, p in actor])
    v_loss = 0.5 * (policy.value(batch.obs) - batch.returns).pow(2).mean()
    g_critic = torch.autograd.grad(v_loss, [p for _, p in critic])
    algo, config = ALGOS[agent]
    m = algo(policy, config(vf_epochs=1, vf_minibatches=1, max_grad_norm=None)).update(batch, 0.0)
    assert "grad_norm/total" not in m  # a norm over two losses' gradients means nothing
    for (name, _), g in zip(actor + critic, g_actor + g_critic, strict=True):
        torch.testing.assert_close(m[f"grad_norm/{name}"], g.norm(), rtol=1e-4, atol=1e-7)
    actor_total = torch.cat([g.flatten() for g in g_actor]).norm()
    critic_total = torch.cat([g.flatten() for g in g_critic]).norm()
    torch.testing.assert_close(m["grad_norm/actor_total"], actor_total, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(m["grad_norm/critic_total"], critic_total, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------------------- REINFORCE
def rollout_with_boundaries() -> Rollout:
    """T = 4, N = 2. env 0: a termination at t = 1; env 1: a truncation at t = 2."""
    f, b = torch.tensor, torch.bool
    rewards = f([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    terminated = f([[0, 0], [1, 0], [0, 0], [0, 0]], dtype=b)
    truncated = f([[0, 0], [0, 0], [0, 1], [0, 0]], dtype=b)
    values = f([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    next_values = f([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0], [70.0, 80.0]])
    zero = torch.zeros(())
    return Rollout(torch.zeros(4, 2, 4), torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 2), values,
                   next_values, rewards, terminated, truncated, zero, zero, zero)


def test_reinforce_returns_across_boundaries_with_baseline() -> None:
    g = 0.9
    agent = REINFORCE(ActorCritic(OBS, ACTIONS["categorical"]), REINFORCEConfig(gamma=g, baseline=True))
    adv, ret = agent.advantages(rollout_with_boundaries())
    # env 0: episode [r=1, r=2 terminated] then [3, 4, rollout ends -> bootstrap V(s_T) = 70]
    env0 = [1 + g * 2, 2.0, 3 + g * (4 + g * 70), 4 + g * 70]
    # env 1: [1, 2, 3 truncated -> bootstrap V(final_obs) = 60] then [4, rollout ends -> bootstrap 80]
    env1 = [1 + g * (2 + g * (3 + g * 60)), 2 + g * (3 + g * 60), 3 + g * 60, 4 + g * 80]
    expected = torch.tensor([env0, env1]).T
    torch.testing.assert_close(ret, expected)
    torch.testing.assert_close(adv, expected - 0.5)


def test_reinforce_returns_without_baseline_do_not_bootstrap() -> None:
    g = 0.9
    agent = REINFORCE(ActorCritic(OBS, ACTIONS["categorical"]), REINFORCEConfig(gamma=g, baseline=False))
    adv, ret = agent.advantages(rollout_with_boundaries())
    env0 = [1 + g * 2, 2.0, 3 + g * 4, 4.0]
    env1 = [1 + g * (2 + g * 3), 2 + g * 3, 3.0, 4.0]
    torch.testing.assert_close(ret, torch.tensor([env0, env1]).T)
    torch.testing.assert_close(adv, ret)


@pytest.mark.parametrize("baseline", [True, False])
def test_reinforce_update_metrics_and_direction(baseline: bool) -> None:
    policy, batch = synthetic("categorical")
    before = [p.clone() for p in policy.parameters()]
    logp_before = policy.dist(batch.obs).log_prob(batch.actions).detach()
    cfg = REINFORCEConfig(baseline=baseline, learning_rate=1e-2, max_grad_norm=None)
    m = REINFORCE(policy, cfg).update(batch, 0.0)
    assert set(SHARED_KEYS + ["grad_norm/total"]) <= set(m)  # one optimizer over actor (and critic): one total
    names = expected_grad_keys(policy, with_critic=baseline)
    assert names <= set(m)
    assert len([k for k in m if k.startswith("grad_norm/")]) == len(names) + 1
    # the policy gradient step raises log-probs of positive-advantage actions relative to negative ones
    delta = policy.dist(batch.obs).log_prob(batch.actions).detach() - logp_before
    assert (delta * batch.advantages).mean() > 0
    critic_before = before[-len(policy.critic_parameters()):]
    critic_after = [p for _, p in policy.critic_parameters()]
    critic_moved = any(not torch.equal(a, b) for a, b in zip(critic_before, critic_after, strict=True))
    assert critic_moved == baseline


def test_reinforce_minibatches() -> None:
    policy, batch = synthetic("gaussian")
    m = REINFORCE(policy, REINFORCEConfig(update_epochs=2, num_minibatches=4)).update(batch, 0.5)
    assert float(m["train/learning_rate"]) == pytest.approx(0.5 * REINFORCEConfig().learning_rate)


def test_reinforce_reused_batch_is_importance_weighted() -> None:
    """Two SGD epochs over one batch: the first step is textbook REINFORCE, the second weights each sample's
    log-prob gradient by exp(logp_new - logp_old), the ratio against the policy that collected the batch."""
    policy, batch = synthetic("gaussian", size=256)
    reference, _ = synthetic("gaussian", size=256)  # the same seed: the same initial weights
    lr = 0.5
    cfg = REINFORCEConfig(baseline=False, learning_rate=lr, optimizer="sgd", momentum=0.0, anneal_lr=False,
                          max_grad_norm=None, update_epochs=2)
    REINFORCE(policy, cfg).update(batch, 0.0)
    params = [p for _, p in reference.actor_parameters()]
    adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    ratios = []
    for epoch in range(2):
        logp = reference.dist(batch.obs).log_prob(batch.actions)
        if epoch == 0:  # ratio = 1: the gradient is textbook REINFORCE's, -mean(grad logp * A)
            loss = -(logp * adv).mean()
        else:
            ratio = (logp - batch.logp).exp()
            ratios.append(ratio.detach())
            loss = -(ratio * adv).mean()
        with torch.no_grad():
            for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
                p -= lr * g
    assert (ratios[0] - 1).abs().max() > 0.1  # the second epoch is really off-policy
    for (name, p), q in zip(policy.actor_parameters(), params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


def test_reinforce_refuses_gae_lambda(capsys: pytest.CaptureFixture[str]) -> None:
    assert REINFORCEConfig().gae_lambda == 1.0  # Monte Carlo returns: what REINFORCE computes
    with pytest.raises(ConfigError, match=r"^--gae-lambda 0.95 does not apply to reinforce: .*Monte Carlo"):
        REINFORCEConfig(gae_lambda=0.95)
    from rlpg.trainer import resolve_configs

    with pytest.raises(ConfigError, match="--gae-lambda"):
        resolve_configs("reinforce", "CartPole-v1", {"gae_lambda": 0.9})


# ------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(("cls", "kwargs", "flag"), [
    (NPGConfig, {"max_kl": 0.0}, "--max-kl must be > 0"),
    (TRPOConfig, {"max_kl": -1.0}, "--max-kl must be > 0"),
    (NPGConfig, {"cg_iters": 0}, "--cg-iters must be > 0"),
    (TRPOConfig, {"cg_damping": -0.1}, "--cg-damping must be >= 0"),
    (NPGConfig, {"vf_epochs": 0}, "--vf-epochs"),
    (NPGConfig, {"kl_guard": 0.5}, "--kl-guard"),
    (TRPOConfig, {"backtrack_coef": 1.0}, "--backtrack-coef"),
    (TRPOConfig, {"max_backtracks": 0}, "--max-backtracks"),
    (TRPOConfig, {"accept_ratio": 2.0}, "--accept-ratio"),
    (REINFORCEConfig, {"update_epochs": 0}, "--update-epochs"),
    (REINFORCEConfig, {"ent_coef": -0.01}, "--ent-coef"),
    (REINFORCEConfig, {"gamma": 1.5}, "--gamma"),
])
def test_bad_config_values(cls: type, kwargs: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        cls(**kwargs)


@pytest.mark.parametrize(("cls", "field"), [(NPGConfig, "vf_minibatches"), (TRPOConfig, "vf_minibatches"),
                                            (REINFORCEConfig, "num_minibatches")])
def test_minibatches_must_divide_the_batch(cls: type, field: str) -> None:
    cfg = cls(**{field: 3})
    with pytest.raises(ConfigError, match=f"--{field.replace('_', '-')} 3 does not divide"):
        cfg.validate_batch(num_envs=4, num_steps=8)
    cls(**{field: 4}).validate_batch(num_envs=4, num_steps=8)
