"""The training loop: collect -> advantages -> agent.update -> log -> evaluate / checkpoint.

Only this module knows the order of the steps and holds the TensorBoard logger.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlpg import checkpoint
from rlpg.agents import ALGOS
from rlpg.config import TrainConfig, build, to_dict
from rlpg.envs import load_normalizer_state, make, normalizer_state, resolve_backend, set_training
from rlpg.errors import ConfigError, unknown_name
from rlpg.logger import Logger, to_host
from rlpg.policies import ActorCritic, freeze
from rlpg.presets import preset
from rlpg.rollout import Collector, evaluate
from rlpg.runtime import keep_heap_memory
from rlpg.types import Agent, Batch, Rollout


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_configs(
    algo: str = "ppo",
    env_id: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[TrainConfig, Any]:
    """TrainConfig and the agent's config from defaults < presets < overrides (None = not set)."""
    overrides = dict(overrides or {})
    if algo not in ALGOS:
        raise unknown_name("algorithm", algo, ALGOS)
    _, config_cls = ALGOS[algo]
    env_id = env_id or overrides.pop("env_id", None) or TrainConfig.env_id
    overrides.pop("env_id", None)
    backend = overrides.get("backend") or "auto"
    tuned = preset(algo, env_id, resolve_backend(env_id, backend))
    known = {f for cls in (TrainConfig, config_cls) for f in cls.__dataclass_fields__}
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for {algo}; see rlpg train --algo {algo} --help")
    base = {"algo": algo, "env_id": env_id}
    cfg = build(TrainConfig, base, tuned, overrides)
    agent_cfg = build(config_cls, tuned, overrides)
    agent_cfg.validate_batch(cfg.num_envs, cfg.num_steps)
    return cfg, agent_cfg


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


def train(algo: str = "ppo", env_id: str | None = None, **overrides: Any) -> TrainResult:
    """Train `algo` on `env_id`; keyword arguments are any TrainConfig or agent-config field.

    result = rlpg.train("ppo", "CartPole-v1", total_steps=100_000, seed=1)
    result.eval_mean_return, result.run_dir
    """
    cfg, agent_cfg = resolve_configs(algo, env_id, overrides)
    return Trainer(cfg, agent_cfg).run()


class Trainer:
    """Builds envs, policy, agent and logger from the configs, then runs the loop."""

    def __init__(self, cfg: TrainConfig, agent_cfg: Any) -> None:
        self.cfg, self.agent_cfg = cfg, agent_cfg
        agent_cls, _ = ALGOS[cfg.algo]
        self.device = resolve_device(cfg.device)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        if cfg.keep_heap:
            keep_heap_memory()
        seed_everything(cfg.seed)
        gamma = getattr(agent_cfg, "gamma", 0.99)
        common = dict(
            device=self.device,
            backend=cfg.backend,
            async_envs=cfg.async_envs,
            normalize_obs=cfg.normalize_obs,
            clip_obs=cfg.clip_obs,
        )
        self.env = make(
            cfg.env_id,
            cfg.num_envs,
            seed=cfg.seed,
            normalize_reward=cfg.normalize_reward,
            gamma=gamma,
            clip_reward=cfg.clip_reward,
            **common,
        )
        self.backend = resolve_backend(cfg.env_id, cfg.backend)
        self.eval_env = make(cfg.env_id, cfg.num_eval_envs, seed=cfg.seed + 10_000, **common)
        set_training(self.eval_env, False)
        self.policy = ActorCritic(
            self.env.single_observation_space,
            self.env.single_action_space,
            cfg.hidden_sizes,
            cfg.activation,
            cfg.log_std_init,
        ).to(self.device)
        if cfg.init_from:
            pre = checkpoint.load(cfg.init_from, map_location=self.device)
            try:
                self.policy.load_state_dict(pre["policy"])
            except RuntimeError as e:
                raise ConfigError(
                    f"--init-from {cfg.init_from}: its policy does not fit this one ({str(e).splitlines()[0]})"
                ) from None
            load_normalizer_state(self.env, pre.get("normalizer", {}))
        self.frozen = freeze(self.policy, cfg.freeze)
        self.agent: Agent = agent_cls(self.policy, agent_cfg)
        name = cfg.run_name or f"{cfg.env_id.replace('/', '_')}__{cfg.algo}__{cfg.seed}__{int(time.time())}"
        self.run_dir = Path(cfg.logdir) / name
        self.global_step = 0
        self.iteration = 0
        self.best_eval = -math.inf

    # -------------------------------------------------------------------------------------- checkpoints
    def payload(self, eval_mean: float | None = None) -> dict[str, Any]:
        return {
            "algo": self.cfg.algo,
            "env_id": self.cfg.env_id,
            "global_step": self.global_step,
            "iteration": self.iteration,
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

    def run_eval(self, logger: Logger, episodes: int) -> tuple[float, float]:
        load_normalizer_state(self.eval_env, normalizer_state(self.env))
        self.policy.eval()
        returns = evaluate(self.eval_env, self.policy, episodes, seed=self.cfg.seed + 10_000)
        self.policy.train()
        mean, std = float(returns.mean()), float(returns.std(correction=0))
        logger.scalars({"eval/mean_return": mean, "eval/std_return": std}, self.global_step)
        if mean > self.best_eval:
            self.best_eval = mean
            checkpoint.save(self.run_dir / "best.pt", self.payload(mean))
        return mean, std

    # ---------------------------------------------------------------------------------------------- loop
    def run(self) -> TrainResult:
        cfg = self.cfg
        if cfg.run_name:  # an explicit name may be reused (e.g. to overwrite a run)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        else:  # two runs started in the same second must not share a directory
            base, n = self.run_dir, 1
            while True:
                try:
                    self.run_dir.mkdir(parents=True, exist_ok=False)
                    break
                except FileExistsError:
                    n += 1
                    self.run_dir = base.with_name(f"{base.name}_{n}")
        resolved = {"train": to_dict(cfg), "agent": to_dict(self.agent_cfg)}
        (self.run_dir / "config.json").write_text(json.dumps(resolved, indent=2))
        logger = Logger(self.run_dir)
        logger.text("config", "```\n" + json.dumps(resolved, indent=2) + "\n```")
        collector = Collector(self.env, self.policy, cfg.num_steps)
        collector.reset(seed=cfg.seed)
        batch_size = cfg.batch_size
        num_iterations = max(1, math.ceil(cfg.total_steps / batch_size))
        next_eval = cfg.eval_interval or math.inf
        next_ckpt = cfg.checkpoint_interval or math.inf
        bar = tqdm(
            total=num_iterations * batch_size,
            unit="step",
            disable=not cfg.progress,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        recent = math.nan
        start = time.perf_counter()
        train_seconds = 0.0
        interrupted = False
        eval_mean = eval_std = math.nan
        try:
            for it in range(num_iterations):
                self.iteration = it
                rollout = collector.collect()
                advantages, returns = self.agent.advantages(rollout)
                metrics = self.agent.update(flatten(rollout, advantages, returns), it / num_iterations)
                self.global_step += batch_size
                bar.update(batch_size)
                if it % cfg.log_interval == 0 or it == num_iterations - 1:
                    sps = self.global_step / (time.perf_counter() - start)
                    host = to_host(
                        {
                            **metrics,
                            "_count": rollout.episode_count,
                            "_ret": rollout.episode_return_sum,
                            "_len": rollout.episode_length_sum,
                        }
                    )
                    count, ret_sum, len_sum = host.pop("_count"), host.pop("_ret"), host.pop("_len")
                    host["time/sps"] = sps
                    if count > 0:
                        recent = ret_sum / count
                        host["rollout/episodic_return"] = recent
                        host["rollout/episodic_length"] = len_sum / count
                    logger.write(host, self.global_step)
                    bar.set_postfix(sps=f"{sps:,.0f}", ret=f"{recent:.1f}", refresh=False)
                if cfg.histogram_interval and it % cfg.histogram_interval == 0:
                    logger.histograms(self.policy, self.global_step)
                if self.global_step >= next_eval and it < num_iterations - 1:
                    next_eval += cfg.eval_interval
                    eval_mean, eval_std = self.run_eval(logger, cfg.eval_episodes)
                    bar.set_postfix(sps=f"{sps:,.0f}", ret=f"{recent:.1f}", eval=f"{eval_mean:.1f}", refresh=False)
                if self.global_step >= next_ckpt:
                    next_ckpt += cfg.checkpoint_interval
                    checkpoint.save(self.run_dir / "last.pt", self.payload())
            train_seconds = time.perf_counter() - start
            eval_mean, eval_std = self.run_eval(logger, cfg.eval_episodes)
        except KeyboardInterrupt:
            interrupted = True
            train_seconds = time.perf_counter() - start
        finally:
            bar.close()
            checkpoint.save(self.run_dir / "last.pt", self.payload(None if interrupted else eval_mean))
            if not interrupted:
                logger.hparams(
                    {**resolved["train"], **resolved["agent"]},
                    {"hparam/eval_mean_return": eval_mean, "hparam/best_eval_return": self.best_eval},
                )
            logger.close()
            self.env.close()
            self.eval_env.close()
        return TrainResult(
            self.run_dir,
            self.global_step,
            eval_mean,
            eval_std,
            self.best_eval,
            self.policy,
            self.agent,
            interrupted,
            train_seconds,
        )
