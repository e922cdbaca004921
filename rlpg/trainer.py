"""The training loop: collect -> advantages -> agent.update -> log -> evaluate / checkpoint.

Only this module knows the order of the steps and holds the TensorBoard logger. A run survives what happens to
long runs: `last.pt` is written every `checkpoint_interval` steps and `checkpoint_seconds` seconds, on SIGTERM,
SIGINT and SIGUSR1, and at the end, always at an iteration boundary, so `resume=RUN_DIR` (`rlpg train --resume`)
continues it exactly: on torch-native envs bit for bit, as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlpg import checkpoint
from rlpg.agents import ALGOS
from rlpg.config import TrainConfig, to_dict
from rlpg.devices import ENV_BYTES, check_memory, resolve_device
from rlpg.envs import (
    env_state,
    load_env_state,
    load_normalizer_state,
    make,
    normalizer_state,
    resolve_backend,
    set_training,
)
from rlpg.errors import CheckpointError, ConfigError, NonFiniteError, StopNow
from rlpg.logger import Logger, purge_events, to_host
from rlpg.policies import ActorCritic, freeze
from rlpg.rollout import Collector, evaluate, rollout_bytes
from rlpg.runs import (
    StopSignals,
    check_spaces,
    create_run_dir,
    default_run_name,
    prepare_run_dir,
    resolve_configs,
    resume_configs,
)
from rlpg.types import Agent, Batch, Rollout

__all__ = ["train", "Trainer", "TrainResult", "flatten", "resolve_configs", "resume_configs", "resolve_device"]

@dataclass
class TrainResult:
    """What `train()` returns: where the run lives and how the final policy scored."""

    run_dir: Path
    global_step: int
    eval_mean_return: float
    eval_std_return: float
    best_eval_return: float
    policy: ActorCritic
    agent: Agent
    interrupted: bool = False
    train_seconds: float = 0.0
    """wall time of the training loop (rollouts, updates, logging, periodic evaluation), without set-up and
    without the final evaluation"""
    signal: int | None = None
    """the signal that stopped the run (SIGINT, SIGTERM, SIGUSR1), None when it ran to the end"""
    saved_step: int | None = None
    """the step of the last.pt the run leaves behind (None: none could be written)"""
    skipped_updates: int = 0
    """updates skipped for a non-finite loss or gradient"""


# --------------------------------------------------------------------------------------------------- seeds
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def derived_seed(*keys: int) -> int:
    """A reproducible 32-bit seed from integers (numpy's SeedSequence hashing): distinct keys, unrelated streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def train(algo: str | None = None, env_id: str | None = None, *, resume: str | Path | None = None,
          overwrite: bool = False, **overrides: Any) -> TrainResult:
    """Train `algo` (default "ppo") on `env_id`; keyword arguments are any TrainConfig or agent-config field.

    result = rlpg.train("ppo", "CartPole-v1", total_steps=100_000, seed=1)
    result = rlpg.train(resume=result.run_dir, total_steps=200_000)   # continue a run (see resume_configs)

    An existing run directory (an explicit `run_name`) is an error unless `overwrite=True` replaces it.
    """
    if resume is not None:
        cfg, agent_cfg, payload = resume_configs(resume, algo, env_id, overrides)
        return Trainer(cfg, agent_cfg, resume_from=payload).run()
    cfg, agent_cfg = resolve_configs(algo or "ppo", env_id, overrides)
    return Trainer(cfg, agent_cfg, overwrite=overwrite).run()


def flatten(rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
    """[T, N, ...] -> [B, ...]."""
    b = rollout.num_steps * rollout.num_envs
    return Batch(
        obs=rollout.obs.reshape(b, *rollout.obs.shape[2:]),
        actions=rollout.actions.reshape(b, *rollout.actions.shape[2:]),
        logp=rollout.logp.reshape(b),
        values=rollout.values.reshape(b),
        advantages=advantages.reshape(b),
        returns=returns.reshape(b),
    )


# ---------------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Builds envs, policy, agent and logger from the configs, then runs the loop.

    `resume_from`: a last.pt payload (see `resume_configs`) whose run continues in its own directory.
    """

    def __init__(self, cfg: TrainConfig, agent_cfg: Any, resume_from: dict[str, Any] | None = None,
                 overwrite: bool = False) -> None:
        agent_cls, _ = ALGOS[cfg.algo]
        self.device = resolve_device(cfg.device)
        self.backend = resolve_backend(cfg.env_id, cfg.backend)
        # config.json and checkpoints record what the run used, not "auto"
        cfg = replace(cfg, backend=self.backend, device=str(self.device))
        self.cfg, self.agent_cfg, self.resume_from = cfg, agent_cfg, resume_from
        self.explicit_name, self.overwrite = bool(cfg.run_name), overwrite
        name = cfg.run_name or default_run_name(cfg.env_id, cfg.algo, cfg.seed, int(time.time()))
        if resume_from is None:
            self.run_dir = prepare_run_dir(Path(cfg.logdir), name, self.explicit_name, overwrite)
        else:
            self.run_dir = Path(cfg.logdir) / cfg.run_name
        # a rough lower bound before anything is allocated; the rollout is checked precisely once spaces are known
        check_memory(f"{cfg.num_envs} {self.backend} envs x {cfg.num_steps} steps",
                     cfg.num_envs * (ENV_BYTES[self.backend] + 24 * cfg.num_steps) + cfg.num_eval_envs
                     * ENV_BYTES[self.backend], self.device if self.backend == "torch" else torch.device("cpu"),
                     "lower --num-envs, --num-steps or --num-eval-envs")
        previous_threads = torch.get_num_threads()
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        try:
            self._build(agent_cls)
        finally:
            self._threads = torch.get_num_threads()
            torch.set_num_threads(previous_threads)  # rlpg.train() leaves the process as it found it
        self.global_step = 0
        self.iteration = 0
        self.best_eval = -math.inf
        self.skipped_updates = 0
        self.stop = StopSignals()

    def _build(self, agent_cls: type) -> None:
        cfg, agent_cfg = self.cfg, self.agent_cfg
        seed_everything(cfg.seed)
        gamma = getattr(agent_cfg, "gamma", 0.99)
        common = dict(
            device=self.device,
            backend=cfg.backend,
            async_envs=cfg.async_envs,
            normalize_obs=cfg.normalize_obs,
            clip_obs=cfg.clip_obs,
            env_packages=cfg.env_packages,
        )
        # the learner's env takes a game's training conventions (Atari: per-life episodes, clipped rewards); the
        # evaluation env plays the game as it is scored (see rlpg.envs.make)
        self.env = make(cfg.env_id, cfg.num_envs, seed=cfg.seed, normalize_reward=cfg.normalize_reward, gamma=gamma,
                        clip_reward=cfg.clip_reward, training=True, **common)
        try:
            self.eval_env = make(cfg.env_id, cfg.num_eval_envs, seed=cfg.seed + 10_000, **common)
        except BaseException:
            self.env.close()
            raise
        set_training(self.eval_env, False)
        try:
            obs_space, act_space = self.env.single_observation_space, self.env.single_action_space
            check_memory(f"a rollout of {cfg.num_envs} envs x {cfg.num_steps} steps",
                         rollout_bytes(obs_space, act_space, cfg.num_envs, cfg.num_steps, max(cfg.hidden_sizes)),
                         self.device, "lower --num-envs or --num-steps")
            sizes = [1 << 10, *cfg.hidden_sizes, 1 << 10]  # in/out sizes are small next to what this guards against
            weights = 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))  # actor and critic
            check_memory(f"--hidden-sizes {' '.join(map(str, cfg.hidden_sizes))}", 16 * weights, self.device,
                         "use smaller hidden layers")  # weights, gradients and two optimizer moments, float32
            self.policy = ActorCritic(obs_space, act_space, cfg.hidden_sizes, cfg.activation, cfg.log_std_init,
                                      bool(cfg.shared_encoder)).to(self.device)
            if cfg.init_from and self.resume_from is None:
                pre = checkpoint.load(cfg.init_from, map_location=self.device)
                check_spaces(pre, self.env, f"--init-from {cfg.init_from}")
                try:
                    self.policy.load_state_dict(pre["policy"])
                except RuntimeError as e:
                    raise ConfigError(f"--init-from {cfg.init_from}: its policy does not fit this one "
                                      f"({str(e).splitlines()[0]})") from None
                load_normalizer_state(self.env, pre.get("normalizer", {}))
            self.frozen = freeze(self.policy, cfg.freeze)
            self.agent: Agent = agent_cls(self.policy, agent_cfg)
        except BaseException:
            self.close_envs()
            raise

    def close_envs(self) -> None:
        self.env.close()
        self.eval_env.close()

    # -------------------------------------------------------------------------------------- checkpoints
    def payload(self, eval_mean: float | None = None, collector: Collector | None = None) -> dict[str, Any]:
        """The checkpoint. With the collector it also holds what --resume needs (last.pt)."""
        out = {
            "algo": self.cfg.algo,
            "env_id": self.cfg.env_id,
            "global_step": self.global_step,
            "iteration": self.iteration,
            "best_eval": self.best_eval,
            "skipped_updates": self.skipped_updates,
            "eval_mean_return": eval_mean,
            "config": {"train": to_dict(self.cfg), "agent": to_dict(self.agent_cfg)},
            "policy": self.policy.state_dict(),
            "agent": self.agent.state_dict(),
            "normalizer": normalizer_state(self.env),
            "rng": checkpoint.rng_state(),
            "spaces": {
                "observation": checkpoint.space_to_dict(self.env.single_observation_space),
                "action": checkpoint.space_to_dict(self.env.single_action_space),
            },
        }
        if collector is not None:
            out["resume"] = {"env": env_state(self.env), "obs": collector.obs, "backend": self.backend}
        return out

    def save_last(self, collector: Collector, eval_mean: float | None = None) -> bool:
        """Write last.pt; a non-finite state is refused (the previous last.pt stays) and reported."""
        try:
            checkpoint.save(self.run_dir / "last.pt", self.payload(eval_mean, collector))
        except NonFiniteError as e:
            print(f"rlpg: warning: {e}", file=sys.stderr)
            return False
        self.saved_step = self.global_step
        return True

    def restore(self, payload: dict[str, Any], collector: Collector) -> None:
        """Continue the run saved in `payload` (a last.pt): weights, optimizer, counters, RNGs, env state."""
        try:
            self.policy.load_state_dict(payload["policy"])
            self.agent.load_state_dict(payload["agent"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"cannot restore the run from its last.pt: {str(e).splitlines()[0]}") from None
        self.global_step, self.iteration = int(payload["global_step"]), int(payload["iteration"])
        self.best_eval = float(payload.get("best_eval", -math.inf))
        self.skipped_updates = int(payload.get("skipped_updates", 0))
        state = payload["resume"]
        exact = state["backend"] == "torch" and state["env"]["base"] is not None
        load_env_state(self.env, state["env"], restore_base=exact)
        checkpoint.set_rng_state(payload["rng"])
        if exact:  # the env continues mid-episode, exactly where it stopped
            collector.obs = state["obs"].to(self.device)
        else:  # a Gymnasium env cannot save its state: fresh episodes from a seed of its own
            collector.reset(seed=derived_seed(self.cfg.seed, self.global_step))

    def run_eval(self, logger: Logger, episodes: int, seed: int) -> tuple[float, float]:
        load_normalizer_state(self.eval_env, normalizer_state(self.env))
        self.policy.eval()
        try:
            returns = evaluate(self.eval_env, self.policy, episodes, seed=seed)
        finally:
            self.policy.train()
        mean, std = float(returns.mean()), float(returns.std(correction=0))
        logger.scalars({"eval/mean_return": mean, "eval/std_return": std}, self.global_step)
        if mean > self.best_eval:
            self.best_eval = mean
            try:
                checkpoint.save(self.run_dir / "best.pt", self.payload(mean))
            except NonFiniteError as e:
                print(f"rlpg: warning: {e}", file=sys.stderr)
        return mean, std

    def guarded_update(self, rollout: Rollout, progress: float) -> dict[str, torch.Tensor] | None:
        """agent.update, undone when a loss or gradient turns non-finite: the weights and the optimizer state go
        back to what they were (None is returned). After `max_skipped_updates` in a row, NonFiniteError."""
        snapshot = (_clone(self.policy.state_dict()), _clone(self.agent.state_dict()))
        try:
            advantages, returns = self.agent.advantages(rollout)
            metrics = self.agent.update(flatten(rollout, advantages, returns), progress)
            finite = bool(torch.stack([torch.isfinite(p).all() for p in self.policy.parameters()]).all())
            if not finite:
                raise NonFiniteError("the update left non-finite weights")
        except NonFiniteError as e:
            self.policy.load_state_dict(snapshot[0])
            self.agent.load_state_dict(snapshot[1])
            self.skipped_updates += 1
            self._skips_in_a_row += 1
            if self._skips_in_a_row >= self.cfg.max_skipped_updates:
                raise NonFiniteError(f"{self._skips_in_a_row} updates in a row had a non-finite loss or gradient "
                                     f"(last: {e}); the weights were kept from before them: lower the learning "
                                     "rate, set --max-grad-norm, or normalise observations and rewards") from None
            return None
        self._skips_in_a_row = 0
        return metrics

    # ---------------------------------------------------------------------------------------------- loop
    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop at the end of the current iteration, save last.pt and return, as if `signum` had arrived (for code
        that drives a Trainer, e.g. a time budget of its own)."""
        self.stop.signum = self.stop.signum or signum

    def run(self) -> TrainResult:
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            with self.stop as stop:
                return self._run(stop)
        finally:
            torch.set_num_threads(previous_threads)

    def _run(self, stop: StopSignals) -> TrainResult:
        cfg = self.cfg
        collector = Collector(self.env, self.policy, cfg.num_steps)
        resumed = self.resume_from is not None
        try:
            if resumed:
                checkpoint.remove_orphans(self.run_dir / "last.pt")
                checkpoint.remove_orphans(self.run_dir / "best.pt")
                self.restore(self.resume_from, collector)
                purge_events(self.run_dir, self.global_step)
            else:
                self.run_dir = create_run_dir(self.run_dir, self.explicit_name, self.overwrite)
                collector.reset(seed=cfg.seed)
        except BaseException:
            self.close_envs()
            raise
        resolved = {"train": to_dict(cfg), "agent": to_dict(self.agent_cfg)}
        if not resumed:
            (self.run_dir / "config.json").write_text(json.dumps(resolved, indent=2))
        logger = Logger(self.run_dir, purge_step=self.global_step + 1 if resumed else None)
        if not resumed:
            logger.text("config", "```\n" + json.dumps(resolved, indent=2) + "\n```")
        batch_size = cfg.batch_size
        num_iterations = max(1, math.ceil(cfg.total_steps / batch_size))
        bar = tqdm(total=num_iterations * batch_size, initial=self.global_step, unit="step", disable=not cfg.progress,
                   dynamic_ncols=True, mininterval=0.5)
        self.saved_step: int | None = self.global_step if resumed else None
        self._skips_in_a_row = 0
        recent = math.nan
        start = last_save = time.perf_counter()
        start_step = self.global_step
        train_seconds = 0.0
        eval_mean = eval_std = math.nan
        finished = failed = False
        consistent = True  # at an iteration boundary: what last.pt would hold resumes exactly
        try:
            while self.iteration < num_iterations:
                it = self.iteration
                consistent = stop.safe = False
                rollout = collector.collect()
                self.env.check_finite()  # on an accelerator CheckFinite reports a NaN or inf here, once per rollout
                metrics = self.guarded_update(rollout, it / num_iterations)
                prev_step = self.global_step
                self.global_step += batch_size
                self.iteration += 1
                consistent = stop.safe = True
                bar.update(batch_size)
                if it % cfg.log_interval == 0 or it == num_iterations - 1:
                    sps = (self.global_step - start_step) / (time.perf_counter() - start)
                    host = to_host({
                        **(metrics or {}),
                        "_count": rollout.episode_count,
                        "_ret": rollout.episode_return_sum,
                        "_len": rollout.episode_length_sum,
                    })
                    count, ret_sum, len_sum = host.pop("_count"), host.pop("_ret"), host.pop("_len")
                    host["time/sps"] = sps
                    host["train/skipped_updates"] = float(self.skipped_updates)
                    if count > 0:
                        recent = ret_sum / count
                        host["rollout/episodic_return"] = recent
                        host["rollout/episodic_length"] = len_sum / count
                    logger.write(host, self.global_step)
                    bar.set_postfix(sps=f"{sps:,.0f}", ret=f"{recent:.1f}", refresh=False)
                if stop.signum is not None:
                    break
                if cfg.histogram_interval and it % cfg.histogram_interval == 0:
                    logger.histograms(self.policy, self.global_step)
                last = self.iteration == num_iterations
                if _crossed(cfg.eval_interval, prev_step, self.global_step) and not last:
                    # periodic evaluations start from other states each time (reproducibly), so best.pt is not
                    # chosen on one fixed set of start states
                    eval_mean, eval_std = self.run_eval(logger, cfg.eval_episodes,
                                                        derived_seed(cfg.seed, self.global_step, 1))
                    bar.set_postfix(sps=f"{sps:,.0f}", ret=f"{recent:.1f}", eval=f"{eval_mean:.1f}", refresh=False)
                due_by_time = cfg.checkpoint_seconds and time.perf_counter() - last_save >= cfg.checkpoint_seconds
                if (_crossed(cfg.checkpoint_interval, prev_step, self.global_step) or due_by_time) and not last:
                    self.save_last(collector)
                    last_save = time.perf_counter()
            train_seconds = time.perf_counter() - start
            if stop.signum is None:
                # the final policy on the run's fixed evaluation seed (the figure `rlpg train` prints)
                eval_mean, eval_std = self.run_eval(logger, cfg.eval_episodes, cfg.seed + 10_000)
                finished = True
        except StopNow:
            train_seconds = train_seconds or time.perf_counter() - start
        except BaseException:
            failed = True
            raise
        finally:
            stop.closing = True  # a signal from here on is only recorded: the final save is short
            bar.close()
            try:
                # a state half way through an iteration (a second signal, an error) would not resume exactly:
                # then the last periodic last.pt is kept instead
                if consistent:
                    self.save_last(collector, eval_mean if finished else None)
                if finished:
                    logger.hparams({**resolved["train"], **resolved["agent"]},
                                   {"hparam/eval_mean_return": eval_mean, "hparam/best_eval_return": self.best_eval},
                                   self.global_step)
            finally:
                logger.close()
                self.close_envs()
                if failed and not resumed and self.global_step == 0:
                    shutil.rmtree(self.run_dir, ignore_errors=True)  # failed before its first update: nothing to keep
        return TrainResult(
            run_dir=self.run_dir,
            global_step=self.global_step,
            eval_mean_return=eval_mean,
            eval_std_return=eval_std,
            best_eval_return=self.best_eval,
            policy=self.policy,
            agent=self.agent,
            interrupted=not finished,
            train_seconds=train_seconds,
            signal=None if finished else stop.signum,
            saved_step=self.saved_step,
            skipped_updates=self.skipped_updates,
        )


def _crossed(interval: int, before: int, after: int) -> bool:
    """Whether the steps (before, after] pass a multiple of `interval` (0: never). Depends on the step alone, so
    a resumed run evaluates and checkpoints at the same steps as an uninterrupted one."""
    return bool(interval) and after // interval > before // interval


def _clone(tree: Any) -> Any:
    """A deep copy of a state_dict's tensors (nested dicts / lists), for undoing an update."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_clone(v) for v in tree)
    return tree
