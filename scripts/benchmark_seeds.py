"""K seeds' gradient steps: K separate networks vs one stacked network (batched linear layers, rlpg.stacked) vs
`torch.func.vmap` over `functional_call` on the same stacked parameters.

    python scripts/benchmark_seeds.py                   # K = 1, 4, 16, 64; CartPole-sized MLPs, minibatch 256
    python scripts/benchmark_seeds.py --seeds 16 --batch 64 --obs 11 --actions 3

One step = forward of actor and critic, a PPO-shaped loss (log-prob x advantage, squared value error), backward and an
Adam step, for all K seeds. The three ways are timed interleaved in one process (medians of --repeats), so the ratios
hold on a shared machine; each way's parameters after the steps are checked equal across the three.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch
from torch.func import functional_call, stack_module_state, vmap

from rlpg.optim import make_optimizer
from rlpg.policies import ActorCritic
from rlpg.stacked import StackedActorCritic


def build(k: int, obs: int, actions: int) -> list[ActorCritic]:
    out = []
    for s in range(k):
        torch.manual_seed(s)
        out.append(ActorCritic(gym.spaces.Box(-1, 1, (obs,)), gym.spaces.Discrete(actions)))
    return out


def plain(seq: torch.nn.Sequential) -> torch.nn.Sequential:
    """The same layers, parameter names and weights, with torch.nn.Tanh for rlpg's Tanh."""
    return torch.nn.Sequential(*[torch.nn.Tanh() if type(m).__name__ == "Tanh" else m for m in seq])


def measure(k: int, args: argparse.Namespace) -> dict[str, float]:
    """Median milliseconds per step of the three ways for K = k seeds."""
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(k, args.batch, args.obs, generator=g)
    act = torch.randint(0, args.actions, (k, args.batch), generator=g)
    adv = torch.randn(k, args.batch, generator=g)

    separate = build(k, args.obs, args.actions)
    sep_opts = [make_optimizer("adam", p.parameters(), 1e-3) for p in separate]
    stacked = StackedActorCritic(build(k, args.obs, args.actions))
    st_opt = make_optimizer("adam", stacked.parameters(), 1e-3)
    # the architecture (vmap supplies the weights), with torch's own Tanh: rlpg's MLP writes its activations in
    # place where no graph is recorded, and under vmap the per-seed tensors do not show the outer graph
    template = build(1, args.obs, args.actions)[0]
    base = torch.nn.Module()
    base.actor = torch.nn.Module()
    base.actor.net = plain(template.actor.net)
    base.critic = plain(template.critic)
    base = base.to("meta")
    params, _ = stack_module_state(build(k, args.obs, args.actions))
    params = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    vm_opt = make_optimizer("adam", params.values(), 1e-3)

    def one(policy, o, a, v):
        d = policy.dist(o)
        return -(d.log_prob(a) * v).mean(-1) + ((policy.value(o) - v) ** 2).mean(-1)

    def step_separate() -> None:
        for i, (p, opt) in enumerate(zip(separate, sep_opts, strict=True)):
            opt.zero_grad(set_to_none=True)
            one(p, obs[i], act[i], adv[i]).backward()
            opt.step()

    def step_stacked() -> None:
        st_opt.zero_grad(set_to_none=True)
        one(stacked, obs, act, adv).sum().backward()
        st_opt.step()

    def loss_of(p, o, a, v):
        net = {n.removeprefix("actor.net."): t for n, t in p.items() if n.startswith("actor.net.")}
        crit = {n.removeprefix("critic."): t for n, t in p.items() if n.startswith("critic.")}
        logits = functional_call(base.actor.net, net, (o,))
        value = functional_call(base.critic, crit, (o,)).squeeze(-1)
        logp = torch.log_softmax(logits, -1).gather(-1, a.unsqueeze(-1)).squeeze(-1)
        return -(logp * v).mean() + ((value - v) ** 2).mean()

    batched_loss = vmap(loss_of)

    def step_vmap() -> None:
        vm_opt.zero_grad(set_to_none=True)
        batched_loss(params, obs, act, adv).sum().backward()
        vm_opt.step()

    ways = {"separate": step_separate, "stacked": step_stacked, "vmap": step_vmap}
    times: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            fn()  # warm-up of this repeat
            start = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    med = {w: statistics.median(t) for w, t in times.items()}
    # the three computed the same steps: seed 0's first weight agrees
    w_sep = separate[0].actor.net[0].weight
    torch.testing.assert_close(stacked.actor.net[0].weight[0], w_sep, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(params["actor.net.0.weight"][0], w_sep, rtol=1e-3, atol=1e-5)
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--obs", type=int, default=4)
    parser.add_argument("--actions", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'K':>4} {'separate ms':>12} {'stacked ms':>11} {'vmap ms':>9} {'stacked/separate':>17} "
          f"{'vmap/separate':>14}")
    for k in args.seeds:
        med = measure(k, args)
        print(f"{k:>4} {med['separate']:>12.2f} {med['stacked']:>11.2f} {med['vmap']:>9.2f} "
              f"{med['separate'] / med['stacked']:>16.1f}x {med['separate'] / med['vmap']:>13.1f}x")


if __name__ == "__main__":
    main()
