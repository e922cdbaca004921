"""NPG/TRPO's Fisher-vector products: rlpg's Gauss-Newton form (rlpg.trust_region.gauss_newton_product) vs
differentiating the KL's gradient a second time, F v = grad((grad KL) . v), on one seed and on K stacked seeds.

    python scripts/benchmark_fvp.py                         # Pendulum-sized actor (3 -> 64 -> 64 -> 1), 2048 rows
    python scripts/benchmark_fvp.py --obs 4 --actions 2 --discrete --threads 1

One call is what an update does: a forward pass of the actor, the product's set-up, and --products products (CG's
iterations). Both forms are timed alternately in one process (median rounds, see benchmark_policy.py) and give the
same products (the largest difference, relative to the largest entry, is printed).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch
from benchmark_policy import alternated_medians
from torch.distributions import kl_divergence

from rlpg.policies import ActorCritic, detached
from rlpg.runtime import keep_heap_memory
from rlpg.stacked import StackedActorCritic
from rlpg.trust_region import Avp, fisher_vector_product_seeds, flat_grad_seeds


def hessian_form(policy: StackedActorCritic, obs: torch.Tensor, params: list[torch.Tensor]) -> Avp:
    """F v = grad((grad KL) . v): the first gradient built with create_graph=True, differentiated for each v."""
    dist = policy.dist(obs)
    grad_kl = flat_grad_seeds(kl_divergence(detached(dist), dist).mean(-1), params, retain_graph=True,
                              create_graph=True)
    return lambda v: flat_grad_seeds((grad_kl * v).sum(-1), params, retain_graph=True)


def gauss_newton_form(policy: StackedActorCritic, obs: torch.Tensor, params: list[torch.Tensor]) -> Avp:
    return fisher_vector_product_seeds(policy, obs, params, damping=0.0)


def measure(k: int, args: argparse.Namespace, act_space: gym.Space) -> tuple[dict[str, float], float]:
    """Microseconds per call of each form on k seeds, and the products' largest relative difference."""
    torch.manual_seed(0)
    policy = StackedActorCritic([ActorCritic(gym.spaces.Box(-1, 1, (args.obs,)), act_space) for _ in range(k)])
    params = [p for _, p in policy.actor_parameters()]
    obs = torch.randn(k, args.rows, args.obs)
    v = torch.randn(k, sum(p[0].numel() for p in params), generator=torch.Generator().manual_seed(1))
    forms = {"hessian": hessian_form, "gauss-newton": gauss_newton_form}

    def call(form: str) -> torch.Tensor:
        fvp = forms[form](policy, obs, params)
        for _ in range(args.products):
            out = fvp(v)
        return out

    us = alternated_medians({name: (lambda name=name: call(name)) for name in forms}, 1, args.repeats)
    a, b = call("hessian"), call("gauss-newton")
    return us, float((a - b).abs().max() / a.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rows", type=int, default=2048, help="batch rows per seed")
    parser.add_argument("--obs", type=int, default=3)
    parser.add_argument("--actions", type=int, default=1)
    parser.add_argument("--discrete", action="store_true", help="a categorical policy (default: Gaussian)")
    parser.add_argument("--products", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_heap_memory()  # as `rlpg train` does: no page faults on the large activations
    act_space = gym.spaces.Discrete(args.actions) if args.discrete else gym.spaces.Box(-1, 1, (args.actions,))
    print(f"{'seeds':>6}{'rows':>7}  {'grad of grad KL':>16}{'Gauss-Newton':>14}{'speed-up':>10}  max rel. diff "
          f"({args.products} products + set-up, ms, {args.threads} thread(s))")
    for k in args.seeds:
        us, diff = measure(k, args, act_space)
        print(f"{k:>6}{args.rows:>7}  {us['hessian'] / 1e3:>16.1f}{us['gauss-newton'] / 1e3:>14.1f}"
              f"{us['hessian'] / us['gauss-newton']:>9.2f}x  {diff:.1e}")


if __name__ == "__main__":
    main()
