"""Train PPO, TRPO, NPG or REINFORCE on a torch-native task with the training loop written out.

This is what `rlpg.train()` does, in the open, so you can change any step: build the environments, the
policy and the agent, then repeat collect -> advantages -> update -> log. It writes the trainer's TensorBoard
tags (`rollout/*`, `train/*`, `grad_norm/*`, `time/sps`) and starts from the same tuned settings
(rlpg/presets.py) as `rlpg train`.

    .venv/bin/python scripts/train_classic.py --algo ppo --env-id CartPole-v1
    .venv/bin/python scripts/train_classic.py --algo trpo --env-id Pendulum-v1 --total-steps 500000
    .venv/bin/tensorboard --logdir runs
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from rlpg.agents import ALGOS
from rlpg.envs import TORCH_ENVS, make
from rlpg.logger import to_host
from rlpg.policies import ActorCritic
from rlpg.rollout import Collector, evaluate
from rlpg.trainer import flatten, resolve_configs

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--algo", default="ppo", choices=sorted(ALGOS))
parser.add_argument("--env-id", default="CartPole-v1", choices=sorted(TORCH_ENVS))
parser.add_argument("--total-steps", type=int, default=None, help="default: the preset's")
parser.add_argument("--num-envs", type=int, default=None, help="parallel envs N (default: the preset's)")
parser.add_argument("--num-steps", type=int, default=None, help="steps per env per rollout T (default: the preset's)")
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, ...")
parser.add_argument("--logdir", default="runs")
parser.add_argument("--eval-episodes", type=int, default=20)
args = parser.parse_args()

# 1. Settings: the preset for (algo, env, torch backend) under the flags given; each agent has its own config.
overrides = {k: v for k, v in vars(args).items() if k in ("total_steps", "num_envs", "num_steps") and v is not None}
cfg, agent_cfg = resolve_configs(args.algo, args.env_id, {**overrides, "backend": "torch", "seed": args.seed})
device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
torch.set_num_threads(1)  # small MLPs gain nothing from more CPU threads
torch.manual_seed(args.seed)

# 2. Environments: N copies stepped as one batch of tensors on `device`; evaluation on separate copies.
env = make(args.env_id, cfg.num_envs, device=device, seed=args.seed,
           normalize_reward=cfg.normalize_reward, gamma=agent_cfg.gamma)
eval_env = make(args.env_id, 10, device=device, seed=args.seed + 10_000)

# 3. Policy (actor and critic MLPs) and agent (its loss, optimizer(s) and update).
policy = ActorCritic(env.single_observation_space, env.single_action_space, cfg.hidden_sizes, cfg.activation)
policy = policy.to(device)
agent_cls, _ = ALGOS[args.algo]
agent = agent_cls(policy, agent_cfg)
collector = Collector(env, policy, cfg.num_steps)  # keeps the envs' observations between rollouts
collector.reset(seed=args.seed)

run_dir = Path(args.logdir) / f"{args.env_id}__{args.algo}_classic__{args.seed}__{int(time.time())}"
writer = SummaryWriter(str(run_dir))
batch_size = cfg.num_envs * cfg.num_steps
num_iterations = max(1, math.ceil(cfg.total_steps / batch_size))
print(f"{args.algo} on {args.env_id} ({device}): {num_iterations} iterations of {cfg.num_envs} envs x "
      f"{cfg.num_steps} steps; logs in {run_dir}")

# 4. The loop.
global_step, start = 0, time.perf_counter()
for iteration in range(num_iterations):
    rollout = collector.collect()  # [T, N, ...] tensors, sampled under torch.no_grad()
    advantages, returns = agent.advantages(rollout)  # [T, N]: GAE (REINFORCE: reward-to-go)
    batch = flatten(rollout, advantages, returns)  # [B = T * N, ...]
    metrics = agent.update(batch, progress=iteration / num_iterations)  # train/*, grad_norm/* as device tensors
    global_step += batch_size

    # One device-to-host copy for every metric of this update (not one .item() per parameter).
    host = to_host({**metrics, "count": rollout.episode_count, "ret": rollout.episode_return_sum,
                    "len": rollout.episode_length_sum})
    count, ret_sum, len_sum = host.pop("count"), host.pop("ret"), host.pop("len")
    if count > 0:  # episodes that finished during this rollout
        host["rollout/episodic_return"] = ret_sum / count
        host["rollout/episodic_length"] = len_sum / count
    host["time/sps"] = global_step / (time.perf_counter() - start)
    for tag, value in host.items():
        if math.isfinite(value):
            writer.add_scalar(tag, value, global_step)
    if iteration % 10 == 0 or iteration == num_iterations - 1:
        print(f"step {global_step:>8}  return {host.get('rollout/episodic_return', math.nan):8.1f}  "
              f"grad norm {host.get('grad_norm/total', math.nan):.3f}")

# 5. Deterministic evaluation (the mode of the policy) on the separate environments.
returns = evaluate(eval_env, policy, args.eval_episodes, seed=args.seed + 10_000)
writer.add_scalar("eval/mean_return", returns.mean().item(), global_step)
writer.add_scalar("eval/std_return", returns.std(correction=0).item(), global_step)
writer.close()
print(f"global_step={global_step} eval_return={returns.mean().item():.2f} +- {returns.std(correction=0).item():.2f} "
      f"({args.eval_episodes} episodes) run_dir={run_dir}")
