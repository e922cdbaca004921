"""rlpg.trust_region: CG on known systems, the Fisher-vector product against an explicit Hessian of the KL,
flat parameter round-trips and the line search's accept / reject / restore logic."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence
from torch.func import functional_call

from rlpg.policies import ActorCritic, detached
from rlpg.trust_region import (
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    flat_params,
    line_search,
    natural_gradient_direction,
    set_flat_params,
    split_flat,
)

torch.set_default_dtype(torch.float32)


def spd(n: int, cond: float = 10.0, seed: int = 0) -> torch.Tensor:
    """A random symmetric positive-definite [n, n] matrix with eigenvalues in [1, cond] (float64)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.linspace(1.0, cond, n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T


# ------------------------------------------------------------------------------------- conjugate gradient
def test_cg_solves_spd_system() -> None:
    A = spd(8)
    b = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x, iters, rr = conjugate_gradient(lambda v: A @ v, b, iters=50, residual_tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-10)
    assert iters <= 8 + 1  # exact in n steps up to rounding
    assert rr <= 1e-20
    torch.testing.assert_close(rr, (b - A @ x).dot(b - A @ x), rtol=1e-2, atol=1e-18)


def test_cg_iteration_cap_and_residual() -> None:
    A = spd(30, cond=1000.0)
    b = torch.ones(30, dtype=torch.float64)
    x3, iters, rr3 = conjugate_gradient(lambda v: A @ v, b, iters=3, residual_tol=1e-30)
    assert iters == 3
    # the returned residual is the squared norm of b - A x
    torch.testing.assert_close(rr3, (b - A @ x3).pow(2).sum(), rtol=1e-6, atol=0.0)
    assert rr3 > 1e-6  # ill-conditioned: 3 iterations are not enough
    # CG minimises the A-norm of the error over growing Krylov spaces (the residual norm need not fall)
    x_star = torch.linalg.solve(A, b)
    x10, _, _ = conjugate_gradient(lambda v: A @ v, b, iters=10, residual_tol=1e-30)
    a_err = lambda x: (x - x_star) @ A @ (x - x_star)  # noqa: E731
    assert a_err(x10) < a_err(x3)
    x60, iters, rr60 = conjugate_gradient(lambda v: A @ v, b, iters=60, residual_tol=1e-16)
    assert iters < 60 and rr60 <= 1e-16  # stopped by the tolerance, not the cap
    torch.testing.assert_close(x60, x_star)


def test_cg_stops_at_tolerance() -> None:
    A = torch.eye(5, dtype=torch.float64) * 2.0
    b = torch.arange(1.0, 6.0, dtype=torch.float64)
    x, iters, rr = conjugate_gradient(lambda v: A @ v, b, iters=10)
    assert iters == 1  # a multiple of the identity is solved in one step
    torch.testing.assert_close(x, b / 2)
    assert rr <= 1e-10


def test_cg_zero_rhs_and_non_positive_curvature() -> None:
    x, iters, _ = conjugate_gradient(lambda v: v, torch.zeros(4), iters=10)
    assert iters == 0 and torch.all(x == 0)
    # A = -I: p.Ap < 0 at once, CG stops without dividing by it and returns x = 0 (not NaN / a wrong sign)
    x, iters, rr = conjugate_gradient(lambda v: -v, torch.ones(4), iters=10)
    assert iters == 1 and torch.all(x == 0) and torch.isfinite(rr)
    # singular A (zero along b): also stops with a finite x
    A = torch.diag(torch.tensor([1.0, 0.0]))
    x, _, _ = conjugate_gradient(lambda v: A @ v, torch.tensor([0.0, 1.0]), iters=10)
    assert torch.isfinite(x).all()


def test_natural_gradient_skips_non_positive_curvature() -> None:
    step = natural_gradient_direction(lambda v: -v, torch.ones(3), max_kl=0.01, cg_iters=10)
    assert step.skipped and torch.all(step.fullstep == 0)


def test_natural_gradient_step_has_kl_radius() -> None:
    A = spd(6).float()
    g = torch.randn(6, generator=torch.Generator().manual_seed(3))
    step = natural_gradient_direction(lambda v: A @ v, g, max_kl=0.02, cg_iters=20)
    assert not step.skipped
    torch.testing.assert_close(0.5 * step.fullstep @ A @ step.fullstep, torch.tensor(0.02), rtol=1e-4, atol=0.0)
    torch.testing.assert_close(step.fullstep, step.step_coef * torch.linalg.solve(A, g), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(step.expected_improve, g.dot(step.fullstep))
    # CG stopped early (3 iterations on an ill-conditioned system): the radius still holds for the x it found
    A = spd(30, cond=1000.0)
    step = natural_gradient_direction(lambda v: A @ v, torch.ones(30, dtype=torch.float64), max_kl=0.02, cg_iters=3)
    assert step.cg_iterations == 3 and step.cg_residual > 1e-6
    torch.testing.assert_close(0.5 * step.fullstep @ A @ step.fullstep, torch.tensor(0.02, dtype=torch.float64))


# ------------------------------------------------------------------------------ flat parameters / gradients
def test_flat_params_round_trip() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    params = list(net.parameters())
    flat = flat_params(params)
    assert flat.shape == (3 * 4 + 4 + 4 * 2 + 2,)
    new = torch.randn_like(flat)
    set_flat_params(params, new)
    torch.testing.assert_close(flat_params(params), new)
    assert [v.shape for v in split_flat(new, params)] == [p.shape for p in params]
    torch.testing.assert_close(params[2], new[16:24].view(2, 4))
    new[0] = 123.0  # set_flat_params copied, it did not alias
    assert params[0][0, 0] != 123.0
    with pytest.raises(ValueError, match="elements"):
        set_flat_params(params, new[:-1])


def test_flat_grad_matches_backward_and_zeros_unused() -> None:
    net = torch.nn.Linear(3, 2)
    unused = torch.nn.Parameter(torch.ones(5))
    x = torch.randn(7, 3)
    loss = net(x).pow(2).sum()
    g = flat_grad(loss, [net.weight, unused, net.bias], retain_graph=True)
    loss.backward()
    assert g.shape == (6 + 5 + 2,)
    torch.testing.assert_close(g[:6], net.weight.grad.reshape(-1))
    assert torch.all(g[6:11] == 0)
    torch.testing.assert_close(g[11:], net.bias.grad)


# ---------------------------------------------------------------------------------- Fisher-vector product
SPACES = {
    "categorical": gym.spaces.Discrete(3),
    "gaussian": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
    "multidiscrete": gym.spaces.MultiDiscrete([3, 2]),
}


@pytest.mark.parametrize("kind", list(SPACES))
def test_fvp_equals_explicit_kl_hessian(kind: str) -> None:
    torch.manual_seed(0)
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    policy = ActorCritic(obs_space, SPACES[kind], hidden_sizes=(4,)).double()
    # a larger output layer and a non-zero log-std than the 0.01 init, so every block of F is non-trivial
    with torch.no_grad():
        policy.actor.net[-1].weight.normal_(0.0, 1.0)
        if kind == "gaussian":
            policy.actor.log_std.copy_(torch.tensor([-0.3, 0.2]))
    obs = torch.randn(16, 3, dtype=torch.float64)
    named = policy.actor_parameters()
    params = [p for _, p in named]
    names = [n.removeprefix("actor.") for n, _ in named]
    theta0 = flat_params(params)
    old = detached(policy.actor(obs))  # the actor itself: policy.preprocess casts to float32

    def mean_kl(theta: torch.Tensor) -> torch.Tensor:
        new = functional_call(policy.actor, dict(zip(names, split_flat(theta, params), strict=True)), (obs,))
        return kl_divergence(old, new).mean()

    F = torch.autograd.functional.hessian(mean_kl, theta0)  # [P, P]
    assert F.shape == (theta0.numel(), theta0.numel())
    assert torch.linalg.matrix_norm(F) > 1e-3
    damping = 0.05
    fvp = fisher_vector_product(policy.actor, obs, params, damping)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):  # the same closure for several v (the first gradient is reused)
        v = torch.randn(theta0.numel(), dtype=torch.float64, generator=gen)
        torch.testing.assert_close(fvp(v), F @ v + damping * v, rtol=1e-7, atol=1e-9)
    # F is positive semi-definite: the Hessian of a KL at its minimum
    assert torch.linalg.eigvalsh(F).min() > -1e-9


def test_fvp_is_zero_for_parameters_outside_the_actor() -> None:
    torch.manual_seed(0)
    policy = ActorCritic(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2), hidden_sizes=(4,))
    obs = torch.randn(8, 3)
    critic_w = policy.critic[0].weight  # not in the policy distribution's graph
    params = [p for _, p in policy.actor_parameters()] + [critic_w]
    fvp = fisher_vector_product(policy, obs, params, damping=0.0)
    v = torch.ones(sum(p.numel() for p in params))
    out = fvp(v)
    assert torch.all(out[-critic_w.numel():] == 0)
    assert out[:-critic_w.numel()].abs().sum() > 0


# ------------------------------------------------------------------------------------------- line search
class Toy:
    """A toy 'policy' whose parameters are x [2]: surrogate = -(x - target)^2 summed, kl = 0.5 |x - x0|^2."""

    def __init__(self, target: list[float], x0: list[float]) -> None:
        self.target, self.x0 = torch.tensor(target), torch.tensor(x0)
        self.x = self.x0.clone()
        self.calls: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.x = x.clone()
        self.calls.append(self.x)
        return -(x - self.target).pow(2).sum(), 0.5 * (x - self.x0).pow(2).sum()


def test_line_search_accepts_full_step() -> None:
    toy = Toy([1.0, 0.0], [0.0, 0.0])
    res = line_search(toy, toy.x0, torch.tensor([0.1, 0.0]), torch.tensor(0.2), max_kl=0.01)
    assert res.accepted and res.steps == 1
    torch.testing.assert_close(res.params, torch.tensor([0.1, 0.0]))
    torch.testing.assert_close(toy.x, res.params)  # the parameters are left at the accepted point
    torch.testing.assert_close(res.kl, torch.tensor(0.005))
    torch.testing.assert_close(res.improvement, torch.tensor(1.0 - 0.81))


def test_line_search_backtracks_until_kl_fits() -> None:
    toy = Toy([1.0, 0.0], [0.0, 0.0])
    # full step 0.8: kl 0.32; 0.4: 0.08; 0.2: 0.02; 0.1: 0.005 <= 0.01 -> 4th candidate
    res = line_search(toy, toy.x0, torch.tensor([0.8, 0.0]), torch.tensor(1.0), max_kl=0.01, backtrack_coef=0.5)
    assert res.accepted and res.steps == 4
    torch.testing.assert_close(res.params, torch.tensor([0.1, 0.0]))
    assert res.kl <= 0.01


def test_line_search_rejects_and_restores() -> None:
    toy = Toy([-1.0, 0.0], [0.0, 0.0])  # the step points away from the optimum: never improves
    res = line_search(toy, toy.x0, torch.tensor([0.1, 0.0]), torch.tensor(0.2), max_kl=0.01, max_backtracks=5)
    assert not res.accepted and res.steps == 5
    torch.testing.assert_close(res.params, toy.x0)
    torch.testing.assert_close(toy.x, toy.x0)  # the last f_eval call restored x0
    assert res.kl == 0 and res.improvement == 0
    assert len(toy.calls) == 1 + 5 + 1  # f0, five candidates, the restore


def test_line_search_rejects_non_finite() -> None:
    def f_eval(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x.sum() if x.sum() == 0 else torch.tensor(float("nan"))), torch.tensor(0.0)

    res = line_search(f_eval, torch.zeros(2), torch.ones(2), torch.tensor(1.0), max_kl=0.01, max_backtracks=3)
    assert not res.accepted


def test_line_search_accept_ratio() -> None:
    toy = Toy([1.0, 0.0], [0.0, 0.0])
    # improvement of the full step 0.1 is 0.19; expected 10.0 -> ratio 0.019 < 0.1: backtracks, all fail
    res = line_search(toy, toy.x0, torch.tensor([0.1, 0.0]), torch.tensor(10.0), max_kl=1.0, max_backtracks=3,
                      accept_ratio=0.1)
    assert not res.accepted
    res = line_search(toy, toy.x0, torch.tensor([0.1, 0.0]), torch.tensor(0.2), max_kl=1.0, accept_ratio=0.1)
    assert res.accepted and res.steps == 1
