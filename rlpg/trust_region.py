"""Second-order machinery shared by NPG and TRPO: flat parameter vectors, conjugate gradient, the
Fisher-vector product, the natural-gradient step and a backtracking line search. The update steps both
agents share (the direction, critic fitting, metrics) are in rlpg/trust_update.py, so neither agent
inherits from the other.

TRPO = `natural_gradient_direction` + `line_search`, two explicit calls (agents/trpo.py); NPG takes the
direction's full step (agents/npg.py). P below is the number of actor parameters (the flat length).

The functions work on an explicit list of parameters, `[p for _, p in policy.actor_parameters()]`:
selecting "actor" parameters by name matching (SB3-contrib skips names containing "value") breaks
silently on custom policies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence

from rlpg.distributed import all_reduce_sum, batch_mean, global_size
from rlpg.policies import ActorCritic, detached, dist_tensors, with_tensors

Avp = Callable[[Tensor], Tensor]


def flat_params(params: Sequence[Tensor]) -> Tensor:
    """The parameters concatenated into one detached vector [P] (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in params])


def set_flat_params(params: Sequence[Tensor], flat: Tensor) -> None:
    """Copy the vector `flat` [P] into `params` in place (the inverse of `flat_params`)."""
    sizes = [p.numel() for p in params]
    if flat.numel() != sum(sizes):
        raise ValueError(f"flat vector has {flat.numel()} elements, the parameters {sum(sizes)}")
    with torch.no_grad():
        for p, chunk in zip(params, torch.split(flat, sizes), strict=True):
            p.copy_(chunk.view_as(p))


def split_flat(flat: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """Views of `flat` [P] shaped like each parameter."""
    return [c.view_as(p) for c, p in zip(torch.split(flat, [p.numel() for p in params]), params, strict=True)]


def flat_grad(output: Tensor, params: Sequence[Tensor], retain_graph: bool = False,
              create_graph: bool = False) -> Tensor:
    """d output / d params as one vector [P]; a parameter the output does not depend on gets zeros."""
    grads = torch.autograd.grad(output, list(params), retain_graph=retain_graph, create_graph=create_graph,
                                allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    return torch.cat([g.reshape(-1) for g in grads])


def conjugate_gradient(Avp: Avp, b: Tensor, iters: int, residual_tol: float = 1e-10) -> tuple[Tensor, int, Tensor]:
    """Solve A x = b for a symmetric positive-definite A given only v -> A v (Nocedal & Wright, alg. 5.2).

    b: [P]. Returns (x [P], iterations used = products A p evaluated, ||b - A x||^2): the *squared*
    norm of the recursive residual, a device scalar. Stops after `iters` products, or once the squared
    residual is <= `residual_tol` (absolute, as in OpenAI baselines and Spinning Up).

    It also stops, keeping the current x, when p.Ap <= 1e-12 * p.p: A is not positive definite along p
    (a bug in the product, or a Fisher matrix singular along p without damping) and alpha = r.r / p.Ap
    would be huge, infinite or of the wrong sign -- the NaN parameters of rll/rllab#24 and
    boyu-ai/Hands-on-RL#108 (no epsilon in alpha). Syncs with the host once per iteration, for the
    stopping test; the product itself costs far more.
    """
    x, _, iterations, rr = _cg(Avp, b, iters, residual_tol)
    return x, iterations, rr


def _cg(Avp: Avp, b: Tensor, iters: int, residual_tol: float) -> tuple[Tensor, Tensor, int, Tensor]:
    """conjugate_gradient, also returning the recursive residual r = b - A x [P]."""
    x = torch.zeros_like(b)
    r = b.clone()  # r = b - A x with x = 0
    p = b.clone()
    rr = r.dot(r)
    i = 0
    if not rr > residual_tol:  # b = 0: x = 0 is exact (and p.Ap would divide 0 by 0)
        return x, r, 0, rr
    for i in range(1, iters + 1):  # noqa: B007 - i is returned
        Ap = Avp(p)
        pAp = p.dot(Ap)
        ok = pAp > 1e-12 * p.dot(p)
        alpha = torch.where(ok, rr / torch.where(ok, pAp, 1.0), 0.0)  # alpha = 0 leaves x and r unchanged
        x.add_(alpha * p)
        r.sub_(alpha * Ap)
        rr_new = r.dot(r)
        if bool(~ok | (rr_new <= residual_tol)):  # the one sync per iteration
            return x, r, i, rr_new
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, r, i, rr


def fisher_vector_product(policy: nn.Module, obs: Tensor, params: Sequence[Tensor], damping: float,
                          dist: Distribution | None = None) -> Avp:
    """v [P] -> (F + damping I) v, with F the Fisher matrix of the policy on `obs` at the current parameters.

    F is the Hessian of mean KL(old || new) at new = old (Schulman et al. 2015, appendix C), computed in its
    Gauss-Newton form by double backprop (see `gauss_newton_product`). `policy` is an ActorCritic (its `dist`) or any
    module mapping obs to a Distribution; pass `dist`, the distribution at the current parameters with its graph, to
    reuse a forward pass. Works for the distributions rlpg.policies.dist_tensors knows (Categorical, diagonal
    Gaussian, MultiCategorical). Damping keeps F + damping I positive definite where F is singular (directions the
    batch does not excite).
    """
    params = list(params)
    if dist is None:
        dist = policy.dist(obs) if hasattr(policy, "dist") else policy(obs)
    # under torchrun each rank differentiates its share of the global mean KL and the products are summed over ranks
    product = gauss_newton_product(dist, params, lambda kl: batch_mean(kl, global_size(obs.shape[0])))

    def fvp(v: Tensor) -> Tensor:
        return all_reduce_sum(torch.cat([u.reshape(-1) for u in product(split_flat(v, params))])) + damping * v

    return fvp


def gauss_newton_product(dist: Distribution, params: Sequence[Tensor], mean_kl: Callable[[Tensor], Tensor]
                         ) -> Callable[[list[Tensor]], list[Tensor]]:
    """The Fisher-vector product on parameter-shaped tensors: v (one tensor per parameter) -> F v, likewise.

    With z the tensors the distribution is built from (logits; mean and standard deviation) and J = dz/dtheta, the
    Hessian of the mean KL(old || new) is J^T H J + sum_i dKL/dz_i d^2 z_i/dtheta^2, where H is the KL's Hessian in
    z. At new = old the KL is at its minimum, dKL/dz = 0, and F = J^T H J exactly (the Gauss-Newton form; Martens
    2020, "New insights and perspectives on the natural gradient method", section 9). Each product is three passes:

        J v        = d/dw [(J^T w) . v]   J^T w built once with create_graph=True, linear in the dummy w
        H u        = d/dz [(dKL/dz) . u]  dKL/dz built once with create_graph=True (elementwise in z: cheap)
        J^T H J v                         an ordinary backward through the retained forward graph

    Differentiating grad KL itself, F v = grad((grad KL) . v), gives the same product but also computes the terms
    multiplied by dKL/dz = 0 (tanh's second derivative, the layers' weight-by-activation cross terms): twice the work
    on 16 stacked seeds (`python scripts/benchmark_trpo.py --fvp`). `mean_kl` maps the per-row KL to the scalar (or
    with K seeds, the sum of the per-seed means) that is differentiated.
    """
    params = list(params)
    z = dist_tensors(dist)
    live = [i for i, t in enumerate(z) if t.requires_grad]
    leaves = [t.detach().requires_grad_(t.requires_grad) for t in z]
    new = with_tensors(dist, leaves)
    z, leaves = [z[i] for i in live], [leaves[i] for i in live]
    grad_kl = torch.autograd.grad(mean_kl(kl_divergence(detached(new), new)), leaves, create_graph=True)
    dummies = [torch.zeros_like(t, requires_grad=True) for t in z]
    jt_w = torch.autograd.grad(z, params, dummies, create_graph=True, allow_unused=True)
    linked = [i for i, g in enumerate(jt_w) if g is not None]  # parameters the distribution depends on

    def product(v: list[Tensor]) -> list[Tensor]:
        jv = torch.autograd.grad([jt_w[i] for i in linked], dummies, [v[i] for i in linked], retain_graph=True,
                                 allow_unused=True, materialize_grads=True)
        hjv = torch.autograd.grad(grad_kl, leaves, jv, retain_graph=True)
        return list(torch.autograd.grad(z, params, hjv, retain_graph=True, allow_unused=True,
                                        materialize_grads=True))

    return product


@dataclass
class NaturalStep:
    """The natural-gradient step for a KL radius: fullstep = sqrt(2 max_kl / x.Fx) x with x = F^-1 g."""

    fullstep: Tensor
    """[P]: the step to add to the flat parameters (zeros when skipped)"""
    expected_improve: Tensor
    """g . fullstep: the surrogate's first-order predicted improvement (scalar)"""
    step_coef: Tensor
    """sqrt(2 max_kl / x.Fx) (scalar; 0 when skipped)"""
    cg_iterations: int
    cg_residual: Tensor
    """||g - F x||^2 after CG (scalar)"""
    skipped: bool
    """x.Fx was not positive and finite, or g was zero: no step"""


def natural_gradient_direction(fvp: Avp, g: Tensor, max_kl: float, cg_iters: int,
                               residual_tol: float = 1e-10) -> NaturalStep:
    """x = CG(F, g) and the step that reaches mean KL ~= max_kl under the quadratic model 0.5 s.F s.

    g: [P] gradient of the surrogate (ascent direction). A non-positive or non-finite x.Fx (an FVP bug or a
    degenerate batch; rll/rllab#24, tensorforce#26 and the negative denominator in sb3-contrib#38 took
    sqrt of it and wrote NaN into the policy) skips the step instead.
    """
    x, r, iters, residual = _cg(fvp, g, cg_iters, residual_tol)
    # x.Fx = x.(g - r), since CG keeps r = g - F x: one Fisher-vector product fewer than computing F x
    # (the recursive residual drifts from the true one by rounding only, over 10-20 iterations)
    xFx = x.dot(g - r)
    skipped = not bool(torch.isfinite(xFx) & (xFx > 0) & torch.isfinite(x).all())  # one sync
    if skipped:
        zero = torch.zeros((), device=g.device)
        return NaturalStep(torch.zeros_like(g), zero, zero, iters, residual, True)
    coef = torch.sqrt(2.0 * max_kl / xFx)
    fullstep = coef * x
    return NaturalStep(fullstep, g.dot(fullstep), coef, iters, residual, False)


@dataclass
class LineSearchResult:
    accepted: bool
    steps: int
    """candidate steps evaluated"""
    params: Tensor
    """[P] the parameters now set: the accepted candidate, or x0 when none was accepted"""
    kl: Tensor
    """mean KL(old || new) at `params` (0 when restored)"""
    improvement: Tensor
    """surrogate(params) - surrogate(x0) (0 when restored)"""


def line_search(f_eval: Callable[[Tensor], tuple[Tensor, Tensor]], x0: Tensor, fullstep: Tensor,
                expected_improve: Tensor, max_kl: float, max_backtracks: int = 10, backtrack_coef: float = 0.5,
                accept_ratio: float = 0.0, f0: Tensor | None = None) -> LineSearchResult:
    """Backtracking line search (TRPO, Schulman et al. 2015, appendix C).

    f_eval(x) sets the parameters to x [P] and returns (surrogate, mean KL(old || new)), both scalars; the
    surrogate is maximised. Tries x0 + backtrack_coef^k * fullstep for k = 0 .. max_backtracks - 1 and
    accepts the first candidate that is finite, has KL <= max_kl, improves the surrogate (> 0) and, with
    accept_ratio > 0, improves it by more than accept_ratio * coef^k * expected_improve (the Armijo-like
    test of the original modular_rl code). If none is accepted, x0 is restored. `f0` is the surrogate at
    x0 (computed when not given). One host sync per candidate.
    """
    if f0 is None:
        f0, _ = f_eval(x0)
    frac = 1.0
    for k in range(1, max_backtracks + 1):
        x = x0 + frac * fullstep
        f, kl = f_eval(x)
        improve = f - f0
        ok = torch.isfinite(f) & torch.isfinite(kl) & (kl <= max_kl) & (improve > 0)
        if accept_ratio > 0:
            ok = ok & (improve > accept_ratio * frac * expected_improve)
        if bool(ok):
            return LineSearchResult(True, k, x, kl.detach(), improve.detach())
        frac *= backtrack_coef
    f_eval(x0)  # restore
    zero = torch.zeros((), device=x0.device)
    return LineSearchResult(False, max_backtracks, x0, zero, zero)


def policy_evaluator(policy: ActorCritic, params: Sequence[Tensor], obs: Tensor, old: Distribution,
                     objective: Callable[[Distribution], Tensor]) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """The `f_eval` of `line_search`: x [P] -> set the actor to x, return (objective(dist), mean KL(old || dist)).

    obs: [B, ...]; `old` is the detached distribution before the step; `objective` is the agent's
    surrogate of the new distribution (the loss stays in the agent; under torchrun its share of the global mean,
    like the KL here, and both are summed over ranks). Runs under no_grad.
    """
    count = global_size(obs.shape[0])

    @torch.no_grad()
    def f_eval(x: Tensor) -> tuple[Tensor, Tensor]:
        set_flat_params(params, x)
        dist = policy.dist(obs)
        if count is None:
            return objective(dist), kl_divergence(old, dist).mean()
        f, kl = all_reduce_sum(torch.stack([objective(dist), batch_mean(kl_divergence(old, dist), count)]))
        return f, kl

    return f_eval


# ------------------------------------------------------------------------------------------------ K seeds at once
# The same machinery for K independent policies stacked along a leading seed dimension (rlpg.stacked): flat vectors
# are [K, P], scalars [K]. The seeds never mix (the KL, surrogate and their gradients are sums of per-seed terms), so
# each seed's CG, step and line search are its own; a seed that has finished (CG converged, a candidate accepted)
# is frozen by a mask while the others go on, which leaves it exactly where it would have stopped alone.
def flat_params_seeds(params: Sequence[Tensor]) -> Tensor:
    """[K, P]: seed k's parameters concatenated in row k (a copy)."""
    return torch.cat([p.detach().reshape(p.shape[0], -1) for p in params], dim=1)


def set_flat_params_seeds(params: Sequence[Tensor], flat: Tensor) -> None:
    """Copy `flat` [K, P] into the stacked `params` in place."""
    with torch.no_grad():
        for p, chunk in zip(params, split_flat_seeds(flat, params), strict=True):
            p.copy_(chunk)


def split_flat_seeds(flat: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """`flat` [K, P] cut into tensors shaped like each stacked parameter [K, ...]."""
    sizes = [p[0].numel() for p in params]
    return [c.reshape(p.shape) for c, p in zip(torch.split(flat, sizes, dim=1), params, strict=True)]


def flat_grad_seeds(output: Tensor, params: Sequence[Tensor], retain_graph: bool = False,
                    create_graph: bool = False) -> Tensor:
    """d output.sum() / d params as [K, P]: with per-seed outputs [K], row k is seed k's own gradient."""
    grads = torch.autograd.grad(output.sum(), list(params), retain_graph=retain_graph, create_graph=create_graph,
                                allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)


def conjugate_gradient_seeds(Avp: Avp, b: Tensor, iters: int, residual_tol: float = 1e-10
                             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`_cg` for K systems at once: b [K, P], Avp [K, P] -> [K, P] (block diagonal). Returns (x, r [K, P],
    iterations [K], squared residual [K]); each seed stops on its own test (converged, or p.Ap not positive), its x
    and r then frozen by alpha = 0 while the others go on. One host sync per iteration, as for one seed."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = (r * r).sum(-1)
    active = rr > residual_tol
    iterations = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
    reported = rr.clone()  # each seed's squared residual when it stopped (or now)
    if not bool(active.any()):
        return x, r, iterations, reported
    for i in range(1, iters + 1):
        Ap = Avp(p)
        pAp = (p * Ap).sum(-1)
        ok = pAp > 1e-12 * (p * p).sum(-1)
        alpha = torch.where(ok & active, rr / torch.where(ok, pAp, 1.0), 0.0).unsqueeze(1)
        x.add_(alpha * p)
        r.sub_(alpha * Ap)
        rr_new = (r * r).sum(-1)
        iterations = torch.where(active, i, iterations)
        reported = torch.where(active, rr_new, reported)
        active = active & ok & (rr_new > residual_tol)
        if not bool(active.any()):  # the one sync per iteration
            break
        p = torch.where(active.unsqueeze(1), r + (rr_new / rr).unsqueeze(1) * p, p)
        rr = torch.where(active, rr_new, rr)
    return x, r, iterations, reported


def fisher_vector_product_seeds(policy: nn.Module, obs: Tensor, params: Sequence[Tensor], damping: float,
                                dist: Distribution | None = None) -> Avp:
    """fisher_vector_product for K stacked policies: obs [K, B, ...], v [K, P] -> (F_k + damping I) v_k per row."""
    params = list(params)
    if dist is None:
        dist = policy.dist(obs)
    product = gauss_newton_product(dist, params, lambda kl: kl.mean(-1).sum())  # the sum of each seed's mean KL

    def fvp(v: Tensor) -> Tensor:
        return torch.cat([u.reshape(u.shape[0], -1) for u in product(split_flat_seeds(v, params))], 1) + damping * v

    return fvp


def natural_gradient_direction_seeds(fvp: Avp, g: Tensor, max_kl: float, cg_iters: int,
                                     residual_tol: float = 1e-10) -> NaturalStep:
    """natural_gradient_direction per seed: g [K, P]; the NaturalStep's scalars are [K] tensors and `skipped` a [K]
    bool tensor (a seed whose x.Fx is not positive and finite takes no step)."""
    x, r, iters, residual = conjugate_gradient_seeds(fvp, g, cg_iters, residual_tol)
    xFx = (x * (g - r)).sum(-1)
    skipped = ~(torch.isfinite(xFx) & (xFx > 0) & torch.isfinite(x).all(-1))
    coef = torch.where(skipped, 0.0, torch.sqrt(2.0 * max_kl / torch.where(skipped, 1.0, xFx)))
    fullstep = torch.where(skipped.unsqueeze(1), 0.0, coef.unsqueeze(1) * x)
    return NaturalStep(fullstep, (g * fullstep).sum(-1), coef, iters, residual, skipped)  # type: ignore[arg-type]


def line_search_seeds(f_eval: Callable[[Tensor], tuple[Tensor, Tensor]], x0: Tensor, fullstep: Tensor,
                      expected_improve: Tensor, max_kl: float, max_backtracks: int, backtrack_coef: float,
                      accept_ratio: float, f0: Tensor, skipped: Tensor) -> LineSearchResult:
    """line_search per seed: x0, fullstep [K, P]; f_eval(x [K, P]) -> (surrogate [K], KL [K]). Each seed accepts
    its first candidate that passes its tests and keeps it while the others try smaller steps; a seed that accepts
    none (or whose step was `skipped`, [K] bool) is restored to x0. The result's fields are per seed ([K]); steps
    counts the candidates a seed tried (0 when skipped). The parameters are left at the result."""
    k = x0.shape[0]
    accepted = torch.zeros(k, dtype=torch.bool, device=x0.device)
    done = skipped.clone()
    steps = torch.where(skipped, 0, max_backtracks)
    final = x0.clone()
    kl_out = torch.zeros(k, device=x0.device)
    improve_out = torch.zeros(k, device=x0.device)
    frac = 1.0
    for i in range(1, max_backtracks + 1):
        if bool(done.all()):  # one sync per candidate, as for one seed
            break
        x = torch.where(done.unsqueeze(1), final, x0 + frac * fullstep)
        f, kl = f_eval(x)
        improve = f - f0
        ok = torch.isfinite(f) & torch.isfinite(kl) & (kl <= max_kl) & (improve > 0)
        if accept_ratio > 0:
            ok = ok & (improve > accept_ratio * frac * expected_improve)
        new = ok & ~done
        final = torch.where(new.unsqueeze(1), x, final)
        kl_out = torch.where(new, kl.detach(), kl_out)
        improve_out = torch.where(new, improve.detach(), improve_out)
        steps = torch.where(new, i, steps)
        accepted |= new
        done |= new
        frac *= backtrack_coef
    f_eval(final)  # the accepted candidates, x0 for the others
    return LineSearchResult(accepted, steps, final, kl_out, improve_out)  # type: ignore[arg-type]


def policy_evaluator_seeds(policy: nn.Module, params: Sequence[Tensor], obs: Tensor, old: Distribution,
                           objective: Callable[[Distribution], Tensor]) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """policy_evaluator for K stacked policies: x [K, P] -> (objective [K], mean KL(old || new) per seed [K])."""

    @torch.no_grad()
    def f_eval(x: Tensor) -> tuple[Tensor, Tensor]:
        set_flat_params_seeds(params, x)
        dist = policy.dist(obs)
        return objective(dist), kl_divergence(old, dist).mean(-1)

    return f_eval
