"""Raw stepping throughput of the torch-native envs against Gymnasium's SyncVectorEnv, in env steps per second.

    python scripts/benchmark_envs.py --env CartPole-v1 --num-envs 1 16 256 4096 65536 --device auto

steps/s = num_envs * steps / seconds. Both backends step with fresh random actions every step, drawn where each
backend would draw them in a rollout (on the device for torch, `action_space.sample()` in numpy for Gymnasium), and
the torch env resets finished rows in the same step as it always does. Each timing follows a warm-up; on CUDA the
clock is read after `torch.cuda.synchronize()`. Gymnasium is skipped above `--gym-max-envs` and timed with fewer steps.
On a CPU shared with other busy processes pass `--threads 1`: torch runs sin/cos on a few thousand elements in
parallel, and every such op then waits for a descheduled thread (10 ms instead of 10 us).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import gymnasium as gym
import torch

from rlpg.envs.native import TORCH_ENVS
from rlpg.envs.torch_base import TorchVecEnv


def action_sampler(env: TorchVecEnv, generator: torch.Generator) -> Callable[[], torch.Tensor]:
    """Uniform random actions on the env's device: [N] int64 for Discrete, [N, A] float32 in the Box bounds."""
    space, n, device = env.single_action_space, env.num_envs, env.device
    if isinstance(space, gym.spaces.Discrete):
        return lambda: torch.randint(0, int(space.n), (n,), generator=generator, device=device)
    low = torch.as_tensor(space.low, device=device)
    width = torch.as_tensor(space.high, device=device) - low
    return lambda: torch.rand((n, *space.shape), generator=generator, device=device) * width + low


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_torch(env_id: str, num_envs: int, steps: int, warmup: int, device: torch.device) -> float:
    """Env steps per second of the torch-native env."""
    env = TORCH_ENVS[env_id](num_envs, device=device, seed=0)
    sample = action_sampler(env, torch.Generator(device=env.device).manual_seed(0))
    env.reset()
    for _ in range(warmup):
        env.step(sample())
    sync(env.device)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(sample())
    sync(env.device)
    return num_envs * steps / (time.perf_counter() - start)


def time_gymnasium(env_id: str, num_envs: int, steps: int, warmup: int) -> float:
    """Env steps per second of `gymnasium.make_vec(env_id, num_envs, vectorization_mode="sync")`."""
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    envs.reset(seed=0)
    envs.action_space.seed(0)
    for _ in range(warmup):
        envs.step(envs.action_space.sample())
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    elapsed = time.perf_counter() - start
    envs.close()
    return num_envs * steps / elapsed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1", choices=sorted(TORCH_ENVS), help="Gymnasium id")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 16, 256, 4096, 65536])
    parser.add_argument("--steps", type=int, default=500, help="timed steps of the torch env per size")
    help_gym = "Gymnasium is timed for about this many env steps per size (num_envs * steps), 20 to --steps steps"
    parser.add_argument("--gym-env-steps", type=int, default=200_000, help=help_gym)
    parser.add_argument("--gym-max-envs", type=int, default=4096, help="skip Gymnasium above this many envs")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before each timing")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1, as rlpg train; 0: torch's default)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:  # other processes on the CPU slow multi-threaded torch ops down a lot: report the load
        where = f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    print(f"{args.env}: torch {torch.__version__} on {device} ({where}) vs Gymnasium {gym.__version__} SyncVectorEnv")
    print(f"{'num_envs':>9} {'torch steps/s':>15} {'gymnasium steps/s':>18} {'torch/gym':>10}")
    for n in args.num_envs:
        torch_sps = time_torch(args.env, n, args.steps, args.warmup, device)
        gym_sps, ratio = "skipped", "-"
        if n <= args.gym_max_envs:
            gym_steps = min(args.steps, max(20, args.gym_env_steps // n))
            sps = time_gymnasium(args.env, n, gym_steps, warmup=min(args.warmup, 5))
            gym_sps, ratio = f"{sps:,.0f}", f"{torch_sps / sps:.1f}x"
        print(f"{n:>9} {torch_sps:>15,.0f} {gym_sps:>18} {ratio:>10}", flush=True)


if __name__ == "__main__":
    main()
