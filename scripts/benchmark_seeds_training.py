"""K seeds of a whole training run in one stacked computation vs one seed alone: wall time and each seed's return.

    python scripts/benchmark_seeds_training.py                                  # PPO, CartPole-v1 (the default run)
    python scripts/benchmark_seeds_training.py --algo trpo --env Pendulum-v1 --seeds 1-16 --threads 2

Both sides train with the run's preset on the torch-native env, in the same loop (rollout -> advantages -> update;
no logging, checkpoints or periodic evaluation): one seed as `rlpg train` computes it (ActorCritic, Collector, the
agent on the single axis), and K seeds with rlpg.stacked and rlpg.axes.Seeds (parameters stacked along a seed
dimension, a K x N-row env in seed groups, each seed sampling and shuffling from its own generator, per-seed
normalisation, clipping, trust region). Every seed is then scored like `rlpg train`'s final evaluation (deterministic,
20 episodes, seed + 10000, observations normalised with that seed's statistics where the preset normalises).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from rlpg.axes import Seeds
from rlpg.envs import find_wrapper, load_normalizer_state, make, set_training
from rlpg.envs.wrappers import NormalizeObservation
from rlpg.policies import ActorCritic
from rlpg.rollout import Collector, evaluate
from rlpg.stacked import StackedActorCritic, StackedCollector, seed_batch
from rlpg.trainer import ALGOS, flatten, resolve_configs, seed_everything


def seed_list(text: list[str]) -> list[int]:
    out: list[int] = []
    for part in text:
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def build(cfg, seed: int, env) -> tuple[ActorCritic, torch.Generator]:
    """Seed `seed`'s policy as a run of that seed builds it, and the generator its rollouts then draw from."""
    seed_everything(seed)
    policy = ActorCritic(env.single_observation_space, env.single_action_space, cfg.hidden_sizes, cfg.activation,
                         cfg.log_std_init)
    return policy, torch.Generator().set_state(torch.get_rng_state())


def training_env(cfg, agent_cfg, env_id: str, seeds: int | list[int]):
    k = len(seeds) if isinstance(seeds, list) else 1
    return make(env_id, k * cfg.num_envs, seed=seeds, normalize_obs=bool(cfg.normalize_obs),
                normalize_reward=bool(cfg.normalize_reward), gamma=agent_cfg.gamma, clip_obs=cfg.clip_obs,
                clip_reward=cfg.clip_reward)


def score(cfg, env_id: str, seed: int, policy: ActorCritic, obs_rms: dict | None) -> float:
    env = make(env_id, cfg.num_eval_envs, seed=seed + 10_000, normalize_obs=bool(cfg.normalize_obs),
               clip_obs=cfg.clip_obs)
    if obs_rms is not None:
        load_normalizer_state(env, {"obs_rms": obs_rms})
    set_training(env, False)
    return float(evaluate(env, policy, cfg.eval_episodes, seed=seed + 10_000).mean())


def obs_stats(env, k: int | None) -> dict | None:
    """The observation statistics of the training env (of seed group k), as a checkpoint holds them."""
    wrapper = find_wrapper(env, NormalizeObservation)
    if wrapper is None:
        return None
    rms = wrapper.rms
    return rms.state_dict() if k is None else {"mean": rms.mean[k], "var": rms.var[k], "count": rms.count[k]}


def one_seed(algo: str, env_id: str, seed: int) -> tuple[float, float]:
    cfg, agent_cfg = resolve_configs(algo, env_id, {"backend": "torch", "seed": seed})
    env = training_env(cfg, agent_cfg, env_id, seed)
    policy, _ = build(cfg, seed, env)  # the global generator now holds what the run samples from
    agent = ALGOS[algo][0](policy, agent_cfg)
    collector = Collector(env, policy, cfg.num_steps)
    collector.reset(seed=seed)
    iterations = math.ceil(cfg.total_steps / cfg.batch_size)
    start = time.perf_counter()
    for it in range(iterations):
        rollout = collector.collect()
        agent.update(flatten(rollout, *agent.advantages(rollout)), it / iterations)
    seconds = time.perf_counter() - start
    return seconds, score(cfg, env_id, seed, policy, obs_stats(env, None))


def many_seeds(algo: str, env_id: str, seeds: list[int]) -> tuple[float, list[float]]:
    cfg, agent_cfg = resolve_configs(algo, env_id, {"backend": "torch", "seed": seeds[0]})
    env = training_env(cfg, agent_cfg, env_id, seeds)
    built = [build(cfg, s, env) for s in seeds]
    stacked = StackedActorCritic([p for p, _ in built])
    generators = [g for _, g in built]
    agent = ALGOS[algo][0](stacked, agent_cfg, Seeds(generators))
    collector = StackedCollector(env, stacked, cfg.num_steps, generators)
    collector.reset(seeds)
    iterations = math.ceil(cfg.total_steps / cfg.batch_size)
    start = time.perf_counter()
    for it in range(iterations):
        rollout = collector.collect()
        agent.update(seed_batch(rollout, *agent.advantages(rollout), len(seeds)), it / iterations)
    seconds = time.perf_counter() - start
    return seconds, [score(cfg, env_id, s, stacked.policy(k), obs_stats(env, k)) for k, s in enumerate(seeds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", nargs="+", default=["1-16"], help="seeds: 1-16, or 1 2 5")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the K-seed run (one seed: 1)")
    parser.add_argument("--threshold", type=float, default=None, help="count the seeds scoring at least this")
    args = parser.parse_args()
    seeds = seed_list(args.seeds)
    cfg, _ = resolve_configs(args.algo, args.env, {"backend": "torch"})
    torch.set_num_threads(1)
    single_seconds, single_return = one_seed(args.algo, args.env, seeds[0])
    torch.set_num_threads(args.threads)
    many_seconds, returns = many_seeds(args.algo, args.env, seeds)
    print(f"{args.algo} on {args.env}, {cfg.total_steps:,} steps per seed ({cfg.num_envs} envs x {cfg.num_steps})")
    print(f"  1 seed  (seed {seeds[0]}, 1 thread): {single_seconds:6.1f} s, return {single_return:.1f}")
    print(f"  {len(seeds)} seeds together ({args.threads} thread(s)): {many_seconds:6.1f} s = "
          f"{many_seconds / single_seconds:.2f}x one seed's time ({len(seeds) * single_seconds / many_seconds:.1f}x "
          f"faster than {len(seeds)} seeds one after another)")
    mean = sum(returns) / len(returns)
    print(f"  returns: mean {mean:.1f}, min {min(returns):.1f}, max {max(returns):.1f}: "
          + " ".join(f"{r:.0f}" for r in returns))
    if args.threshold is not None:
        print(f"  {sum(r >= args.threshold for r in returns)} of {len(returns)} seeds >= {args.threshold}")


if __name__ == "__main__":
    main()
