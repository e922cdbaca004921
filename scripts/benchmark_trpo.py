"""Seconds per TRPO update: rlpg vs sb3-contrib, side by side, on the same batch and the same settings.

Both sides get one batch of `--batch-size` steps from one environment, a 64x64 tanh actor and critic, 10
CG iterations, CG damping 0.1, max KL 0.01 and a line search of at most 10 steps shrinking by 0.8. Only
the update is timed: for rlpg `agent.update(batch)` on a collected batch, for sb3-contrib `model.train()`
on its filled rollout buffer. Each pair is warmed up, then timed over `--updates` updates, interleaved
so that machine noise hits both; the median is reported. Three critic schedules:

  matched   the same critic work on both sides: sb3-contrib's defaults, 10 epochs of minibatches of 128
            (160 Adam steps at batch 2048), no gradient clipping (sb3-contrib has none; rlpg still measures
            every parameter's gradient norm)
  step      the trust-region step alone: one full-batch critic step on both sides
  defaults  each library's own default critic schedule (rlpg: 5 epochs x 8 minibatches; sb3-contrib:
            10 epochs of 128) -- not the same work, shown because it is what users get

    python scripts/benchmark_trpo.py                      # CartPole-v1 and Pendulum-v1
    python scripts/benchmark_trpo.py --train-steps 50000  # also train each briefly and evaluate it
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch import nn

import rlpg
from rlpg.agents import TRPO, TRPOConfig
from rlpg.envs import make
from rlpg.policies import ActorCritic
from rlpg.rollout import Collector
from rlpg.trainer import flatten
from rlpg.types import Batch

try:
    from sb3_contrib import TRPO as SB3TRPO
    from stable_baselines3.common.evaluation import evaluate_policy
except ImportError as e:  # pragma: no cover
    raise SystemExit(f"this benchmark needs sb3-contrib: pip install -e '.[bench]' ({e})") from None

COMMON = dict(max_kl=0.01, cg_iters=10, cg_damping=0.1, max_backtracks=10, backtrack_coef=0.8, anneal_lr=False)


def schedules(batch_size: int) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (rlpg TRPOConfig overrides, sb3-contrib TRPO kwargs) for the critic."""
    d = TRPOConfig()
    return {
        "matched": (dict(vf_epochs=10, vf_minibatches=batch_size // 128, max_grad_norm=None),
                    dict(n_critic_updates=10, batch_size=128)),
        "step": (dict(vf_epochs=1, vf_minibatches=1, max_grad_norm=None),
                 dict(n_critic_updates=1, batch_size=batch_size)),
        "defaults": (dict(vf_epochs=d.vf_epochs, vf_minibatches=d.vf_minibatches),
                     dict(n_critic_updates=10, batch_size=128)),
    }


def rlpg_agent(env_id: str, batch_size: int, critic: dict[str, Any]) -> tuple[TRPO, Batch]:
    env = make(env_id, num_envs=1, backend="gymnasium", seed=0)
    policy = ActorCritic(env.single_observation_space, env.single_action_space, (64, 64), "tanh")
    agent = TRPO(policy, TRPOConfig(**COMMON, **critic))
    collector = Collector(env, policy, batch_size)
    collector.reset(seed=0)
    rollout = collector.collect()
    env.close()
    return agent, flatten(rollout, *agent.advantages(rollout))


def sb3_model(env_id: str, batch_size: int, critic: dict[str, Any], seed: int = 0) -> SB3TRPO:
    kwargs = dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=nn.Tanh)
    return SB3TRPO("MlpPolicy", env_id, n_steps=batch_size, cg_max_steps=10, cg_damping=0.1, target_kl=0.01,
                   line_search_shrinking_factor=0.8, line_search_max_iter=10, policy_kwargs=kwargs, device="cpu",
                   seed=seed, verbose=0, **critic)


def time_updates(env_id: str, args: argparse.Namespace, ours_critic: dict[str, Any],
                 theirs_critic: dict[str, Any]) -> tuple[float, float]:
    agent, batch = rlpg_agent(env_id, args.batch_size, ours_critic)
    model = sb3_model(env_id, args.batch_size, theirs_critic)
    model.learn(total_timesteps=args.batch_size)  # one collect + train: fills the buffer, sets up the logger
    for _ in range(args.warmup):
        agent.update(batch, 0.0)
        model.train()
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.updates):
        t = time.perf_counter()
        agent.update(batch, 0.0)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        model.train()
        theirs.append(time.perf_counter() - t)
    return statistics.median(ours), statistics.median(theirs)


def short_training(env_id: str, args: argparse.Namespace) -> tuple[float, float, float, float]:
    """Eval mean return (20 deterministic episodes) and wall time after `--train-steps` steps of each, both
    with the matched settings and 2048-step batches from one environment."""
    ours_critic, theirs_critic = schedules(args.batch_size)["matched"]
    t = time.perf_counter()
    res = rlpg.train("trpo", env_id, backend="gymnasium", num_envs=1, num_steps=args.batch_size,
                     total_steps=args.train_steps, eval_interval=0, progress=False, logdir="/tmp/rlpg-bench", seed=1,
                     normalize_reward=False, gamma=0.99, gae_lambda=0.95, **COMMON, **ours_critic)
    ours_t = time.perf_counter() - t
    t = time.perf_counter()
    model = sb3_model(env_id, args.batch_size, theirs_critic, seed=1).learn(total_timesteps=args.train_steps)
    theirs_t = time.perf_counter() - t
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=20, deterministic=True)
    return res.eval_mean_return, ours_t, float(mean), theirs_t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", default=["CartPole-v1", "Pendulum-v1"])
    p.add_argument("--schedules", nargs="+", default=["matched", "step", "defaults"])
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both libraries")
    p.add_argument("--train-steps", type=int, default=0, help="also train each for this many steps (0: skip)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"TRPO update, batch {args.batch_size}, 64x64 tanh, CG 10, torch {torch.__version__}, "
          f"{args.threads} thread(s), median of {args.updates} updates")
    print(f"{'env':<14}{'critic':<10}{'rlpg s/update':>15}{'sb3-contrib s/update':>22}{'speed-up':>10}")
    table = schedules(args.batch_size)
    for env_id in args.envs:
        for name in args.schedules:
            ours, theirs = time_updates(env_id, args, *table[name])
            print(f"{env_id:<14}{name:<10}{ours:>15.4f}{theirs:>22.4f}{theirs / ours:>9.2f}x", flush=True)
    if args.train_steps:
        print(f"\nafter {args.train_steps} steps (seed 1, matched settings), eval mean return over 20 deterministic "
              "episodes (wall time includes collection):")
        for env_id in args.envs:
            r_ours, t_ours, r_theirs, t_theirs = short_training(env_id, args)
            print(f"{env_id:<14} rlpg {r_ours:8.1f} ({t_ours:5.1f}s)   sb3-contrib {r_theirs:8.1f} ({t_theirs:5.1f}s)",
                  flush=True)


if __name__ == "__main__":
    main()
