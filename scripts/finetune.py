"""Fine-tune a trained CartPole policy on a heavier, longer pole with a prefix frozen; compare before and after.

Takes a trained run (--run RUN_DIR), or first trains one with rlpg.train. The torch-native CartPole accepts
Gymnasium's physical constants (gravity, masscart, masspole, length, force_mag) through `env_kwargs`. Freezing
sets `requires_grad=False`, so autograd computes no gradient for those weights and the agent's optimizer never
holds them. The fine-tuned policy is saved as finetuned.pt in the run directory, readable by rlpg.load_policy.

    .venv/bin/python scripts/finetune.py --masspole 1.0 --length 2.0 --freeze actor.net.0
    .venv/bin/python scripts/finetune.py --run runs/CartPole-v1__ppo__1__1795519120 --total-steps 100000
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import rlpg
from rlpg import checkpoint
from rlpg.agents import PPO, PPOConfig
from rlpg.envs import make
from rlpg.policies import freeze
from rlpg.rollout import Collector, evaluate
from rlpg.trainer import flatten

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--run", metavar="RUN_DIR", default="", help="a trained CartPole-v1 run (default: train one)")
parser.add_argument("--pretrain-steps", type=int, default=60_000, help="steps of the pretraining run without --run")
parser.add_argument("--total-steps", type=int, default=50_000, help="fine-tuning steps")
parser.add_argument("--masspole", type=float, default=1.0, help="pole mass in kg (Gymnasium: 0.1)")
parser.add_argument("--length", type=float, default=2.0, help="half the pole's length in m (Gymnasium: 0.5)")
parser.add_argument("--freeze", nargs="+", default=["actor.net.0"], help="parameter name prefixes to freeze")
parser.add_argument("--learning-rate", type=float, default=2e-3)
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, ...")
parser.add_argument("--logdir", default="runs")
args = parser.parse_args()
device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
torch.set_num_threads(1)
torch.manual_seed(args.seed)

# 1. A trained policy: load_policy reads best.pt (else last.pt) of the run.
run_dir = Path(args.run) if args.run else rlpg.train(
    "ppo", "CartPole-v1", total_steps=args.pretrain_steps, seed=args.seed, device=args.device, logdir=args.logdir,
    progress=False,
).run_dir
trained = rlpg.load_policy(run_dir, device=device)
if trained.info["env_id"] != "CartPole-v1" or trained.obs_rms is not None:
    raise SystemExit(f"--run {run_dir}: expected a CartPole-v1 run without observation normalisation")
policy = trained.policy.train()  # the ActorCritic inside

# 2. The changed task, and the same task as it was trained on, for the comparison.
heavy = dict(masspole=args.masspole, length=args.length)
env = make("CartPole-v1", 64, device=device, seed=args.seed, env_kwargs=heavy)
eval_heavy = make("CartPole-v1", 10, device=device, env_kwargs=heavy)
eval_orig = make("CartPole-v1", 10, device=device)


def score(eval_env) -> float:
    policy.eval()
    mean = evaluate(eval_env, policy, 20, seed=args.seed + 10_000).mean().item()
    policy.train()
    return mean


before = {"heavy": score(eval_heavy), "original": score(eval_orig)}

# 3. Freeze a prefix of the network (by default the actor's first layer: features worth keeping); train the rest.
names = freeze(policy, args.freeze)  # requires_grad_(False) on each matching parameter, as `rlpg train --freeze`
frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if n in names}  # to check after training
agent = PPO(policy, PPOConfig(learning_rate=args.learning_rate, num_minibatches=4, update_epochs=10))
print(f"frozen: {', '.join(frozen)}; training {len(agent.params)} of {len(list(policy.parameters()))} tensors")

# 4. Fine-tune: the training loop (see scripts/train_classic.py), on the heavier pole.
collector = Collector(env, policy, num_steps=16)
collector.reset(seed=args.seed)
num_iterations = max(1, math.ceil(args.total_steps / (64 * 16)))
for iteration in range(num_iterations):
    rollout = collector.collect()
    advantages, returns = agent.advantages(rollout)
    agent.update(flatten(rollout, advantages, returns), progress=iteration / num_iterations)
assert all(torch.equal(p, frozen[n]) for n, p in policy.named_parameters() if n in frozen)  # untouched

# 5. Compare, and save in the run's checkpoint format (same spaces and config, new weights).
after = {"heavy": score(eval_heavy), "original": score(eval_orig)}
payload = checkpoint.load(run_dir)
payload.update(policy=policy.state_dict(), global_step=num_iterations * 64 * 16, eval_mean_return=after["heavy"])
out = checkpoint.save(run_dir / "finetuned.pt", payload)
print(f"eval return, heavy pole (masspole={args.masspole}, length={args.length}): "
      f"before={before['heavy']:.1f} after={after['heavy']:.1f}")
print(f"eval return, original pole: before={before['original']:.1f} after={after['original']:.1f}")
print(f"finetuned={out}")
