import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import kl_divergence

from rlpg import policies
from rlpg.errors import ConfigError, UnsupportedSpaceError
from rlpg.policies import (
    ACTIVATIONS,
    LOG_STD_MIN,
    MLP,
    ActorCritic,
    MultiCategorical,
    Tanh,
    detached,
    freeze,
    tanh,
)

BOX = gym.spaces.Box(-1, 1, (3,), np.float32)


@pytest.mark.parametrize(
    "space, action_shape, dtype",
    [
        (gym.spaces.Discrete(4), (), torch.int64),
        (gym.spaces.Box(-2, 2, (2,), np.float32), (2,), torch.float32),
        (gym.spaces.MultiDiscrete([3, 2, 5]), (3,), torch.int64),
    ],
)
def test_heads_shapes_and_log_probs(space, action_shape, dtype):
    torch.manual_seed(0)
    pi = ActorCritic(BOX, space, (16,))
    obs = torch.randn(7, 3)
    action, logp, value = pi.act(obs)
    assert action.shape == (7, *action_shape) and action.dtype == dtype
    assert logp.shape == (7,) and value.shape == (7,)
    d = pi.dist(obs)
    torch.testing.assert_close(d.log_prob(action), logp)
    assert d.entropy().shape == (7,)
    mode = pi(obs)
    assert mode.shape == action.shape
    assert kl_divergence(detached(d), d).abs().max() < 1e-6


def test_multicategorical_is_a_product_of_categoricals():
    logits = torch.randn(5, 3 + 2)
    d = MultiCategorical(logits, [3, 2])
    a = d.sample()
    c1 = torch.distributions.Categorical(logits=logits[:, :3])
    c2 = torch.distributions.Categorical(logits=logits[:, 3:])
    torch.testing.assert_close(d.log_prob(a), c1.log_prob(a[:, 0]) + c2.log_prob(a[:, 1]))
    torch.testing.assert_close(d.entropy(), c1.entropy() + c2.entropy())


def test_log_std_is_kept_from_collapsing():
    pi = ActorCritic(BOX, gym.spaces.Box(-1, 1, (2,), np.float32))
    with torch.no_grad():
        pi.actor.log_std.fill_(-50.0)
    std = pi.dist(torch.zeros(1, 3)).base_dist.scale
    assert torch.allclose(std, torch.tensor(np.exp(LOG_STD_MIN), dtype=torch.float32))


def test_discrete_observations_are_one_hot():
    pi = ActorCritic(gym.spaces.Discrete(5), gym.spaces.Discrete(2), (8,))
    assert pi.preprocess(torch.tensor([0, 4])).tolist() == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]


def test_unsupported_spaces_name_what_is_supported():
    with pytest.raises(UnsupportedSpaceError, match="actions: Discrete, Box"):
        ActorCritic(BOX, gym.spaces.Tuple([gym.spaces.Discrete(2)]))
    with pytest.raises(UnsupportedSpaceError, match="observation space"):
        ActorCritic(gym.spaces.Dict({"a": BOX}), gym.spaces.Discrete(2))


def test_actor_and_critic_parameter_lists_are_explicit_and_disjoint():
    pi = ActorCritic(BOX, gym.spaces.Box(-1, 1, (2,), np.float32), (8,))
    actor = dict(pi.actor_parameters())
    critic = dict(pi.critic_parameters())
    assert "actor.log_std" in actor and not set(actor) & set(critic)
    assert set(actor) | set(critic) == {n for n, _ in pi.named_parameters()}


def test_freeze_for_fine_tuning():
    pi = ActorCritic(BOX, gym.spaces.Discrete(2), (8, 8))
    names = freeze(pi, ["actor.net.0", "critic"])
    assert names == sorted(
        [
            "actor.net.0.weight",
            "actor.net.0.bias",
            "critic.0.weight",
            "critic.0.bias",
            "critic.2.weight",
            "critic.2.bias",
            "critic.4.weight",
            "critic.4.bias",
        ]
    )
    assert not pi.actor.net[0].weight.requires_grad and pi.actor.net[2].weight.requires_grad
    assert [n for n, _ in pi.actor_parameters()] == [
        "actor.net.2.weight",
        "actor.net.2.bias",
        "actor.net.4.weight",
        "actor.net.4.bias",
    ]
    with pytest.raises(ConfigError, match="matches no parameter"):
        freeze(pi, ["actor.nope"])


def test_gumbel_categorical_samples_the_right_distribution():
    from rlpg.policies import GumbelCategorical

    torch.manual_seed(0)
    probs = torch.tensor([0.1, 0.6, 0.3])
    d = GumbelCategorical(logits=probs.log())
    samples = d.sample((20000,))
    freq = torch.bincount(samples, minlength=3).float() / 20000
    assert torch.allclose(freq, probs, atol=0.015)


# Tanh is torch.tanh (in place where MLP may overwrite a Linear output). Inputs span tanh's whole range, including
# saturation (|x| > 9) and tiny values.
def _tanh_input(rows: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 64, generator=g, dtype=dtype) * 3
    x[0, :4] = torch.tensor([0.0, 1e-9, -20.0, 20.0], dtype=dtype)
    return x


@pytest.mark.parametrize("rows", [8, 4096])
def test_tanh_is_torch_tanh_with_and_without_a_graph(rows):
    x = _tanh_input(rows)
    with torch.no_grad():
        assert torch.equal(Tanh()(x), torch.tanh(x))
        assert torch.equal(tanh(x.clone(), inplace=True), torch.tanh(x))
    xg = x.clone().requires_grad_()
    y = Tanh()(xg)
    assert type(y.grad_fn).__name__ == "TanhBackward0"  # torch's own, double-differentiable backward
    g = torch.randn_like(x)
    (grad,) = torch.autograd.grad(y, xg, g)
    torch.testing.assert_close(grad, g * (1 - torch.tanh(x) ** 2), rtol=0, atol=2.5e-6)


def test_tanh_inplace_only_without_a_graph():
    x = _tanh_input(4096)
    with torch.no_grad():
        y = tanh(x)
        assert not torch.equal(y, x)  # the input is kept
        z = tanh(x.clone(), inplace=True)
        x2 = x.clone()
        assert tanh(x2, inplace=True).data_ptr() == x2.data_ptr()
    torch.testing.assert_close(z, y, rtol=0, atol=0)
    xg = x.clone().requires_grad_()
    out = tanh(xg, inplace=True)
    assert out.data_ptr() != xg.data_ptr()
    torch.testing.assert_close(xg.detach(), x, rtol=0, atol=0)


class PreActivationResidual(nn.Module):
    """tanh(h) + h with h = W x + b: the pre-activation is still needed after the activation ran."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 64)
        self.act = ACTIVATIONS["tanh"]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        return self.act(h) + h


@pytest.mark.parametrize("rows", [8, 4096])
def test_tanh_module_never_overwrites_a_pre_activation_someone_holds(rows):
    torch.manual_seed(0)
    x = _tanh_input(rows)
    block = PreActivationResidual()
    with torch.no_grad():  # as in a rollout
        h = block.linear(x)
        torch.testing.assert_close(block(x), torch.tanh(h) + h, rtol=0, atol=1e-6)
        # a Tanh in the MLP after a module that is not a Linear (here: the input itself) leaves it alone too
        net = MLP(Tanh(), nn.Linear(64, 2))
        x_before = x.clone()
        net(x)
        assert torch.equal(x, x_before)
    # the actor's MLP: a forward hook that keeps a Linear's output sees the pre-activation, not its tanh
    policy = ActorCritic(gym.spaces.Box(-1.0, 1.0, (64,), np.float32), gym.spaces.Discrete(3))
    kept = []
    handle = policy.actor.net[0].register_forward_hook(lambda m, i, o: kept.append(o))
    with torch.no_grad():
        logits_hooked = policy.actor.net(x)
    handle.remove()
    with torch.no_grad():
        expected = nn.functional.linear(x, policy.actor.net[0].weight, policy.actor.net[0].bias)
        torch.testing.assert_close(kept[0], expected, rtol=0, atol=0)
        torch.testing.assert_close(policy.actor.net(x), logits_hooked, rtol=0, atol=1e-6)


def test_mlp_writes_tanh_into_the_linear_output_without_a_graph(monkeypatch):
    net = ActorCritic(BOX, gym.spaces.Discrete(2)).actor.net
    assert isinstance(net, MLP) and [type(m) for m in net] == [nn.Linear, Tanh, nn.Linear, Tanh, nn.Linear]
    calls = []
    real = policies.tanh
    monkeypatch.setattr(policies, "tanh", lambda x, inplace=False: calls.append(inplace) or real(x, inplace))
    x = torch.randn(4096, BOX.shape[0])
    with torch.no_grad():
        fast = net(x)
    assert calls == [True, True]  # both hidden layers, in place
    calls.clear()
    slow = nn.Sequential(*net)(x)  # the same layers as plain modules: out of place, with a graph
    assert calls == [False, False]
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=1e-6)


def test_log_std_outside_its_range_can_come_back():
    # a plain clamp has zero gradient outside [LOG_STD_MIN, LOG_STD_MAX]: a parameter that crossed a bound was stuck
    from rlpg.policies import LOG_STD_MAX, LOG_STD_MIN

    box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    policy = ActorCritic(gym.spaces.Box(-1.0, 1.0, (3,), np.float32), box)
    obs = torch.randn(16, 3)
    for raw, loss_sign, expect_grad in [
        (LOG_STD_MIN - 2.0, -1.0, True),  # below the range; maximising entropy asks for a larger std: passes
        (LOG_STD_MIN - 2.0, 1.0, False),  # below; a smaller std would push it further out: dropped
        (LOG_STD_MAX + 1.0, 1.0, True),  # above; minimising entropy brings it back: passes
        (LOG_STD_MAX + 1.0, -1.0, False),
        (0.0, 1.0, True),  # inside: the ordinary gradient
    ]:
        with torch.no_grad():
            policy.actor.log_std.fill_(raw)
        policy.zero_grad()
        dist = policy.dist(obs)
        assert torch.allclose(dist.base_dist.scale.log(), torch.tensor(min(max(raw, LOG_STD_MIN), LOG_STD_MAX)))
        (loss_sign * dist.entropy().mean()).backward()
        grad = policy.actor.log_std.grad
        if expect_grad:
            torch.testing.assert_close(grad, torch.full((2,), loss_sign * 1.0))  # d entropy / d log_std = 1 per dim
        else:
            assert torch.equal(grad, torch.zeros(2))
    # one dimension out, one in (the CPU's plain-clamp shortcut applies only when all are in): each its own rule
    with torch.no_grad():
        policy.actor.log_std.copy_(torch.tensor([LOG_STD_MIN - 2.0, 0.0]))
    policy.zero_grad()
    policy.dist(obs).entropy().mean().backward()
    assert torch.equal(policy.actor.log_std.grad, torch.tensor([0.0, 1.0]))
    # inside the range the shortcut and the autograd Function agree, first and second derivatives
    from rlpg.policies import _ClampPassingInward, clamp_passing_inward

    x = torch.tensor([LOG_STD_MIN, -0.3, LOG_STD_MAX], requires_grad=True)
    grads = []
    for fn in (clamp_passing_inward, _ClampPassingInward.apply):
        (g,) = torch.autograd.grad((fn(x, LOG_STD_MIN, LOG_STD_MAX).exp() ** 2).sum(), x, create_graph=True)
        grads.append((g, torch.autograd.grad(g.sum(), x)[0]))
    assert clamp_passing_inward(x, LOG_STD_MIN, LOG_STD_MAX).grad_fn.name() == "ClampBackward1"
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    # gradient descent on -entropy from below the range walks the parameter back into it
    with torch.no_grad():
        policy.actor.log_std.fill_(LOG_STD_MIN - 2.0)
    opt = torch.optim.SGD([policy.actor.log_std], lr=0.5)
    for _ in range(6):
        opt.zero_grad()
        (-policy.dist(obs).entropy().mean()).backward()
        opt.step()
    assert (policy.actor.log_std > LOG_STD_MIN).all()


@pytest.mark.parametrize("shape", [(5, 3), (4, 6, 2)])
def test_sample_with_log_prob_is_sample_then_log_prob(shape):
    """The rollout's one-pass draw takes the same numbers from the generator and gives the same action and log-prob
    as sample() followed by log_prob(); other distributions go through those two calls."""
    from torch.distributions import Independent, Normal

    from rlpg.policies import GumbelCategorical, sample_with_log_prob

    logits = torch.randn(shape)
    d = GumbelCategorical(logits=logits, validate_args=False)
    torch.manual_seed(3)
    action, logp = sample_with_log_prob(d)
    after = torch.rand(1)
    torch.manual_seed(3)
    expected = d.sample()
    assert torch.equal(action, expected) and torch.equal(logp, d.log_prob(expected))
    assert torch.equal(after, torch.rand(1))  # as many numbers drawn
    gauss = Independent(Normal(torch.zeros(shape), torch.ones(shape)), 1)
    torch.manual_seed(5)
    action, logp = sample_with_log_prob(gauss)
    torch.manual_seed(5)
    expected = gauss.sample()
    assert torch.equal(action, expected) and torch.equal(logp, gauss.log_prob(expected))


def test_mlp_calls_its_layers_directly_only_where_no_hook_or_tracer_could_tell(monkeypatch):
    """Without hooks MLP runs nn.Linear's and Tanh's functions itself (not through Module.__call__): the same numbers
    and gradients as the module calls; a hook on a layer, or a global one, sends it through the module calls."""
    torch.manual_seed(0)
    net = ActorCritic(BOX, gym.spaces.Discrete(2)).actor.net
    x = torch.randn(64, BOX.shape[0])
    direct = []
    real = MLP._direct
    monkeypatch.setattr(MLP, "_direct", lambda self, x: direct.append(1) or real(self, x))
    out = net(x)
    assert direct == [1]
    out.square().sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    reference = nn.Sequential(*net)(x)  # the same layers called as modules
    reference.square().sum().backward()
    assert torch.equal(out, reference)
    for g, p in zip(grads, net.parameters(), strict=True):
        assert torch.equal(g, p.grad)
    with torch.no_grad():
        assert torch.equal(net(x), reference)
    seen = []
    handle = net[1].register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    direct.clear()
    with torch.no_grad():
        net(x)
    assert direct == [] and len(seen) == 1
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(type(m)))
    try:
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    assert direct == [] and nn.Linear in seen and Tanh in seen


@pytest.mark.parametrize("batch", [(7,), (3, 5)])
def test_gumbel_categorical_log_prob_is_categoricals_with_its_gradient(batch):
    from torch.distributions import Categorical

    from rlpg.policies import GumbelCategorical

    torch.manual_seed(0)
    raw = torch.randn(*batch, 4, requires_grad=True)
    actions = torch.randint(0, 4, batch)
    d = GumbelCategorical(logits=raw, validate_args=False)
    ours = d.log_prob(actions)
    theirs = Categorical.log_prob(d, actions)  # torch's broadcasting gather on the same normalised logits
    assert torch.equal(ours, theirs)
    g_ours, = torch.autograd.grad(ours.sum(), raw, retain_graph=True)
    g_theirs, = torch.autograd.grad(theirs.sum(), raw)
    assert torch.equal(g_ours, g_theirs)
    reference = Categorical(logits=raw, validate_args=False)  # torch's own, from the raw logits
    assert torch.equal(ours, reference.log_prob(actions))
    # other shapes (one action for every row, sample shapes) still broadcast as Categorical does
    one = torch.tensor(2)
    assert torch.equal(d.log_prob(one), Categorical.log_prob(d, one))
