import math

import pytest
import torch
from torch import nn

from rlpg.errors import ConfigError, NonFiniteError
from rlpg.optim import GradNormMeter, grad_norm_metrics, make_optimizer, step_with_clip


def setup(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(8, 3)
    return net, x


def loss_of(net, x, scale=1.0):
    return scale * (net(x) ** 2).sum()


def hand_grads(net, x, scale=1.0):
    net.zero_grad()
    loss_of(net, x, scale).backward()
    return {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf])
def test_norms_match_hand_computation_and_clipping(norm_type):
    net, x = setup()
    grads = hand_grads(net, x, scale=10.0)
    flat = torch.cat([g.flatten() for g in grads.values()])
    if math.isinf(norm_type):
        per_hand = [g.abs().max() for g in grads.values()]
        total_hand = flat.abs().max()
    else:
        per_hand = [g.abs().pow(norm_type).sum() ** (1 / norm_type) for g in grads.values()]
        total_hand = flat.abs().pow(norm_type).sum() ** (1 / norm_type)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    params = list(net.named_parameters())
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    max_norm = 0.1
    total, per = step_with_clip(opt, loss_of(net, x, 10.0), params, max_grad_norm=max_norm, norm_type=norm_type)
    torch.testing.assert_close(total, total_hand)
    torch.testing.assert_close(per, torch.stack(per_hand))
    # SGD lr=1: the update is the clipped gradient, whose norm is max_norm
    coef = max_norm / (total_hand + 1e-6)
    for n, p in net.named_parameters():
        torch.testing.assert_close(before[n] - p.detach(), grads[n] * coef, rtol=1e-5, atol=1e-7)
    # the same result as torch's own clip_grad_norm_
    net2, _ = setup()
    net2.load_state_dict({k: v for k, v in before.items()})
    loss_of(net2, x, 10.0).backward()
    ref = torch.nn.utils.clip_grad_norm_(net2.parameters(), max_norm, norm_type)
    torch.testing.assert_close(ref, total)


def test_clip_by_value_then_norm():
    net, x = setup()
    grads = hand_grads(net, x, scale=10.0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    total, _ = step_with_clip(
        opt, loss_of(net, x, 10.0), list(net.named_parameters()), max_grad_norm=None, clip_value=0.05
    )
    for n, p in net.named_parameters():
        torch.testing.assert_close(before[n] - p.detach(), grads[n].clamp(-0.05, 0.05))
    assert total > 0.05  # reported norm is before clipping


def test_no_clipping_below_threshold():
    net, x = setup()
    grads = hand_grads(net, x)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    step_with_clip(
        torch.optim.SGD(net.parameters(), lr=1.0), loss_of(net, x), list(net.named_parameters()), max_grad_norm=1e9
    )
    for n, p in net.named_parameters():
        torch.testing.assert_close(before[n] - p.detach(), grads[n])


def test_non_finite_loss_never_reaches_parameters():
    net, x = setup()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = make_optimizer("adam", net.parameters(), 1e-3)
    with pytest.raises(NonFiniteError, match="non-finite"):
        step_with_clip(opt, loss_of(net, x) * float("nan"), list(net.named_parameters()), 0.5)
    for n, p in net.named_parameters():
        assert torch.equal(before[n], p.detach())


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop"])
def test_optimizers_reduce_a_quadratic(name):
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(5))
    opt = make_optimizer(name, [w], lr=0.05, momentum=0.9)
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0.9
    start = (w**2).sum().item()
    for _ in range(50):
        step_with_clip(opt, (w**2).sum(), [("w", w)], max_grad_norm=None)
    assert (w**2).sum().item() < 0.1 * start


def test_frozen_parameters_are_excluded_and_unchanged():
    net, x = setup()
    net[0].weight.requires_grad_(False)
    frozen = net[0].weight.detach().clone()
    opt = make_optimizer("sgd", net.parameters(), 0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == 3
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    step_with_clip(opt, loss_of(net, x), params, 0.5)
    assert torch.equal(net[0].weight, frozen)
    assert net[0].weight.grad is None  # autograd never computed it: the graph stops at frozen leaves


def test_bad_optimizer_and_nothing_to_train():
    with pytest.raises(ConfigError, match="unknown optimizer"):
        make_optimizer("adagrad", [nn.Parameter(torch.zeros(1))], 0.1)
    with pytest.raises(ConfigError, match="no trainable"):
        make_optimizer("adam", [nn.Parameter(torch.zeros(1), requires_grad=False)], 0.1)


def test_meter_and_metric_names():
    meter = GradNormMeter(["a", "b"])
    meter.add(torch.tensor(2.0), torch.tensor([1.0, 3.0]))
    meter.add(torch.tensor(4.0), torch.tensor([3.0, 5.0]))
    m = meter.metrics()
    assert set(m) == {"grad_norm/total", "grad_norm/a", "grad_norm/b"}
    assert m["grad_norm/total"].item() == 3.0 and m["grad_norm/b"].item() == 4.0
    assert grad_norm_metrics(["x"], torch.tensor(1.0), torch.tensor([1.0]))["grad_norm/x"].item() == 1.0


def _twin_adams(**kw):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 2))
    twin = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 2))
    twin.load_state_dict(net.state_dict())
    return net, twin, make_optimizer("adam", net.parameters(), 1e-2, **kw), make_optimizer("adam", twin.parameters(),
                                                                                           1e-2, **kw)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_optimizer_step_is_adam_step_bit_for_bit(weight_decay):
    """The direct fused-Adam call gives the parameters and state of torch's Adam.step, step for step, through learning
    rate changes (first step included, where the shortcut leaves the state's creation to Adam.step)."""
    from rlpg import optim

    net, twin, opt, opt_twin = _twin_adams(weight_decay=weight_decay)
    x = torch.randn(64, 4)
    used = []
    for i in range(30):
        for model, o in ((net, opt), (twin, opt_twin)):
            o.zero_grad()
            (model(x) ** 2).mean().backward()
            for g in o.param_groups:
                g["lr"] = 1e-2 * (1 - i / 30)
        used.append(optim._fused_adam_args(opt_twin) is not None)
        opt.step()
        optim.optimizer_step(opt_twin)
    assert used[1:] == [opt.param_groups[0]["fused"]] * 29 and not used[0]
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[a][k], opt_twin.state[b][k]), k


def test_optimizer_step_leaves_hooks_and_other_settings_to_torch():
    from rlpg import optim

    net, _, opt, _ = _twin_adams()
    x = torch.randn(8, 4)
    (net(x) ** 2).mean().backward()
    opt.step()  # the state exists from here on
    assert optim._fused_adam_args(opt) is not None
    calls = []
    handle = opt.register_step_post_hook(lambda *a: calls.append(1))
    assert optim._fused_adam_args(opt) is None
    optim.optimizer_step(opt)
    assert calls == [1]
    handle.remove()
    opt.param_groups[0]["amsgrad"] = True
    assert optim._fused_adam_args(opt) is None
    opt.param_groups[0]["amsgrad"] = False
    next(net.parameters()).grad = None  # a parameter without a gradient: Adam.step skips it
    assert optim._fused_adam_args(opt) is None
    sgd = make_optimizer("sgd", net.parameters(), 0.1)  # not Adam: optimizer_step calls its step
    before = [p.detach().clone() for p in net.parameters()]
    (net(x) ** 2).mean().backward()
    optim.optimizer_step(sgd)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_zero_grad_clears_gradients_and_respects_an_optimizers_own():
    from rlpg.optim import zero_grad

    net, _, opt, _ = _twin_adams()
    (net(torch.randn(8, 4)) ** 2).mean().backward()
    zero_grad(opt)
    assert all(p.grad is None for p in net.parameters())

    class Counting(torch.optim.SGD):
        calls = 0

        def zero_grad(self, set_to_none=True):
            Counting.calls += 1
            super().zero_grad(set_to_none)

    zero_grad(Counting(net.parameters(), lr=0.1))
    assert Counting.calls == 1


def test_a_finite_loss_and_norm_whose_sum_overflows_still_steps():
    """The quick finiteness test sums the loss and the gradient norm; 2e38 + 2e38 overflows float32, which must fall
    through to the exact test (both finite) rather than raise."""
    p = nn.Parameter(torch.tensor([1.0]))
    opt = make_optimizer("sgd", [p], 1e-40)
    total, _ = step_with_clip(opt, (p * 2e38).sum(), [("p", p)])
    assert math.isfinite(float(total)) and float(total) == pytest.approx(2e38)
    before = p.detach().clone()
    with pytest.raises(NonFiniteError, match="non-finite gradient"):  # sqrt at 0: loss 0, gradient inf
        step_with_clip(opt, torch.sqrt(p - before).sum(), [("p", p)])
    assert torch.equal(p.detach(), before)
