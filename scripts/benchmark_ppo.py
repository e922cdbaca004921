"""PPO on CartPole-v1: rlpg next to Stable-Baselines3 with the same hyperparameters, in one run.

The hyperparameters are rl-zoo's tuned CartPole-v1 PPO (8 envs x 32 steps, batch 256, 20 epochs, gamma 0.98,
GAE lambda 0.8, linearly annealed lr 1e-3 and clip 0.2, 100k steps), which rlpg's preset reproduces. Each
library trains the same number of steps per seed; steps/s is total env steps / wall time of the training loop
(rlpg's `train_seconds`, SB3's `learn()`; set-up and the final evaluation excluded for both), and
the return is a deterministic evaluation over 20 episodes. rlpg runs with both of its backends: Gymnasium's
SyncVectorEnv (the same envs SB3 steps) and its torch-native CartPole. Prints a table and the ratios.

    python scripts/benchmark_ppo.py --seeds 1 2 3            # needs: pip install stable-baselines3
    python scripts/benchmark_ppo.py --throughput             # training steps/s against num_envs
    python scripts/benchmark_ppo.py --throughput --threads 2 # the same with torch using both cores

--throughput runs rlpg on the GPU when one is present (SB3 stays on the CPU, its recommended device for MLP
policies); add --num-envs ... 65536 there.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import rlpg
from rlpg.presets import PRESETS
from rlpg.runtime import keep_heap_memory

# rlpg's preset for CartPole-v1 is rl-zoo's tuned PPO; the SB3 side reads the same values from it, so the two
# cannot drift apart. It pins every setting the torch-backend preset changes, so both rlpg backends run it.
PRESET = PRESETS[("ppo", "CartPole-v1")]
ZOO = dict(
    n_envs=PRESET["num_envs"],
    n_steps=PRESET["num_steps"],
    batch_size=PRESET["num_envs"] * PRESET["num_steps"] // PRESET["num_minibatches"],
    gae_lambda=PRESET["gae_lambda"],
    gamma=PRESET["gamma"],
    n_epochs=PRESET["update_epochs"],
    ent_coef=PRESET["ent_coef"],
    lr=PRESET["learning_rate"],
    clip=PRESET["clip_coef"],
    total=PRESET["total_steps"],
)
assert PRESET["anneal_lr"] and PRESET["anneal_clip"] and not PRESET["clip_vloss"]  # as SB3 is set up below


def run_rlpg(seed: int, backend: str, total: int, device: str) -> tuple[float, float]:
    settings = {**PRESET, "total_steps": total, "eval_interval": 0, "eval_episodes": 20}
    result = rlpg.train("ppo", "CartPole-v1", backend=backend, seed=seed, progress=False, logdir="/tmp/rlpg-bench",
                        device=device, **settings)
    return result.global_step / result.train_seconds, result.eval_mean_return


def run_sb3(seed: int, total: int, device: str) -> tuple[float, float]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    def linear(start: float):
        return lambda progress_remaining: progress_remaining * start

    env = make_vec_env("CartPole-v1", n_envs=ZOO["n_envs"], seed=seed)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=ZOO["n_steps"],
        batch_size=ZOO["batch_size"],
        gae_lambda=ZOO["gae_lambda"],
        gamma=ZOO["gamma"],
        n_epochs=ZOO["n_epochs"],
        ent_coef=ZOO["ent_coef"],
        learning_rate=linear(ZOO["lr"]),
        clip_range=linear(ZOO["clip"]),
        seed=seed,
        device=device,
        verbose=0,
    )
    t = time.perf_counter()
    model.learn(total_timesteps=total)
    wall = time.perf_counter() - t
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=seed + 10_000)
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True)
    return model.num_timesteps / wall, float(mean)


def throughput(num_envs: int, backend: str, iterations: int, device: str, epochs: int, async_envs: bool = False
               ) -> float:
    """PPO training steps/s (rollout + GAE + update + logging: the training loop's own time, as SB3's learn(); making
    the envs and the final evaluation are not counted) at `num_envs`, after one warm-up update."""
    num_steps = 16
    batch = num_envs * num_steps
    common = dict(
        backend=backend,
        num_envs=num_envs,
        num_steps=num_steps,
        num_minibatches=4,
        update_epochs=epochs,
        eval_interval=0,
        eval_episodes=1,
        num_eval_envs=1,
        progress=False,
        logdir="/tmp/rlpg-bench",
        device=device,
        torch_threads=torch.get_num_threads(),
        async_envs=async_envs,
    )
    rlpg.train("ppo", "CartPole-v1", total_steps=batch, **common)  # warm-up (allocations, lazy imports)
    result = rlpg.train("ppo", "CartPole-v1", total_steps=batch * iterations, **common)
    return result.global_step / result.train_seconds


def sb3_throughput(n_envs: int, n_steps: int, batch_size: int, n_epochs: int, iterations: int, device: str) -> float:
    """SB3 PPO training steps/s (DummyVecEnv), after one warm-up update."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=n_steps,
        batch_size=batch_size,
        n_epochs=n_epochs,
        gamma=ZOO["gamma"],
        gae_lambda=ZOO["gae_lambda"],
        device=device,
        verbose=0,
    )
    model.learn(total_timesteps=n_envs * n_steps)  # warm-up
    t = time.perf_counter()
    model.learn(total_timesteps=iterations * n_envs * n_steps, reset_num_timesteps=True)
    return model.num_timesteps / (time.perf_counter() - t)


def main_throughput(args: argparse.Namespace) -> None:
    """Each repeat measures every column once, interleaved, so machine noise hits them alike; the table shows
    the median over the repeats and the ratios of those medians."""
    print(
        f"end-to-end PPO training steps/s on CartPole-v1 (num_steps 16, 4 minibatches, {args.epochs} epoch(s); "
        f"device {args.device}, {torch.get_num_threads()} torch thread(s), median of {args.repeats} repeats)"
    )
    try:
        import stable_baselines3  # noqa: F401

        has_sb3 = True
    except ImportError:
        has_sb3 = False
        print("stable-baselines3 is not installed: no SB3 columns")
    zoo: list[float] = []
    cols: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        if has_sb3:  # rl-zoo's settings, 100 updates of 256 steps (SB3 needs ~20 s for the full 100k on 2 cores)
            zoo.append(
                sb3_throughput(ZOO["n_envs"], ZOO["n_steps"], ZOO["batch_size"], ZOO["n_epochs"], 100, "cpu")
            )
        for n in args.num_envs:
            # every point times at least --min-steps steps: a few updates of a small batch last milliseconds, where
            # the first steps' one-off costs (and the machine's noise) would decide the figure
            least = math.ceil(args.min_steps / (n * 16))
            cols.setdefault(("torch", n), []).append(throughput(n, "torch", max(args.iterations, least), args.device,
                                                                args.epochs))
            if n <= args.max_gym_envs:
                its = max(2, args.iterations // 4, least)
                cols.setdefault(("gym", n), []).append(throughput(n, "gymnasium", its, args.device, args.epochs))
                cols.setdefault(("split", n), []).append(throughput(n, "gymnasium", its, args.device, args.epochs,
                                                                    async_envs=True))
                if has_sb3:
                    cols.setdefault(("sb3", n), []).append(
                        sb3_throughput(n, 16, n * 16 // 4, args.epochs, its, "cpu")
                    )
    nan = float("nan")
    med = {k: statistics.median(v) for k, v in cols.items()}
    zoo_sps = statistics.median(zoo) if zoo else nan
    if zoo:
        print(
            f"stable-baselines3 with rl-zoo's CartPole settings (8 envs, batch 256, 20 epochs): {zoo_sps:,.0f} steps/s "
            f"(repeats: {', '.join(f'{z:,.0f}' for z in zoo)})"
        )
    print("SB3 same = SB3 PPO with the same envs/steps/minibatches/epochs as the row (DummyVecEnv); gym split = rlpg's "
          "gymnasium backend with --async-envs (sub-envs split over one process per core)")
    print(
        f"{'num_envs':>9}{'rlpg torch':>12}{'rlpg gym':>10}{'gym split':>11}{'SB3 same':>10}{'gym/SB3':>9}"
        f"{'split/SB3':>10}{'torch/SB3 same':>15}{'torch/SB3 zoo':>14}"
    )
    for n in args.num_envs:
        t_sps, g_sps, s_sps = med[("torch", n)], med.get(("gym", n), nan), med.get(("sb3", n), nan)
        p_sps = med.get(("split", n), nan)
        print(
            f"{n:>9}{t_sps:>12,.0f}{g_sps:>10,.0f}{p_sps:>11,.0f}{s_sps:>10,.0f}{g_sps / s_sps:>8.2f}x"
            f"{p_sps / s_sps:>9.2f}x{t_sps / s_sps:>14.1f}x{t_sps / zoo_sps:>13.1f}x"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--total-steps", type=int, default=ZOO["total"])
    p.add_argument(
        "--device",
        default="auto",
        help="rlpg's device (auto: cuda when present for --throughput, else cpu); SB3 always runs on the CPU, "
        "which it recommends for MLP policies",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for every library (default 1)")
    p.add_argument("--skip-sb3", action="store_true")
    p.add_argument(
        "--throughput",
        action="store_true",
        help="instead: end-to-end training steps/s of rlpg's torch and gymnasium backends vs num_envs, and SB3",
    )
    p.add_argument("--num-envs", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384])
    p.add_argument("--iterations", type=int, default=8, help="--throughput: timed updates per point (at least)")
    p.add_argument("--min-steps", type=int, default=131_072,
                   help="--throughput: timed env steps per point (at least; more updates where the batch is small)")
    p.add_argument("--epochs", type=int, default=1, help="--throughput: PPO epochs per update")
    p.add_argument("--max-gym-envs", type=int, default=1024, help="--throughput: largest Gymnasium point")
    p.add_argument("--repeats", type=int, default=3, help="--throughput: interleaved repeats (median shown)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # rlpg.train() tunes glibc's malloc for the whole process (TrainConfig.keep_heap); do it before anything runs
    # so that SB3, in the same process, gets the same allocator from its first step
    heap = keep_heap_memory()
    print(f"glibc malloc keeps freed memory for reuse (rlpg.runtime.keep_heap_memory): {heap}")
    if args.device == "auto":  # the same-hyperparameter comparison is small-batch work: the CPU
        args.device = "cuda" if args.throughput and torch.cuda.is_available() else "cpu"
    if args.throughput:
        main_throughput(args)
        return
    rows: dict[str, list[tuple[float, float]]] = {"rlpg (gymnasium backend)": [], "rlpg (torch backend)": []}
    try:
        import stable_baselines3  # noqa: F401

        has_sb3 = not args.skip_sb3
    except ImportError:
        has_sb3 = False
        print("stable-baselines3 is not installed: pip install stable-baselines3 to compare")
    if has_sb3:
        rows["stable-baselines3"] = []
    for seed in args.seeds:  # interleave the libraries so machine noise hits them alike
        rows["rlpg (gymnasium backend)"].append(run_rlpg(seed, "gymnasium", args.total_steps, args.device))
        rows["rlpg (torch backend)"].append(run_rlpg(seed, "torch", args.total_steps, args.device))
        if has_sb3:
            rows["stable-baselines3"].append(run_sb3(seed, args.total_steps, "cpu"))
        print(
            f"seed {seed}: "
            + ", ".join(f"{k}: {v[-1][0]:,.0f} steps/s, return {v[-1][1]:.1f}" for k, v in rows.items()),
            flush=True,
        )
    print(
        f"\nPPO CartPole-v1, {args.total_steps:,} steps, seeds {args.seeds}, device {args.device}, "
        f"{args.threads} torch thread(s)"
    )
    print(f"{'library':<28}{'steps/s (mean)':>16}{'eval return (mean, per seed)':>40}")
    for name, vals in rows.items():
        sps = statistics.mean(v[0] for v in vals)
        rets = [v[1] for v in vals]
        print(f"{name:<28}{sps:>16,.0f}{statistics.mean(rets):>12.1f}  {[round(r, 1) for r in rets]}")
    if has_sb3:
        base = statistics.mean(v[0] for v in rows["stable-baselines3"])
        for name in ("rlpg (gymnasium backend)", "rlpg (torch backend)"):
            print(f"speed-up {name} / stable-baselines3: {statistics.mean(v[0] for v in rows[name]) / base:.2f}x")


if __name__ == "__main__":
    main()
