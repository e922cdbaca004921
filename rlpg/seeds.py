"""K seeds of one run trained in one process as one batched computation (`rlpg train --seeds 1-16`,
`rlpg.train(..., seeds=[1, 2, 3])`).

    runs/CartPole-v1__ppo__seeds1-16__<time>/          the group: seeds.json, and summary.json when it finishes
        seed_1/  seed_2/  ...  seed_16/                 one ordinary run directory per seed

Each seed's directory holds what a single run of that seed writes (config.json, TensorBoard events and progress.csv
with the same tags, last.pt / best.pt in the single-run format), so `rlpg eval`, `export`, `plot` and
`rlpg train --resume GROUP/seed_3` (that seed alone, as a single run) work on it unchanged; `rlpg train --resume
GROUP` continues all seeds together. Seed k computes what a single run of seed k computes: the same initial
parameters (built from `seed_everything(k)` as the single run builds them), the same env seeds, and its own random
stream for sampling and minibatches (rlpg.stacked, rlpg.axes.Seeds, rlpg.seed_envs).

What the seeds share: the iteration count (they step together), the wall clock, and the undo of an update with a
non-finite loss or gradient, which is undone for all seeds (the batched step cannot take it for some seeds alone).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from rlpg import checkpoint
from rlpg.agents import ALGOS
from rlpg.axes import Seeds
from rlpg.config import TrainConfig, to_dict
from rlpg.devices import check_memory, resolve_device
from rlpg.envs import resolve_backend
from rlpg.errors import CheckpointError, ConfigError, NonFiniteError, StopNow
from rlpg.logger import Logger, purge_events
from rlpg.policies import ActorCritic, freeze
from rlpg.rollout import evaluate, rollout_bytes
from rlpg.runs import (
    StopSignals,
    check_spaces,
    create_run_dir,
    default_run_name,
    prepare_run_dir,
    resolve_configs,
    resume_configs,
)
from rlpg.seed_envs import (
    copy_normalizers,
    load_seed_env_states,
    load_seed_normalizers,
    make_seed_env,
    seed_env_state,
    seed_normalizer_state,
    set_training_all,
)
from rlpg.stacked import StackedActorCritic, StackedCollector, seed_batch
from rlpg.trainer import (
    Loop,
    _crossed,
    derived_seed,
    guarded_update,
    log_row,
    run_payload,
    seed_everything,
)
from rlpg.types import Agent, Rollout

MANIFEST = "seeds.json"
SUMMARY = "summary.json"
MAX_SEEDS = 65_536


def parse_seeds(values: str | int | Sequence[str | int]) -> list[int]:
    """Seeds from `1-16`, `1 2 5`, `1,2,5` (or a list of ints): distinct, in [0, 2**32 - 1], in the order given."""
    items = [values] if isinstance(values, str | int) else list(values)
    seeds: list[int] = []
    for item in items:
        for part in str(item).replace(",", " ").split():
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if m is None:
                raise ConfigError(f"--seeds takes seeds and ranges such as 1-16 or 1 2 5, got {part!r}")
            lo, hi = int(m[1]), int(m[2] or m[1])
            if hi < lo:
                raise ConfigError(f"--seeds range {part} runs backwards; write {hi}-{lo}")
            if hi - lo + len(seeds) >= MAX_SEEDS:
                raise ConfigError(f"--seeds {part}: at most {MAX_SEEDS} seeds in one process")
            seeds += range(lo, hi + 1)
    if not seeds:
        raise ConfigError("--seeds needs at least one seed, e.g. --seeds 1-16")
    if any(s >= 2**32 for s in seeds):
        raise ConfigError("--seeds must lie in [0, 2**32 - 1] (numpy's seed range)")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1}) if len(set(seeds)) < len(seeds) else []
    if repeated:
        raise ConfigError(f"--seeds lists seed(s) {', '.join(map(str, repeated))} twice; each seed is one run")
    return seeds


def seeds_label(seeds: Sequence[int]) -> str:
    """`1-16` for a range, else the seeds joined by '_' (shortened past 8)."""
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    head = "_".join(map(str, seeds[:8]))
    return head if len(seeds) <= 8 else f"{head}_and{len(seeds) - 8}more"


def is_group(path: str | Path) -> bool:
    """A K-seed run's group directory (holding seeds.json)."""
    return (Path(path) / MANIFEST).is_file()


@dataclass
class SeedsResult:
    """What `train(..., seeds=...)` returns: the group directory, each seed's run and how its policy scored."""

    run_dir: Path
    """the group directory (seeds.json, summary.json)"""
    run_dirs: list[Path]
    seeds: list[int]
    global_step: int
    """environment steps of each seed"""
    eval_mean_returns: list[float]
    eval_std_returns: list[float]
    best_eval_returns: list[float]
    policy: StackedActorCritic
    agent: Agent
    interrupted: bool = False
    train_seconds: float = 0.0
    signal: int | None = None
    saved_step: int | None = None
    skipped_updates: int = 0

    def summary(self) -> dict[str, Any]:
        """summary.json: the final and best-evaluation returns per seed, with mean and spread over seeds."""
        def stats(values: list[float]) -> dict[str, Any]:
            t = torch.tensor(values, dtype=torch.float64)
            return {"mean": float(t.mean()), "std": float(t.std(correction=0)), "min": float(t.min()),
                    "max": float(t.max()), "per_seed": {str(s): v for s, v in zip(self.seeds, values, strict=True)}}

        return {"seeds": self.seeds, "global_step": self.global_step,
                "final_eval_return": stats(self.eval_mean_returns), "best_eval_return": stats(self.best_eval_returns),
                "train_seconds": self.train_seconds, "skipped_updates": self.skipped_updates,
                "runs": [p.name for p in self.run_dirs]}


def train_seeds(algo: str | None, env_id: str | None, seeds: Sequence[int] | str, *, resume: str | Path | None = None,
                overwrite: bool = False, **overrides: Any) -> SeedsResult:
    """rlpg.train(..., seeds=...): see the module docstring."""
    if resume is not None:
        return SeedsTrainer.resumed(resume, algo, env_id, overrides).run()
    if "seed" in overrides:
        raise ConfigError("pass either seed=... (one run) or seeds=[...] (one run per seed), not both")
    cfg, agent_cfg = resolve_configs(algo or "ppo", env_id, overrides)
    return SeedsTrainer(cfg, agent_cfg, parse_seeds(seeds), overwrite=overwrite).run()


# ---------------------------------------------------------------------------------------- per-seed agent state
def _is_optimizer_state(x: Any) -> bool:
    return isinstance(x, dict) and "state" in x and "param_groups" in x


def seed_agent_state(state: dict[str, Any], k: int) -> dict[str, Any]:
    """Seed k's share of a K-seed agent's state_dict: every optimizer's per-parameter state tensors [K, ...] -> [...]
    (Adam's, RMSprop's and SGD's state is elementwise, so this is the state of seed k's own optimizer); scalars such
    as Adam's step count are the same for every seed."""
    def one(x: Any) -> Any:
        if _is_optimizer_state(x):
            return {"state": {i: {n: v[k].clone() if isinstance(v, Tensor) and v.dim() else v for n, v in s.items()}
                              for i, s in x["state"].items()},
                    "param_groups": [dict(g) for g in x["param_groups"]]}
        if isinstance(x, dict):
            return {key: one(v) for key, v in x.items()}
        return x

    return one(state)


def stack_agent_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """K seeds' agent states (single-run format) as one K-seed agent's: the inverse of seed_agent_state."""
    def join(parts: list[Any], where: str) -> Any:
        first = parts[0]
        if _is_optimizer_state(first):
            out: dict[int, dict[str, Any]] = {}
            for i, s in first["state"].items():
                out[i] = {}
                for n, v in s.items():
                    values = [p["state"][i][n] for p in parts]
                    if isinstance(v, Tensor) and v.dim():
                        out[i][n] = torch.stack(values)
                    elif all(_same(v, other) for other in values[1:]):
                        out[i][n] = v
                    elif n == "step" and all(isinstance(x, Tensor) for x in values):
                        # Adam's step counts differ where seeds stopped their epochs early (PPO's target_kl): one
                        # count per seed, as rlpg.optim.SeedAdam keeps them
                        out[i][n] = torch.stack(values)
                    else:
                        raise CheckpointError(f"the seeds' {where} states differ in {n!r}: they were not trained "
                                              "together; resume each seed alone")
            return {"state": out, "param_groups": first["param_groups"]}
        if isinstance(first, dict):
            return {key: join([p[key] for p in parts], key) for key in first}
        return first

    return join(list(states), "agent")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))
    return a == b


def per_seed_values(metrics: dict[str, Tensor], k: int) -> list[dict[str, float]]:
    """Metrics that are [K] (one value per seed) or scalars (shared) as K dicts of floats, in one host copy."""
    if not metrics:
        return [{} for _ in range(k)]
    names = list(metrics)
    rows = [torch.as_tensor(metrics[n]).detach().to(torch.float64).reshape(-1) for n in names]
    device = rows[0].device
    table = torch.stack([r.to(device).expand(k) if r.numel() == 1 else r.to(device) for r in rows]).cpu()  # [M, K]
    return [{n: float(table[i, j]) for i, n in enumerate(names)} for j in range(k)]


# ----------------------------------------------------------------------------------------------------- trainer
class SeedsTrainer(Loop):
    """The K-seed counterpart of rlpg.trainer.Trainer: builds K seeds' envs, policies (stacked) and agent, then runs
    the same loop (collect -> advantages -> update -> log -> evaluate / checkpoint) once for all seeds.

    `resume_from`: the seeds' last.pt payloads (seed order), whose runs continue in their own directories."""

    def __init__(self, cfg: TrainConfig, agent_cfg: Any, seeds: Sequence[int],
                 resume_from: list[dict[str, Any]] | None = None, overwrite: bool = False) -> None:
        from rlpg.distributed import launched_world_size

        if launched_world_size() > 1:
            raise ConfigError("--seeds trains many seeds in one process; it does not combine with torchrun / --nproc")
        self.seeds = list(seeds)
        self.k = len(self.seeds)
        self.ctx = None  # one process (see rlpg.distributed)
        self.device = resolve_device(cfg.device)
        self.backend = resolve_backend(cfg.env_id, cfg.backend)
        cfg = replace(cfg, backend=self.backend, device=str(self.device), seed=self.seeds[0])
        self.cfg, self.agent_cfg, self.resume_from = cfg, agent_cfg, resume_from
        self.explicit_name, self.overwrite = bool(cfg.run_name), overwrite
        name = cfg.run_name or default_run_name(cfg.env_id, cfg.algo, f"seeds{seeds_label(self.seeds)}",  # type: ignore[arg-type]
                                                int(time.time()))
        self.run_dir = Path(cfg.logdir) / name
        if resume_from is None:
            prepare_run_dir(Path(cfg.logdir), name, self.explicit_name, overwrite)
        self.seed_cfgs = [replace(cfg, seed=s, logdir=str(self.run_dir), run_name=f"seed_{s}") for s in self.seeds]
        previous_threads = torch.get_num_threads()
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        try:
            self._build()
        finally:
            self._threads = torch.get_num_threads()
            torch.set_num_threads(previous_threads)
        self.global_step = 0
        self.iteration = 0
        self.best_eval = [-math.inf] * self.k
        self.skipped_updates = 0
        self.stop = StopSignals()

    @classmethod
    def resumed(cls, group: str | Path, algo: str | None = None, env_id: str | None = None,
                overrides: dict[str, Any] | None = None) -> SeedsTrainer:
        """A trainer that continues the K-seed run in `group` from its seeds' last.pt files."""
        group = Path(group)
        manifest = json.loads((group / MANIFEST).read_text())
        seeds = [int(s) for s in manifest["seeds"]]
        lasts = [group / run / "last.pt" for run in manifest["runs"]]
        missing = [str(p.parent) for p in lasts if not p.is_file()]
        if missing:
            raise ConfigError(f"--resume {group}: {', '.join(missing)} has no last.pt to continue from")
        payloads = [checkpoint.load(p) for p in lasts]
        steps = [int(p["global_step"]) for p in payloads]
        if len(set(steps)) > 1:
            at = ", ".join(f"seed {s}: {n:,}" for s, n in zip(seeds, steps, strict=True))
            raise ConfigError(f"the seeds of {group} stand at different steps ({at}), so they cannot continue as one "
                              f"batch; resume each one alone with rlpg train --resume {group}/seed_<seed>")
        loaded = [resume_configs(p.parent, algo, env_id, overrides, payload)
                  for p, payload in zip(lasts, payloads, strict=True)]
        cfg, agent_cfg, _ = loaded[0]
        for s, (c, a, _) in zip(seeds, loaded, strict=True):
            if to_dict(replace(c, seed=cfg.seed, run_name="")) != to_dict(replace(cfg, run_name="")) or a != agent_cfg:
                raise ConfigError(f"seed {s} of {group} was trained with other settings than seed {seeds[0]}; resume "
                                  "each seed alone")
        cfg = replace(cfg, logdir=str(group.parent), run_name=group.name)
        return cls(cfg, agent_cfg, seeds, resume_from=[p for _, _, p in loaded])

    def _build(self) -> None:
        cfg, k = self.cfg, self.k
        common = dict(device=self.device, async_envs=cfg.async_envs, normalize_obs=cfg.normalize_obs,
                      clip_obs=cfg.clip_obs, env_packages=cfg.env_packages)
        check_memory(f"{k} seeds x {cfg.num_envs} envs", k * cfg.num_envs * (24 * cfg.num_steps + 4096),
                     self.device, "train fewer seeds at once, or lower --num-envs or --num-steps")
        gamma = getattr(self.agent_cfg, "gamma", 0.99)
        self.env = make_seed_env(cfg.env_id, cfg.num_envs, self.seeds, self.backend, training=True, gamma=gamma,
                                 normalize_reward=cfg.normalize_reward, clip_reward=cfg.clip_reward, **common)
        try:
            self.eval_env = make_seed_env(cfg.env_id, cfg.num_eval_envs, [s + 10_000 for s in self.seeds],
                                          self.backend, **common)
        except BaseException:
            self.env.close()
            raise
        set_training_all(self.eval_env, False)
        try:
            obs_space, act_space = self.env.single_observation_space, self.env.single_action_space
            check_memory(f"a rollout of {k} seeds x {cfg.num_envs} envs x {cfg.num_steps} steps",
                         rollout_bytes(obs_space, act_space, k * cfg.num_envs, cfg.num_steps, max(cfg.hidden_sizes)),
                         self.device, "train fewer seeds at once, or lower --num-envs or --num-steps")
            pre = None
            if cfg.init_from and self.resume_from is None:
                pre = checkpoint.load(cfg.init_from, map_location=self.device)
                check_spaces(pre, self.env, f"--init-from {cfg.init_from}")
            policies, self.generators = [], []
            for s in self.seeds:
                # seed s's policy and random stream, as a single run of seed s builds them (rlpg.trainer.Trainer)
                seed_everything(s)
                policy = ActorCritic(obs_space, act_space, cfg.hidden_sizes, cfg.activation, cfg.log_std_init,
                                     bool(cfg.shared_encoder)).to(self.device)
                if pre is not None:
                    try:
                        policy.load_state_dict(pre["policy"])
                    except RuntimeError as e:
                        raise ConfigError(f"--init-from {cfg.init_from}: its policy does not fit this one "
                                          f"({str(e).splitlines()[0]})") from None
                freeze(policy, cfg.freeze)
                policies.append(policy)
                self.generators.append(torch.Generator().set_state(torch.get_rng_state()))
            if pre is not None:
                load_seed_normalizers(self.env, [pre.get("normalizer", {})] * k)
            self.policy = StackedActorCritic(policies)
            # on CUDA a single run samples actions from the device's generator (seeded with its seed); on the CPU
            # sampling and minibatch shuffles share the one generator, as a single run's global generator does
            self.sample_generators = self.generators if self.device.type == "cpu" else [
                torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]
            agent_cls, _ = ALGOS[cfg.algo]
            self.agent: Agent = agent_cls(self.policy, self.agent_cfg, Seeds(self.generators))
        except BaseException:
            self.close_envs()
            raise

    def close_envs(self) -> None:
        self.env.close()
        self.eval_env.close()

    @property
    def run_dirs(self) -> list[Path]:
        return [self.run_dir / f"seed_{s}" for s in self.seeds]

    # ------------------------------------------------------------------------------------------- checkpoints
    def payload(self, k: int, eval_mean: float | None = None, collector: StackedCollector | None = None,
                agent_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """Seed k's checkpoint, in the single-run format (rlpg.trainer.Trainer.payload)."""
        rng = checkpoint.rng_state()
        rng["torch"] = self.generators[k].get_state()
        rng.pop("cuda", None)
        if self.device.type != "cpu":
            rng["seed_sample_generator"] = self.sample_generators[k].get_state()
        out = run_payload(self, self.best_eval[k], eval_mean, self.resolved(k), self.policy.state_dict_of(k),
                          seed_agent_state(agent_state or self.agent.state_dict(), k),
                          seed_normalizer_state(self.env, k, self.k), rng)
        if collector is not None:
            n = self.cfg.num_envs
            assert collector.obs is not None
            out["resume"] = {"env": seed_env_state(self.env, k, self.k),
                             "obs": collector.obs[k * n:(k + 1) * n].detach().cpu().clone(), "backend": self.backend}
        return out

    def resolved(self, k: int) -> dict[str, Any]:
        """Seed k's config.json: the single run's, and the group it was trained in."""
        return {"train": to_dict(self.seed_cfgs[k]), "agent": to_dict(self.agent_cfg),
                "seeds": {"group": self.run_dir.name, "seeds": self.seeds}}

    def save_last(self, collector: StackedCollector, eval_means: list[float] | None = None) -> bool:
        """Every seed's last.pt: all K are written to temporary files first and then renamed, so a stop between two
        seeds' writes cannot leave them at different steps (a non-finite state keeps every previous last.pt)."""
        agent_state = self.agent.state_dict()
        payloads = [self.payload(k, None if eval_means is None else eval_means[k], collector, agent_state)
                    for k in range(self.k)]
        bad = [checkpoint.first_non_finite({key: p[key] for key in checkpoint.STATE if key in p}) for p in payloads]
        if any(b is not None for b in bad):
            k = next(i for i, b in enumerate(bad) if b is not None)
            print(f"rlpg: warning: refused to write last.pt: seed {self.seeds[k]}'s {bad[k]} is not finite (NaN or "
                  "inf); the previous last.pt files are kept", file=sys.stderr)
            return False
        staged = []
        for run_dir, p in zip(self.run_dirs, payloads, strict=True):
            tmp = run_dir / "last.pt.seeds-tmp"
            checkpoint.save(tmp, p)
            staged.append(tmp)
        for tmp in staged:
            os.replace(tmp, tmp.with_name("last.pt"))
        self.saved_step = self.global_step
        return True

    def restore(self, payloads: list[dict[str, Any]], collector: StackedCollector) -> None:
        """Continue from the seeds' last.pt payloads: weights, optimizer, counters, random streams, envs."""
        try:
            for k, p in enumerate(payloads):
                self.policy.load_seed(k, p["policy"])
            self.agent.load_state_dict(stack_agent_states([p["agent"] for p in payloads]))
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"cannot restore the seeds from their last.pt: {str(e).splitlines()[0]}") from None
        first = payloads[0]
        self.global_step, self.iteration = int(first["global_step"]), int(first["iteration"])
        self.best_eval = [float(p.get("best_eval", -math.inf)) for p in payloads]
        self.skipped_updates = int(first.get("skipped_updates", 0))
        checkpoint.set_rng_state(first["rng"])  # python's and numpy's streams; torch's are the seeds' own
        for k, p in enumerate(payloads):
            self.generators[k].set_state(p["rng"]["torch"])
            if self.device.type != "cpu" and "seed_sample_generator" in p["rng"]:
                self.sample_generators[k].set_state(p["rng"]["seed_sample_generator"])
        states = [p["resume"] for p in payloads]
        exact = all(s["backend"] == "torch" and s["env"]["base"] is not None for s in states)
        load_seed_env_states(self.env, [s["env"] for s in states], restore_base=exact)
        if exact:
            collector.obs = torch.cat([s["obs"] for s in states]).to(self.device)
        else:  # fresh episodes from each seed's own new seed, as a single run resumes a Gymnasium env
            collector.reset([derived_seed(s, self.global_step) for s in self.seeds])

    # ----------------------------------------------------------------------------------------------- evaluation
    def run_eval(self, loggers: list[Logger], seeds: list[int]) -> tuple[list[float], list[float]]:
        """Every seed's deterministic policy over eval_episodes (seed k's eval envs from seeds[k]); best.pt of a seed
        whose mean is its best so far."""
        copy_normalizers(self.env, self.eval_env)
        self.policy.eval()
        try:
            returns = evaluate(self.eval_env, self.policy, self.cfg.eval_episodes, seed=seeds, groups=self.k)
        finally:
            self.policy.train()
        means = returns.to(torch.float64).mean(1).tolist()
        stds = returns.to(torch.float64).std(1, correction=0).tolist()
        agent_state = None
        for k in range(self.k):
            loggers[k].write({"eval/mean_return": means[k], "eval/std_return": stds[k]}, self.global_step)
            if means[k] > self.best_eval[k]:
                self.best_eval[k] = means[k]
                agent_state = agent_state or self.agent.state_dict()
                try:
                    checkpoint.save(self.run_dirs[k] / "best.pt", self.payload(k, means[k], agent_state=agent_state))
                except NonFiniteError as e:
                    print(f"rlpg: warning: {e}", file=sys.stderr)
        return means, stds

    def guarded_update(self, rollout: Rollout, progress: float) -> dict[str, Tensor] | None:
        """agent.update of all seeds, undone for all of them when a loss or gradient turns non-finite (see
        rlpg.trainer.guarded_update)."""
        return guarded_update(self, rollout, progress, lambda r, a, ret: seed_batch(r, a, ret, self.k))

    def histograms(self, loggers: list[Logger]) -> None:
        """Each seed's `weights/<name>` and `grads/<name>`, the tags of a single run's."""
        for name, p in self.policy.named_parameters():
            for k, logger in enumerate(loggers):
                logger.writer.add_histogram(f"weights/{name}", p.detach()[k].cpu(), self.global_step)
                if p.grad is not None:
                    logger.writer.add_histogram(f"grads/{name}", p.grad.detach()[k].cpu(), self.global_step)

    # ------------------------------------------------------------------------------------------------------ loop
    def _start(self, collector: StackedCollector) -> None:
        """Create (or, resuming, reopen) the group and seed directories and set the starting state."""
        if self.resume_from is not None:
            self.restore(self.resume_from, collector)
            for run_dir in self.run_dirs:
                checkpoint.remove_orphans(run_dir / "last.pt")
                checkpoint.remove_orphans(run_dir / "best.pt")
                (run_dir / "last.pt.seeds-tmp").unlink(missing_ok=True)
                purge_events(run_dir, self.global_step)
            return
        self.run_dir = create_run_dir(self.run_dir, self.explicit_name, self.overwrite)
        self.seed_cfgs = [replace(c, logdir=str(self.run_dir)) for c in self.seed_cfgs]
        manifest = {"algo": self.cfg.algo, "env_id": self.cfg.env_id, "seeds": self.seeds,
                    "runs": [p.name for p in self.run_dirs]}
        (self.run_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
        for k, run_dir in enumerate(self.run_dirs):
            run_dir.mkdir()
            (run_dir / "config.json").write_text(json.dumps(self.resolved(k), indent=2))
        collector.reset(self.seeds)

    def _run(self, stop: StopSignals) -> SeedsResult:
        cfg, k = self.cfg, self.k
        collector = StackedCollector(self.env, self.policy, cfg.num_steps, self.sample_generators)
        resumed = self.resume_from is not None
        try:
            self._start(collector)
        except BaseException:
            self.close_envs()
            raise
        loggers = [Logger(d, purge_step=self.global_step + 1 if resumed else None) for d in self.run_dirs]
        if not resumed:
            for i, logger in enumerate(loggers):
                logger.text("config", "```\n" + json.dumps(self.resolved(i), indent=2) + "\n```")
        batch_size = cfg.batch_size
        num_iterations = max(1, math.ceil(cfg.total_steps / batch_size))
        bar = tqdm(total=num_iterations * batch_size, initial=self.global_step, unit="step", disable=not cfg.progress,
                   dynamic_ncols=True, mininterval=0.5, postfix=f"x {k} seeds")
        self.saved_step: int | None = self.global_step if resumed else None
        self._skips_in_a_row = 0
        start = last_save = time.perf_counter()
        start_step = self.global_step
        train_seconds = 0.0
        means = stds = [math.nan] * k
        finished = failed = False
        consistent = True
        try:
            while self.iteration < num_iterations:
                it = self.iteration
                consistent = stop.safe = False
                rollout = collector.collect()
                self.env.check_finite()
                metrics = self.guarded_update(rollout, it / num_iterations)
                prev_step = self.global_step
                self.global_step += batch_size
                self.iteration += 1
                consistent = stop.safe = True
                bar.update(batch_size)
                due_by_time = bool(cfg.checkpoint_seconds) and time.perf_counter() - last_save >= cfg.checkpoint_seconds
                if it % cfg.log_interval == 0 or it == num_iterations - 1:
                    sps = (self.global_step - start_step) / (time.perf_counter() - start)
                    values = per_seed_values({**(metrics or {}), "_count": rollout.episode_count,
                                              "_ret": rollout.episode_return_sum,
                                              "_len": rollout.episode_length_sum}, k)
                    for logger, host in zip(loggers, values, strict=True):
                        log_row(host, sps, self.skipped_updates)
                        logger.write(host, self.global_step)
                    bar.set_postfix_str(f"x {k} seeds, sps={sps:,.0f} each", refresh=False)
                if stop.signum is not None:
                    break
                if cfg.histogram_interval and it % cfg.histogram_interval == 0:
                    self.histograms(loggers)
                last = self.iteration == num_iterations
                if _crossed(cfg.eval_interval, prev_step, self.global_step) and not last:
                    means, stds = self.run_eval(loggers, [derived_seed(s, self.global_step, 1) for s in self.seeds])
                if (_crossed(cfg.checkpoint_interval, prev_step, self.global_step) or due_by_time) and not last:
                    self.save_last(collector)
                    last_save = time.perf_counter()
            train_seconds = time.perf_counter() - start
            if stop.signum is None:
                means, stds = self.run_eval(loggers, [s + 10_000 for s in self.seeds])
                finished = True
        except StopNow:
            train_seconds = train_seconds or time.perf_counter() - start
        except BaseException:
            failed = True
            raise
        finally:
            stop.closing = True
            bar.close()
            try:
                if consistent:
                    self.save_last(collector, means if finished else None)
                if finished:
                    for i, logger in enumerate(loggers):
                        resolved = self.resolved(i)
                        logger.hparams({**resolved["train"], **resolved["agent"]},
                                       {"hparam/eval_mean_return": means[i], "hparam/best_eval_return":
                                        self.best_eval[i]}, self.global_step)
            finally:
                for logger in loggers:
                    logger.close()
                self.close_envs()
                if failed and not resumed and self.global_step == 0:
                    shutil.rmtree(self.run_dir, ignore_errors=True)
        result = SeedsResult(
            run_dir=self.run_dir, run_dirs=self.run_dirs, seeds=self.seeds, global_step=self.global_step,
            eval_mean_returns=list(means), eval_std_returns=list(stds), best_eval_returns=list(self.best_eval),
            policy=self.policy, agent=self.agent, interrupted=not finished, train_seconds=train_seconds,
            signal=None if finished else stop.signum, saved_step=self.saved_step,
            skipped_updates=self.skipped_updates)
        if finished:
            checkpoint.atomic_write(self.run_dir / SUMMARY,
                                    lambda f: f.write(json.dumps(result.summary(), indent=2).encode()))
        return result


__all__ = ["SeedsResult", "SeedsTrainer", "parse_seeds", "train_seeds", "is_group", "seed_agent_state",
           "stack_agent_states"]
