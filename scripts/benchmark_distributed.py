"""Steps per second of one training job on 1 process vs K processes (torch.distributed, gloo on the CPU), side by side.

Every side trains the same global batch with the same settings through `rlpg train`; a K-process side is K ranks of
one job (`rlpg train --nproc K`), each stepping num_envs / K environments with one torch thread, and its update is
the single-process update on the global batch. The 1-process sides run with one torch thread and with K threads
(the same cores). Throughput is the training loop's own `time/sps` at its last update (progress.csv), so start-up is
not counted. The sides are interleaved over `--repeats` rounds, so that machine noise hits all of them, and the
median is reported with the ratio to 1 process with 1 thread.

    python scripts/benchmark_distributed.py                       # torch CartPole, Hopper-v5 (PPO and TRPO)
    python scripts/benchmark_distributed.py --workloads cartpole --nproc 2 --repeats 5
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOADS = {
    # the default run: torch-native CartPole, 64 envs x 16 steps, 4 minibatches x 10 epochs (update-bound)
    "cartpole": ["--algo", "ppo", "--env", "CartPole-v1", "--total-steps", "30720"],
    # MuJoCo through Gymnasium (env-bound): rlpg's defaults for a Box task, 8 envs x 256 steps
    "hopper": ["--algo", "ppo", "--env", "Hopper-v5", "--num-envs", "8", "--num-steps", "256", "--total-steps",
               "24576"],
    # the trust region on MuJoCo: TRPO's defaults, 8 envs x 256 steps (fewer collectives per update than PPO)
    "hopper-trpo": ["--algo", "trpo", "--env", "Hopper-v5", "--num-envs", "8", "--num-steps", "256", "--total-steps",
                    "24576"],
    # the trust region on a cheap env: TRPO on Gymnasium Pendulum, 8 envs x 256 steps
    "pendulum-trpo": ["--algo", "trpo", "--env", "Pendulum-v1", "--backend", "gymnasium", "--num-envs", "8",
                      "--num-steps", "256", "--total-steps", "24576"],
}


def train_sps(args: list[str], nproc: int, threads: int, logdir: Path, name: str) -> float:
    """The training loop's steps/s at its last update (all ranks together)."""
    cmd = [sys.executable, "-m", "rlpg", "train", *args, "--torch-threads", str(threads), "--eval-interval", "0",
           "--eval-episodes", "1", "--num-eval-envs", "1", "--progress", "false", "--checkpoint-seconds", "0",
           "--logdir", str(logdir), "--run-name", name]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    with open(logdir / name / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["time/sps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["cartpole", "hopper", "hopper-trpo"],
                        choices=sorted(WORKLOADS))
    parser.add_argument("--nproc", type=int, default=2, help="processes of the distributed side (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    args = parser.parse_args()
    k = args.nproc
    sides = [("1 process, 1 thread", 1, 1), (f"1 process, {k} threads", 1, k), (f"{k} processes, 1 thread each", k, 1)]
    print(f"cores: {os.cpu_count()}; python {sys.version.split()[0]}; rounds: {args.repeats}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            sps: dict[str, list[float]] = {label: [] for label, _, _ in sides}
            for r in range(args.repeats):
                for label, nproc, threads in sides:
                    name = f"{workload}-{nproc}-{threads}-{r}"
                    sps[label].append(train_sps(WORKLOADS[workload], nproc, threads, Path(tmp), name))
            base = statistics.median(sps[sides[0][0]])
            for label, _, _ in sides:
                med = statistics.median(sps[label])
                rows.append((workload, label, med, med / base, sps[label]))
                print(f"{workload:14s} {label:28s} {med:10,.0f} steps/s  {med / base:5.2f}x   "
                      f"({', '.join(f'{v:,.0f}' for v in sps[label])})", flush=True)
    print("\n| workload | side | steps/s (median) | vs 1 process, 1 thread |\n|---|---|---|---|")
    for workload, label, med, ratio, _ in rows:
        print(f"| {workload} | {label} | {med:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
