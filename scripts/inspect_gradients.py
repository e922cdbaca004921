"""Look at gradients: one gradient step written out by hand, then the trainer's logged norms read back.

Part 1 trains briefly with rlpg.train, which logs `grad_norm/<parameter>` scalars every update and, with
histogram_interval, `weights/<parameter>` and `grads/<parameter>` histograms. Part 2 takes one gradient step by
hand with the autograd habits rlpg is built on: rollouts under torch.no_grad, detach() where a value must not
carry gradient, zero_grad -> backward -> clip_grad_norm_ -> step on a freshly computed loss, and p.grad read per
parameter. Part 3 reads the event files back with TensorBoard's EventAccumulator and prints a table.

    .venv/bin/python scripts/inspect_gradients.py --total-steps 20000
    .venv/bin/tensorboard --logdir runs      # the same numbers in the Scalars and Histograms tabs
"""

from __future__ import annotations

import argparse

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlpg
from rlpg.envs import make
from rlpg.rollout import Collector

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--env-id", default="CartPole-v1")
parser.add_argument("--total-steps", type=int, default=20_000)
parser.add_argument("--max-grad-norm", type=float, default=0.5)
parser.add_argument("--norm-type", type=float, default=2.0, help="p of the p-norm (inf: the largest element)")
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, ...")
parser.add_argument("--logdir", default="runs")
args = parser.parse_args()


def grad_norms(params: list[tuple[str, torch.nn.Parameter]], norm_type: float) -> dict[str, float]:
    """Each parameter's gradient norm, stacked on the device and copied to the host once (not one .item() each)."""
    norms = torch.stack([torch.linalg.vector_norm(p.grad, norm_type) for _, p in params])
    return dict(zip([n for n, _ in params], norms.tolist(), strict=True))


# 1. Train briefly; every update logs grad_norm/*, every 4th also the weight and gradient histograms.
result = rlpg.train("ppo", args.env_id, total_steps=args.total_steps, seed=args.seed, device=args.device,
                    logdir=args.logdir, histogram_interval=4, max_grad_norm=args.max_grad_norm,
                    norm_type=args.norm_type, progress=False)
policy = result.policy
device = next(policy.parameters()).device
print(f"trained {result.global_step} steps, eval return {result.eval_mean_return:.1f}; run_dir={result.run_dir}")

# 2. One gradient step by hand. The Collector samples under torch.no_grad(): its tensors carry no graph.
env = make(args.env_id, 8, device=device, seed=args.seed)
collector = Collector(env, policy, num_steps=64)
rollout = collector.collect()  # [T, N, ...]
print(f"rollout.logp: requires_grad={rollout.logp.requires_grad} grad_fn={rollout.logp.grad_fn}")
advantages, returns = result.agent.advantages(rollout)  # [T, N], no graph either

# A fresh forward pass builds the graph the loss is differentiated through.
obs, actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)  # [B, D], [B]
dist, values = policy.dist(obs), policy.value(obs)  # values: [B], with grad_fn
baseline = values.detach()  # the policy loss must not move the critic: detach cuts the graph here
print(f"values: requires_grad={values.requires_grad}; values.detach(): requires_grad={baseline.requires_grad}")
adv = returns.flatten() - baseline
adv = (adv - adv.mean()) / (adv.std() + 1e-8)
policy_loss = -(dist.log_prob(actions) * adv).mean()
value_loss = 0.5 * (values - returns.flatten()).square().mean()
loss = policy_loss + 0.5 * value_loss
print(f"loss={loss.item():.4f} grad_fn={type(loss.grad_fn).__name__}")

params = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]  # frozen ones would be left out
optimizer = torch.optim.Adam([p for _, p in params], lr=3e-4)
optimizer.zero_grad(set_to_none=True)  # gradients accumulate in p.grad: clear them first
loss.backward()
before = grad_norms(params, args.norm_type)
total = torch.nn.utils.clip_grad_norm_([p for _, p in params], args.max_grad_norm, args.norm_type)  # pre-clip total
after = grad_norms(params, args.norm_type)
optimizer.step()
print(f"{'parameter':<20} {'shape':>8} {'requires_grad':>14} {'grad norm':>10} {'clipped':>10}")
for name, p in params:
    shape = "x".join(map(str, p.shape))
    print(f"{name:<20} {shape:>8} {p.requires_grad!s:>14} {before[name]:10.4f} {after[name]:10.4f}")
print(f"grad_norm_total={total.item():.6f} max_grad_norm={args.max_grad_norm} norm_type={args.norm_type}")

# 3. Read the trainer's logs back: scalars grad_norm/*, histograms weights/* (0 = keep every event).
events = EventAccumulator(str(result.run_dir), size_guidance={"scalars": 0, "histograms": 0})
events.Reload()
scalars, histograms = events.Tags()["scalars"], events.Tags()["histograms"]
print(f"\nevent files: {len([t for t in scalars if t.startswith('grad_norm/')])} grad_norm scalars, "
      f"{len([t for t in histograms if t.startswith('weights/')])} weights histograms")
print(f"{'parameter':<20} {'grad norm first':>16} {'last':>8} {'weight mean':>12} {'std':>8} {'min':>8} {'max':>8}")
for name, _ in params:
    norms = [e.value for e in events.Scalars(f"grad_norm/{name}")]
    h = events.Histograms(f"weights/{name}")[-1].histogram_value  # the last one written
    mean = h.sum / h.num
    std = max(h.sum_squares / h.num - mean**2, 0.0) ** 0.5
    print(f"{name:<20} {norms[0]:16.4f} {norms[-1]:8.4f} {mean:12.4f} {std:8.4f} {h.min:8.4f} {h.max:8.4f}")
