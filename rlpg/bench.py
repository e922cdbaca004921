"""`rlpg bench`: algorithms x environments x seeds at a step budget, resumable, with a results table and curves.

    rlpg bench --algos ppo trpo --envs Hopper-v5 Walker2d-v5 --seeds 1 2 3 --total-steps 1000000 --out bench/mujoco

Every run is an ordinary `rlpg train` subprocess with its own run directory under OUT/runs, so a crash stops one
run, not the benchmark. The benchmark is meant to span many hours and survive interruptions: a run already in
results.csv is skipped, a run directory left unfinished (a signal, a crash, a reboot) is continued with `--resume`,
and the CSV is rewritten atomically after every run. Each finished run is scored by a deterministic evaluation of
its final policy (last.pt) and of its best periodic evaluation's policy (best.pt) over `--eval-episodes` episodes on
the same evaluation seed; results.md gives mean and spread over seeds of both, curves.png the learning curves.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlpg.checkpoint import atomic_write
from rlpg.errors import ConfigError, RLPGError, install_line

COLUMNS = ("library", "algo", "env_id", "seed", "steps", "final_return", "best_return", "train_minutes", "run_dir")
EVAL_SEED = 12345
"""seed of the evaluation environments every benchmark score is measured on"""


@dataclass
class Bench:
    """What to run: every (algo, env, seed), `total_steps` each, results in `out`."""

    algos: list[str]
    envs: list[str]
    seeds: list[int]
    total_steps: int
    out: Path
    eval_episodes: int = 20
    eval_points: int = 20
    """periodic evaluations per run (their returns draw the curves and choose best.pt)"""
    train_args: list[str] = field(default_factory=list)
    """further `rlpg train` flags for every run"""
    sb3: str = "off"
    """also run SB3 / sb3-contrib with rl-zoo's settings for ppo and trpo: on, off, or auto (when installed)"""

    def __post_init__(self) -> None:
        if not self.algos or not self.envs or not self.seeds:
            raise ConfigError("rlpg bench needs at least one --algos, one --envs and one --seeds value")
        if self.total_steps <= 0 or self.eval_episodes <= 0 or self.eval_points <= 0:
            raise ConfigError("--total-steps, --eval-episodes and --eval-points must be > 0")
        if any(not 0 <= s < 2**32 for s in self.seeds):
            raise ConfigError("--seeds must lie in [0, 2**32 - 1]")
        if self.sb3 not in ("on", "off", "auto"):
            raise ConfigError(f"--sb3 must be on, off or auto, got {self.sb3!r}")
        from rlpg import bench_sb3

        if self.sb3 == "on" and not bench_sb3.available():
            raise ConfigError(f"--sb3 on needs stable-baselines3 and sb3-contrib: {install_line('bench')}")
        if self.sb3 == "auto":
            self.sb3 = "on" if bench_sb3.available() else "off"

    def runs(self) -> list[tuple[str, str, str, int]]:
        """(library, algo, env_id, seed) of every run; SB3's beside rlpg's where SB3 has the algorithm."""
        from rlpg.bench_sb3 import SB3_ALGOS

        libraries = ("rlpg", "sb3") if self.sb3 == "on" else ("rlpg",)
        return [(lib, a, e, s) for e in self.envs for a in self.algos for s in self.seeds for lib in libraries
                if lib == "rlpg" or a in SB3_ALGOS]


def run_name(algo: str, env_id: str, seed: int, library: str = "rlpg") -> str:
    name = f"{env_id.replace('/', '_').replace(':', '_')}__{algo}__{seed}"
    return name if library == "rlpg" else f"{name}__{library}"


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def score(checkpoint_path: Path, episodes: int) -> float:
    """Mean deterministic return of a checkpoint's policy over `episodes` episodes on EVAL_SEED."""
    import torch

    from rlpg import checkpoint
    from rlpg.envs import load_normalizer_state, make, set_training
    from rlpg.rollout import evaluate

    torch.set_num_threads(1)
    payload = checkpoint.load(checkpoint_path)
    cfg = payload["config"]["train"]
    env = make(payload["env_id"], min(10, episodes), backend=cfg["backend"], normalize_obs=cfg["normalize_obs"],
               clip_obs=cfg["clip_obs"], env_packages=tuple(cfg.get("env_packages", ())))
    try:
        load_normalizer_state(env, payload.get("normalizer", {}))
        set_training(env, False)
        returns = evaluate(env, checkpoint.build_policy(payload), episodes, seed=EVAL_SEED)
    finally:
        env.close()
    return float(returns.mean())


def summary_table(rows: list[dict[str, str]]) -> str:
    """Markdown: per (library, env, algo) the mean +- std over seeds of the final and the best policy's returns."""
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault((r["env_id"], r["algo"], r["library"]), []).append(r)
    lines = ["| environment | algorithm | library | steps | seeds | final policy (last.pt) | best evaluation (best.pt) "
             "| training minutes per run |", "|---|---|---|---|---|---|---|---|"]

    def stat(values: list[float]) -> str:
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        # per-seed values to the unit on returns of hundreds, to a tenth on small ones (MinAtar's 6.5 is not 7)
        each = " / ".join(f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" for v in values)
        return f"{mean:.1f} +- {std:.1f} ({each})"

    for (env_id, algo, library), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: int(r["seed"]))
        minutes = sum(float(r["train_minutes"]) for r in rs) / len(rs)
        lines.append(f"| {env_id} | {algo} | {library} | {rs[0]['steps']} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{stat([float(r['final_return']) for r in rs])} | "
                     f"{stat([float(r['best_return']) for r in rs])} | {minutes:.1f} |")
    return "\n".join(lines) + "\n"


def trained(run_dir: Path) -> bool:
    """Whether the run in `run_dir` has trained its whole budget (its last.pt is at its total_steps)."""
    from rlpg import checkpoint

    last = run_dir / "last.pt"
    if not last.is_file():
        return False
    payload = checkpoint.load(last)
    return int(payload["global_step"]) >= int(payload["config"]["train"]["total_steps"])


def event_span(run_dir: Path) -> float:
    """Seconds from a run's first logged event to its last: its training time, for a run trained before this
    benchmark process started."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    times = [Event.FromString(record).wall_time for path in run_dir.glob("events.out.tfevents.*")
             for record in RawEventFileLoader(str(path)).Load()]
    return max(times) - min(times) if times else 0.0


class Runner:
    """Runs the benchmark's missing runs (each an `rlpg train` subprocess), `jobs` at a time, and records each as it
    finishes."""

    def __init__(self, bench: Bench, jobs: int = 1) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {jobs}")
        self.bench = bench
        self.jobs = jobs
        self.out = bench.out
        self.results = self.out / "results.csv"
        self.children: dict[str, subprocess.Popen] = {}
        self.stopped: int | None = None

    def command(self, algo: str, env_id: str, seed: int) -> list[str]:
        b = self.bench
        run_dir = self.out / "runs" / run_name(algo, env_id, seed)
        base = [sys.executable, "-m", "rlpg.cli", "train"]
        if (run_dir / "last.pt").is_file():
            return [*base, "--resume", str(run_dir), "--progress", "false"]
        interval = max(1, b.total_steps // b.eval_points)
        return [*base, "--algo", algo, "--env", env_id, "--seed", str(seed), "--total-steps", str(b.total_steps),
                "--logdir", str(self.out / "runs"), "--run-name", run_name(algo, env_id, seed),
                "--eval-interval", str(interval), "--eval-episodes", str(b.eval_episodes), "--progress", "false",
                *(["--overwrite"] if run_dir.exists() else []), *b.train_args]

    def sb3_command(self, algo: str, env_id: str, seed: int) -> list[str]:
        b = self.bench
        return [sys.executable, "-m", "rlpg.bench_sb3", "--algo", algo, "--env", env_id, "--seed", str(seed),
                "--total-steps", str(b.total_steps),
                "--run-dir", str(self.out / "runs" / run_name(algo, env_id, seed, "sb3")),
                "--eval-interval", str(max(1, b.total_steps // b.eval_points)), "--eval-episodes",
                str(b.eval_episodes), "--eval-seed", str(EVAL_SEED)]

    def _forward(self, signum: int, frame: object) -> None:
        self.stopped = signum
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signum)  # the run saves last.pt; the next `rlpg bench` resumes it

    def run(self) -> int:
        """Run what is missing; returns the number of runs recorded now. A stop signal ends the benchmark once the
        runs under way have saved their checkpoints."""
        (self.out / "runs").mkdir(parents=True, exist_ok=True)
        with self._lock():
            return self._run()

    def _lock(self) -> Any:
        """An exclusive lock on OUT (OUT/bench.lock) for as long as this benchmark runs: a second `rlpg bench` on the
        same OUT, say one started to resume while the first still runs, would train the same run directories twice
        at once. The OS releases it when the process ends, however it ends. Where fcntl is missing (Windows), none."""
        try:
            import fcntl
        except ImportError:
            return contextlib.nullcontext()
        f = (self.out / "bench.lock").open("a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise RLPGError(f"another rlpg bench is running on {self.out}; wait for it to end (it records every run "
                            "it finishes) or give this one another --out") from None
        return f  # closing the file releases the lock

    def _run(self) -> int:
        rows = read_results(self.results)
        done = {(r["library"], r["algo"], r["env_id"], r["seed"]) for r in rows}
        todo = [r for r in self.bench.runs() if (r[0], r[1], r[2], str(r[3])) not in done]
        previous = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}
        recorded = 0
        if self.bench.sb3 == "on":
            print("rlpg bench: SB3's PPO and sb3-contrib's TRPO run beside rlpg's, with rl-zoo's settings "
                  "(--sb3 off to skip them)", flush=True)
        started: dict[str, tuple[str, str, str, int, float]] = {}  # name -> library, algo, env, seed, start time
        failed: list[str] = []
        try:
            queue = list(enumerate(todo, 1))
            while queue or self.children:
                while queue and len(self.children) < self.jobs and self.stopped is None and not failed:
                    i, (library, algo, env_id, seed) = queue.pop(0)
                    name = run_name(algo, env_id, seed, library)
                    print(f"rlpg bench: [{i}/{len(todo)}] {name}", flush=True)
                    run_dir = self.out / "runs" / name
                    # trained, not yet recorded (stopped in between): record it without training again
                    if (trained(run_dir) if library == "rlpg" else (run_dir / "result.json").is_file()):
                        seconds = self._seconds(name)
                        self._record(rows, library, algo, env_id, seed, run_dir,
                                     event_span(run_dir) if seconds is None else seconds)
                        recorded += 1
                        continue
                    started[name] = (library, algo, env_id, seed, time.perf_counter())
                    command = self.command(algo, env_id, seed) if library == "rlpg" else self.sb3_command(
                        algo, env_id, seed)
                    with (self.out / "runs" / f"{name}.log").open("a") as log:
                        # its own session: a Ctrl-C reaches the run once, through _forward, so it saves first
                        self.children[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                               start_new_session=True)
                if not self.children:
                    break
                finished = [(n, c.returncode) for n, c in self.children.items() if c.poll() is not None]
                if not finished:
                    time.sleep(0.2)
                    continue
                for name, code in finished:
                    del self.children[name]
                    library, algo, env_id, seed, start = started.pop(name)
                    seconds = self._add_seconds(name, time.perf_counter() - start)
                    if self.stopped is not None:
                        print(f"rlpg bench: stopped; {name} saved its last.pt and continues on the next rlpg bench",
                              flush=True)
                    elif code != 0:
                        failed.append(f"run {name} failed with exit code {code}; see {self.out / 'runs' / name}.log")
                    else:
                        self._record(rows, library, algo, env_id, seed, self.out / "runs" / name, seconds)
                        recorded += 1
            if failed:
                raise RLPGError("; ".join(failed))
            if self.stopped is None:
                self.draw()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return recorded

    def _seconds(self, name: str) -> float | None:
        """The wall time of a run's stretches so far (OUT/runs/NAME.seconds), None when none was timed."""
        path = self.out / "runs" / f"{name}.seconds"
        return float(path.read_text()) if path.is_file() else None

    def _add_seconds(self, name: str, seconds: float) -> float:
        """Add one stretch of a run's wall time to OUT/runs/NAME.seconds; returns its total over every stretch (a
        run stopped and continued is timed by its stretches, not by the hours between them)."""
        total = (self._seconds(name) or 0.0) + seconds
        atomic_write(self.out / "runs" / f"{name}.seconds", lambda f: f.write(f"{total:.3f}\n".encode()))
        return total

    def _record(self, rows: list[dict[str, str]], library: str, algo: str, env_id: str, seed: int, run_dir: Path,
                wall: float) -> None:
        """Score a finished run and rewrite results.csv and results.md with it."""
        row = self.record(algo, env_id, seed, run_dir, wall) if library == "rlpg" else self.record_sb3(
            algo, env_id, seed, run_dir)
        rows.append({k: str(v) for k, v in row.items()})
        write_results(self.results, rows)
        (self.out / "results.md").write_text(summary_table(rows))

    def record(self, algo: str, env_id: str, seed: int, run_dir: Path, wall: float) -> dict[str, Any]:
        from rlpg import checkpoint

        last = checkpoint.load(run_dir / "last.pt")
        best = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
        episodes = self.bench.eval_episodes
        return {"library": "rlpg", "algo": algo, "env_id": env_id, "seed": seed, "steps": last["global_step"],
                "final_return": f"{score(run_dir / 'last.pt', episodes):.2f}",
                "best_return": f"{score(best, episodes):.2f}", "train_minutes": f"{wall / 60:.2f}",
                "run_dir": str(run_dir)}

    def record_sb3(self, algo: str, env_id: str, seed: int, run_dir: Path) -> dict[str, Any]:
        """An SB3 run's row from the result.json it wrote (scored like rlpg's runs, see rlpg.bench_sb3)."""
        import json

        result = json.loads((run_dir / "result.json").read_text())
        return {"library": "sb3", "algo": algo, "env_id": env_id, "seed": seed, "steps": result["steps"],
                "final_return": f"{result['final_return']:.2f}", "best_return": f"{result['best_return']:.2f}",
                "train_minutes": f"{result['train_minutes']:.2f}", "run_dir": str(run_dir)}

    def draw(self) -> Path | None:
        """curves.png of every run so far (needs matplotlib; said and skipped without it)."""
        from rlpg.plot import plot

        try:
            return plot([self.out / "runs"], self.out / "curves.png", title=f"rlpg bench: {self.out.name}")
        except RLPGError as e:
            print(f"rlpg bench: no curves: {e}", file=sys.stderr)
            return None
