"""K seeds trained together (`rlpg train --seeds`) vs one seed alone (`rlpg train`): wall time and each seed's return.

    python scripts/benchmark_seeds_training.py                                  # PPO, CartPole-v1 (the default run)
    python scripts/benchmark_seeds_training.py --algo trpo --env Pendulum-v1 --seeds 1-16 --threshold -200

Both sides are the real training runs with the (algo, env) preset on the torch-native env: `rlpg.train(seed=s)` and
`rlpg.train(seeds=[...])`, with their logging, periodic evaluations and checkpoints, in temporary directories. The
time compared is each run's training loop (TrainResult / SeedsResult `train_seconds`: rollouts, updates, logging,
periodic evaluation; not start-up and not the final evaluation). The returns are the runs' own final evaluations
(deterministic, 20 episodes, eval seed = seed + 10000). `--repeats R` alternates the two sides R times (the machine
is shared: compare within one run) and reports each side's fastest. Like `rlpg train` (its `--keep-heap`, on by
default), the script first applies rlpg.runtime.keep_heap_memory (`--keep-heap false`: glibc's defaults).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

import rlpg
from rlpg.runtime import keep_heap_memory
from rlpg.seeds import parse_seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", nargs="+", default=["1-16"], help="seeds: 1-16, or 1 2 5")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the K-seed run (--torch-threads)")
    parser.add_argument("--single-threads", type=int, default=1,
                        help="torch threads of the one-seed run (default 1, rlpg's default: one seed's small products "
                        "gain nothing from a second thread)")
    parser.add_argument("--threshold", type=float, default=None, help="count the seeds scoring at least this")
    parser.add_argument("--repeats", type=int, default=1, help="alternate one seed / K seeds this many times")
    parser.add_argument("--keep-heap", type=lambda s: s.lower() == "true", default=True,
                        help="true (as rlpg train) or false")
    args = parser.parse_args()
    if args.keep_heap:
        keep_heap_memory()
    seeds = parse_seeds(args.seeds)
    common = dict(backend="torch", progress=False)
    single_times, many_times = [], []
    with tempfile.TemporaryDirectory() as logdir:
        for _ in range(args.repeats):
            one = rlpg.train(args.algo, args.env, seed=seeds[0], logdir=logdir, torch_threads=args.single_threads,
                             **common)
            many = rlpg.train(args.algo, args.env, seeds=seeds, logdir=logdir, torch_threads=args.threads, **common)
            single_times.append(one.train_seconds)
            many_times.append(many.train_seconds)
    single_seconds, many_seconds = min(single_times), min(many_times)
    k = len(seeds)
    print(f"{args.algo} on {args.env}, {many.global_step:,} steps per seed, torch backend, best of {args.repeats}")
    print(f"  1 seed  (seed {seeds[0]}, {args.single_threads} thread(s)): {single_seconds:6.1f} s, return "
          f"{one.eval_mean_return:.1f}")
    ratio = many_seconds / single_seconds
    print(f"  {k} seeds together ({args.threads} thread(s)): {many_seconds:6.1f} s = {ratio:.2f}x one seed's time "
          f"({k / ratio:.1f}x faster than {k} seeds one after another)")
    returns = torch.tensor(many.eval_mean_returns)
    print(f"  returns: mean {returns.mean():.1f}, min {returns.min():.1f}, max {returns.max():.1f}: "
          + " ".join(f"{r:.0f}" for r in returns.tolist()))
    if args.threshold is not None:
        print(f"  {int((returns >= args.threshold).sum())} of {k} seeds >= {args.threshold}")
    if args.repeats > 1:
        print("  all times (1 seed / K seeds): " + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in
                                                               zip(single_times, many_times, strict=True)))


if __name__ == "__main__":
    main()
