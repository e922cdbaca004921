"""The autograd habits rlpg's users rely on, exercised on rlpg's own policies and rollouts."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlpg.envs import make
from rlpg.policies import ActorCritic
from rlpg.rollout import Collector

BOX = gym.spaces.Box(-1, 1, (3,), np.float32)


def policy(action_space=None, seed=0):
    torch.manual_seed(seed)
    return ActorCritic(BOX, action_space or gym.spaces.Discrete(2), (8,))


def test_dynamic_graph_follows_the_forward_pass():
    pi = policy()
    obs = torch.randn(4, 3)
    logp = pi.dist(obs).log_prob(torch.tensor([0, 1, 0, 1]))
    assert logp.requires_grad and logp.grad_fn is not None
    assert not obs.requires_grad  # inputs are leaves without grad
    # the graph is rebuilt on each call: a python branch decides which head gets a gradient
    for use_value in (True, False):
        pi.zero_grad(set_to_none=True)
        out = pi.value(obs).sum() if use_value else pi.dist(obs).logits.sum()
        out.backward()
        assert (pi.critic[0].weight.grad is not None) == use_value
        assert (pi.actor.net[0].weight.grad is not None) == (not use_value)


def test_rollouts_and_targets_carry_no_graph():
    pi = policy()
    env = make("CartPole-v1", 2, backend="torch")
    col = Collector(env, ActorCritic(env.single_observation_space, env.single_action_space, (8,)), 8)
    r = col.collect()
    for x in (r.obs, r.logp, r.values, r.next_values, r.rewards):
        assert not x.requires_grad and x.grad_fn is None
    v = pi.value(torch.randn(5, 3))
    target = v.detach() + 1.0  # a TD-style target must not backpropagate into the critic twice
    assert target.grad_fn is None and v.grad_fn is not None
    with torch.no_grad():
        assert pi.value(torch.randn(5, 3)).grad_fn is None


def test_backward_on_a_non_scalar_needs_a_gradient_argument():
    pi = policy()
    obs, actions = torch.randn(6, 3), torch.randint(0, 2, (6,))
    weights = torch.randn(6)
    logp = pi.dist(obs).log_prob(actions)
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        logp.backward()
    logp.backward(gradient=weights)  # vector-Jacobian product: d(sum_i w_i logp_i)/d theta
    g1 = pi.actor.net[0].weight.grad.clone()
    pi.zero_grad()
    (pi.dist(obs).log_prob(actions) * weights).sum().backward()
    torch.testing.assert_close(pi.actor.net[0].weight.grad, g1)


def test_retain_graph_and_create_graph():
    pi = policy(gym.spaces.Box(-1, 1, (2,), np.float32))
    loss = pi.dist(torch.randn(4, 3)).entropy().mean() + pi.actor.net[0].weight.pow(2).sum()
    loss.backward(retain_graph=True)
    loss.backward()  # allowed: the graph was retained; gradients accumulate
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()
    # double backprop: d/dx of (dy/dx . v) with y = x^3 is 6 x v (the Hessian-vector product)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (g,) = torch.autograd.grad((x**3).sum(), x, create_graph=True)
    (hv,) = torch.autograd.grad(g @ torch.tensor([1.0, 0.5]), x)
    torch.testing.assert_close(hv, torch.tensor([6.0, 6.0]))


def test_save_and_load_weights_reproduce_the_policy(tmp_path):
    a = policy(gym.spaces.MultiDiscrete([3, 2]), seed=1)
    torch.save(a.state_dict(), tmp_path / "w.pt")
    b = policy(gym.spaces.MultiDiscrete([3, 2]), seed=2)
    obs = torch.randn(5, 3)
    assert not torch.equal(a(obs), b(obs)) or not torch.equal(a.value(obs), b.value(obs))
    b.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    assert torch.equal(a(obs), b(obs)) and torch.equal(a.value(obs), b.value(obs))


def test_viewing_weights_and_gradients_by_name():
    pi = policy()
    pi.value(torch.randn(4, 3)).sum().backward()
    grads = {n: p.grad for n, p in pi.named_parameters()}
    assert grads["critic.0.weight"].shape == pi.critic[0].weight.shape
    assert grads["actor.net.0.weight"] is None  # the actor took no part in this loss
