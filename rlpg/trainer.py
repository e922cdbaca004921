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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlpg import checkpoint
from rlpg import distributed as dist
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
    sync_normalizers,
)
from rlpg.errors import CheckpointError, ConfigError, NonFiniteError, StopNow
from rlpg.logger import Logger, purge_events, to_host
from rlpg.optim import param_states, surely_finite
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
          overwrite: bool = False, seeds: Sequence[int] | str | None = None, **overrides: Any) -> Any:
    """Train `algo` (default "ppo") on `env_id`; keyword arguments are any TrainConfig or agent-config field.

    result = rlpg.train("ppo", "CartPole-v1", total_steps=100_000, seed=1)
    result = rlpg.train(resume=result.run_dir, total_steps=200_000)   # continue a run (see resume_configs)
    many = rlpg.train("ppo", "CartPole-v1", seeds="1-16")              # 16 seeds in one process (rlpg.seeds)

    An existing run directory (an explicit `run_name`) is an error unless `overwrite=True` replaces it. Returns a
    TrainResult, or with `seeds` (or resuming a K-seed run's group directory) a rlpg.seeds.SeedsResult.
    """
    from rlpg.seeds import is_group, train_seeds

    if seeds is not None or (resume is not None and is_group(resume)):
        if seeds is not None and resume is not None:
            raise ConfigError("resume=GROUP continues the seeds it was trained with; leave out seeds=")
        return train_seeds(algo, env_id, seeds or [], resume=resume, overwrite=overwrite, **overrides)
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


def guarded_update(trainer: Any, rollout: Rollout, progress: float,
                   to_batch: Callable[[Rollout, torch.Tensor, torch.Tensor], Batch]) -> dict[str, torch.Tensor] | None:
    """trainer.agent.update on to_batch(rollout, advantages, returns), undone when a loss or gradient turns
    non-finite: the weights and the optimizer state go back to what they were (None is returned). After
    `max_skipped_updates` in a row, NonFiniteError. `trainer` (a Trainer or a rlpg.seeds.SeedsTrainer) has policy,
    agent, cfg and the counters skipped_updates and _skips_in_a_row."""
    undo = trainer.__dict__.setdefault("_undo", UndoPoint())
    undo.take(trainer.policy, trainer.agent)
    try:
        advantages, returns = trainer.agent.advantages(rollout)
        metrics = trainer.agent.update(to_batch(rollout, advantages, returns), progress)
        if not all_finite(list(trainer.policy.parameters())):
            raise NonFiniteError("the update left non-finite weights")
    except NonFiniteError as e:
        undo.restore(trainer.policy, trainer.agent)
        trainer.skipped_updates += 1
        trainer._skips_in_a_row += 1
        if trainer._skips_in_a_row >= trainer.cfg.max_skipped_updates:
            raise NonFiniteError(f"{trainer._skips_in_a_row} updates in a row had a non-finite loss or gradient "
                                 f"(last: {e}); the weights were kept from before them: lower the learning "
                                 "rate, set --max-grad-norm, or normalise observations and rewards") from None
        return None
    trainer._skips_in_a_row = 0
    return metrics


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of `tensors` is finite: one norm per tensor and one host read, as a NaN or inf makes its
    tensor's norm NaN or inf; only when some norm is not finite (possibly an overflow of finite values) is each tensor
    checked element by element."""
    if not tensors or surely_finite(torch.stack(torch._foreach_norm([t.detach() for t in tensors]))):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class UndoPoint:
    """The weights and optimizer state before an update, which guarded_update puts back when the update fails.

    Once every optimizer holds state for each of its parameters (from the first update on), the copy goes into
    buffers kept from the last one, in one multi-tensor copy: ~10x cheaper than cloning the state_dicts, which this
    does before that (while the optimizer state still grows) and for agents that keep more state than their
    optimizers'. Tensors are matched by position (the policy's parameters and buffers, then each optimizer's state
    per parameter), so an optimizer that replaces a state tensor rather than updating it (SeedAdam's step) is
    restored too."""

    def __init__(self) -> None:
        self._saved: list[torch.Tensor] = []
        self._live: list[torch.Tensor] = []
        self._dicts: tuple[dict[str, Any], dict[str, Any]] | None = None

    @staticmethod
    def _tensors(policy: torch.nn.Module, agent: Any) -> list[torch.Tensor] | None:
        """The policy's parameters and buffers and the agent's optimizer state tensors, or None where those are not
        all of what their state_dicts hold."""
        from rlpg.agent_base import AgentBase

        if not isinstance(agent, AgentBase) or type(agent).state_dict is not AgentBase.state_dict:
            return None
        live = [*policy.parameters(), *policy.buffers()]
        for optimizer in agent.optimizers.values():
            for group in optimizer.param_groups:
                # the per-parameter state dicts as kept by rlpg.optim (looking each up hashes a tensor in Python)
                states = param_states(optimizer, group["params"]) if len(optimizer.param_groups) == 1 else None
                if states is None:
                    states = [optimizer.state.get(p) for p in group["params"]]
                    if not all(states):
                        return None
                for st in states:
                    live += [v for v in st.values() if isinstance(v, torch.Tensor)]
        return live

    def _same(self, live: list[torch.Tensor]) -> bool:
        """Whether `live` holds what the buffers were made for: the same tensor objects as last time (the common
        case, checked by identity), or tensors of the same layouts."""
        if len(live) == len(self._live) and all(a is b for a, b in zip(live, self._live, strict=True)):
            return True
        return self._matches(live)

    def _matches(self, live: list[torch.Tensor]) -> bool:
        return len(live) == len(self._saved) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
            for a, b in zip(live, self._saved, strict=True))

    @staticmethod
    def _copy(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
        with torch.no_grad():
            if len({t.device for t in dst}) == 1:
                torch._foreach_copy_(dst, src)
            else:  # e.g. a CPU step count beside CUDA parameters
                for d, t in zip(dst, src, strict=True):
                    d.copy_(t)

    def take(self, policy: torch.nn.Module, agent: Any) -> None:
        live = self._tensors(policy, agent)
        if live is None:
            self._saved = self._live = []
            self._dicts = (_clone(policy.state_dict()), _clone(agent.state_dict()))
        elif self._dicts is None and self._same(live):
            self._copy(self._saved, live)
        else:
            self._dicts = None
            self._saved = [t.detach().clone() for t in live]
        self._live = live

    def restore(self, policy: torch.nn.Module, agent: Any) -> None:
        if self._dicts is not None:
            policy.load_state_dict(self._dicts[0])
            agent.load_state_dict(self._dicts[1])
            return
        live = self._tensors(policy, agent)
        if live is None or not self._matches(live):  # state tensors appear or change shape only on a first step
            raise RuntimeError("the optimizer state changed its layout during an update; it cannot be undone")
        self._copy(live, self._saved)


def run_payload(trainer: Any, best_eval: float, eval_mean: float | None, config: dict[str, Any],
                policy: dict[str, Any], agent: dict[str, Any], normalizer: dict[str, Any],
                rng: dict[str, Any]) -> dict[str, Any]:
    """The fields of every run's last.pt and best.pt (a Trainer's, or one seed's of a rlpg.seeds.SeedsTrainer): the
    run's counters and spaces from `trainer`, the given states; --resume state is added by the caller."""
    return {
        "algo": trainer.cfg.algo,
        "env_id": trainer.cfg.env_id,
        "global_step": trainer.global_step,
        "iteration": trainer.iteration,
        "best_eval": best_eval,
        "skipped_updates": trainer.skipped_updates,
        "eval_mean_return": eval_mean,
        "config": config,
        "policy": policy,
        "agent": agent,
        "normalizer": normalizer,
        "rng": rng,
        "spaces": {
            "observation": checkpoint.space_to_dict(trainer.env.single_observation_space),
            "action": checkpoint.space_to_dict(trainer.env.single_action_space),
        },
    }


def log_row(host: dict[str, float], sps: float, skipped_updates: int) -> float | None:
    """Complete a logged row: `host` holds an update's metrics and "_count", "_ret", "_len" (the episodes that ended
    in the rollout), which become rollout/episodic_return and rollout/episodic_length when an episode ended, beside
    time/sps and train/skipped_updates. Returns the mean episode return, or None when no episode ended."""
    count, ret_sum, len_sum = host.pop("_count"), host.pop("_ret"), host.pop("_len")
    host["time/sps"] = sps
    host["train/skipped_updates"] = float(skipped_updates)
    if count <= 0:
        return None
    host["rollout/episodic_return"] = ret_sum / count
    host["rollout/episodic_length"] = len_sum / count
    return host["rollout/episodic_return"]


# ---------------------------------------------------------------------------------------------------------- trainer
class Loop:
    """What a trainer (Trainer, rlpg.seeds.SeedsTrainer) does around its `_run(stop)`: its torch threads and the stop
    signals while it runs."""

    _threads: int
    stop: StopSignals

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop at the end of the current iteration, save last.pt and return, as if `signum` had arrived (for code
        that drives a trainer, e.g. a time budget of its own)."""
        self.stop.signum = self.stop.signum or signum

    def run(self) -> Any:
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            with self.stop as stop:
                return self._run(stop)
        finally:
            torch.set_num_threads(previous_threads)

    def _run(self, stop: StopSignals) -> Any:
        raise NotImplementedError


class Trainer(Loop):
    """Builds envs, policy, agent and logger from the configs, then runs the loop.

    `resume_from`: a last.pt payload (see `resume_configs`) whose run continues in its own directory.
    """

    def __init__(self, cfg: TrainConfig, agent_cfg: Any, resume_from: dict[str, Any] | None = None,
                 overwrite: bool = False) -> None:
        agent_cls, _ = ALGOS[cfg.algo]
        # under torchrun (WORLD_SIZE > 1) this process is one rank of a job: see rlpg.distributed
        self.ctx, self.device = dist.setup(resolve_device(cfg.device))
        self.rank = self.ctx.rank if self.ctx else 0
        self.backend = resolve_backend(cfg.env_id, cfg.backend)
        # config.json and checkpoints record what the run used, not "auto" (rank 0's device under torchrun)
        cfg = replace(cfg, backend=self.backend, device=str(self.device) if self.ctx is None else self.device.type)
        self.cfg, self.agent_cfg, self.resume_from = cfg, agent_cfg, resume_from
        self.explicit_name, self.overwrite = bool(cfg.run_name), overwrite
        dist.check_same_config({"train": to_dict(cfg), "agent": to_dict(agent_cfg), "resume": resume_from is not None,
                                "overwrite": overwrite})
        self.check_resume_world(resume_from)
        self.num_envs = dist.split_envs(cfg.num_envs)  # this rank's share; cfg.num_envs is the global number
        # rank 0 names the run (the time in a default name differs between processes) and alone writes to it
        name = dist.broadcast_object(cfg.run_name or default_run_name(cfg.env_id, cfg.algo, cfg.seed, int(time.time())))
        if resume_from is None:
            self.run_dir = Path(cfg.logdir) / name
            dist.on_main(lambda: prepare_run_dir(Path(cfg.logdir), name, self.explicit_name, overwrite))
        else:
            self.run_dir = Path(cfg.logdir) / cfg.run_name
        # a rough lower bound before anything is allocated; the rollout is checked precisely once spaces are known
        check_memory(f"{self.num_envs} {self.backend} envs x {cfg.num_steps} steps",
                     self.num_envs * (ENV_BYTES[self.backend] + 24 * cfg.num_steps) + cfg.num_eval_envs
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
        # under torchrun a signal never stops one rank at once (the others would wait for it in a collective): every
        # rank stops at the same iteration boundary, which the ranks agree on after each update
        self.stop = StopSignals(deferred=self.ctx is not None, announce=dist.is_main())

    # ------------------------------------------------------------------------------------------- ranks
    @property
    def env_seed(self) -> int:
        """The seed of this rank's envs: rank r's sub-env i gets cfg.seed + r * num_envs / world + i on Gymnasium,
        the seeds of a single process's sub-envs."""
        return self.cfg.seed + self.rank * self.num_envs

    def check_resume_world(self, payload: dict[str, Any] | None) -> None:
        if payload is None:
            return
        saved = len(payload["resume"].get("ranks", [None]))
        world = self.ctx.world_size if self.ctx else 1
        if saved != world:
            how = f"rlpg train --nproc {saved} --resume ..." if saved > 1 else "rlpg train --resume ..., no torchrun"
            raise ConfigError(f"the run was trained by {saved} process(es), each with its own environments; resume it "
                              f"with as many ({how}), not {world}")

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
        self.env = make(cfg.env_id, self.num_envs, seed=self.env_seed, normalize_reward=cfg.normalize_reward,
                        gamma=gamma, clip_reward=cfg.clip_reward, training=True, **common)
        self.eval_env: Any = None  # under torchrun rank 0 alone evaluates
        if dist.is_main():
            try:
                self.eval_env = make(cfg.env_id, cfg.num_eval_envs, seed=cfg.seed + 10_000, **common)
            except BaseException:
                self.env.close()
                raise
            set_training(self.eval_env, False)
        try:
            obs_space, act_space = self.env.single_observation_space, self.env.single_action_space
            check_memory(f"a rollout of {self.num_envs} envs x {cfg.num_steps} steps",
                         rollout_bytes(obs_space, act_space, self.num_envs, cfg.num_steps, max(cfg.hidden_sizes)),
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
            if self.ctx is not None:
                # every rank starts from rank 0's weights and draws the same minibatches; each samples its own actions
                dist.broadcast_parameters([*self.policy.parameters(), *self.policy.buffers()])
                self.agent.shuffle = torch.Generator().manual_seed(derived_seed(cfg.seed, 0x5F))
                if self.rank:
                    seed_everything(derived_seed(cfg.seed, self.rank))
        except BaseException:
            self.close_envs()
            raise

    def close_envs(self) -> None:
        self.env.close()
        if self.eval_env is not None:
            self.eval_env.close()

    # -------------------------------------------------------------------------------------- checkpoints
    def payload(self, eval_mean: float | None = None, collector: Collector | None = None,
                ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint. With the collector it also holds what --resume needs (last.pt), with `ranks` (the ranks'
        `rank_state`s) that of every rank of a torchrun job."""
        config = {"train": to_dict(self.cfg), "agent": to_dict(self.agent_cfg)}
        out = run_payload(self, self.best_eval, eval_mean, config, self.policy.state_dict(), self.agent.state_dict(),
                          normalizer_state(self.env), checkpoint.rng_state())
        if collector is not None and ranks is not None:  # torchrun: each rank's envs, observations and generators
            out["resume"] = {"backend": self.backend, "ranks": ranks, "shuffle": self.agent.shuffle.get_state()}
        elif collector is not None:
            out["resume"] = {"env": env_state(self.env), "obs": collector.obs, "backend": self.backend}
        return out

    def rank_state(self, collector: Collector) -> dict[str, Any]:
        """What this rank alone holds and a resumed job needs (host tensors, to travel to rank 0)."""
        return _to_cpu({"env": env_state(self.env), "obs": collector.obs, "rng": checkpoint.rng_state()})

    def save_last(self, collector: Collector, eval_mean: float | None = None) -> bool:
        """Write last.pt; a non-finite state is refused (the previous last.pt stays) and reported. Under torchrun
        every rank takes part (rank 0 gathers the ranks' states) and rank 0 writes."""
        ranks = dist.gather_objects(self.rank_state(collector)) if self.ctx is not None else None
        if not dist.is_main():
            self.saved_step = self.global_step
            return True
        try:
            checkpoint.save(self.run_dir / "last.pt", self.payload(eval_mean, collector, ranks))
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
        mine = state["ranks"][self.rank] if "ranks" in state else {**state, "rng": payload["rng"]}
        exact = state["backend"] == "torch" and mine["env"]["base"] is not None
        load_env_state(self.env, mine["env"], restore_base=exact)
        checkpoint.set_rng_state(mine["rng"])
        if "shuffle" in state:
            self.agent.shuffle.set_state(state["shuffle"])
        if exact:  # the env continues mid-episode, exactly where it stopped
            collector.obs = mine["obs"].to(self.device)
        else:  # a Gymnasium env cannot save its state: fresh episodes from a seed of its own (and of its rank)
            collector.reset(seed=derived_seed(self.cfg.seed, self.global_step, *([self.rank] if self.rank else [])))

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
        return guarded_update(self, rollout, progress, flatten)

    def agree(self, stop: StopSignals, due_by_time: bool) -> tuple[bool, bool]:
        """Under torchrun, after each update: whether any rank was signalled (then every rank stops here) and whether
        any rank's checkpoint clock ran out (then every rank saves), in one all-reduce that also checks that the
        ranks hold the same parameters. Returns (stop, due_by_time) as agreed; a signal that arrives later waits for
        the next update."""
        check = dist.parameter_checksum([*self.policy.parameters()]).cpu()
        flags = torch.cat([torch.tensor([float(stop.signum or 0), float(due_by_time)], dtype=torch.float64),
                           check, -check])
        flags = dist.all_reduce_max(flags)
        if flags[0] and stop.signum is None:
            stop.signum = int(flags[0])
        if not torch.equal(flags[2:4], -flags[4:6]):
            raise RuntimeError(f"the ranks hold different parameters after update {self.iteration}: the update was "
                               "not the same on every rank (a bug in rlpg; please report it)")
        return bool(flags[0]), bool(flags[1])

    # ---------------------------------------------------------------------------------------------- loop
    def _run(self, stop: StopSignals) -> TrainResult:
        cfg = self.cfg
        collector = Collector(self.env, self.policy, cfg.num_steps)
        resumed = self.resume_from is not None
        try:
            if resumed:
                self.restore(self.resume_from, collector)
                if dist.is_main():
                    checkpoint.remove_orphans(self.run_dir / "last.pt")
                    checkpoint.remove_orphans(self.run_dir / "best.pt")
                    purge_events(self.run_dir, self.global_step)
            else:
                self.run_dir = dist.on_main(lambda: create_run_dir(self.run_dir, self.explicit_name, self.overwrite))
                collector.reset(seed=self.env_seed)
        except BaseException:
            self.close_envs()
            raise
        resolved = {"train": to_dict(cfg), "agent": to_dict(self.agent_cfg)}
        if self.ctx is not None:  # the global batch is what the update sees; each rank collects its share
            resolved["distributed"] = {"world_size": self.ctx.world_size, "backend": self.ctx.backend,
                                       "num_envs_per_rank": self.num_envs,
                                       "batch_size_per_rank": self.num_envs * cfg.num_steps,
                                       "global_batch_size": cfg.batch_size}
        main = dist.is_main()
        if not resumed and main:
            (self.run_dir / "config.json").write_text(json.dumps(resolved, indent=2))
        logger = Logger(self.run_dir, purge_step=self.global_step + 1 if resumed else None) if main else _Silent()
        if not resumed:
            logger.text("config", "```\n" + json.dumps(resolved, indent=2) + "\n```")
        batch_size = cfg.batch_size  # global: every rank counts the steps of all ranks
        num_iterations = max(1, math.ceil(cfg.total_steps / batch_size))
        bar = tqdm(total=num_iterations * batch_size, initial=self.global_step, unit="step",
                   disable=not (cfg.progress and main), dynamic_ncols=True, mininterval=0.5)
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
                sync_normalizers(self.env)  # under torchrun: the ranks' running statistics merged
                metrics = self.guarded_update(rollout, it / num_iterations)
                prev_step = self.global_step
                self.global_step += batch_size
                self.iteration += 1
                consistent = stop.safe = True
                bar.update(batch_size)
                due_by_time = bool(cfg.checkpoint_seconds) and time.perf_counter() - last_save >= cfg.checkpoint_seconds
                stopping = stop.signum is not None  # checked again below: a signal during logging counts too
                if self.ctx is not None:
                    stopping, due_by_time = self.agree(stop, due_by_time)
                if it % cfg.log_interval == 0 or it == num_iterations - 1:
                    sps = (self.global_step - start_step) / (time.perf_counter() - start)
                    episodes = dist.all_reduce_sum(torch.stack([rollout.episode_count, rollout.episode_return_sum,
                                                                rollout.episode_length_sum]))
                    host = to_host({
                        **(metrics or {}),
                        "_count": episodes[0],
                        "_ret": episodes[1],
                        "_len": episodes[2],
                    })
                    mean_return = log_row(host, sps, self.skipped_updates)
                    recent = recent if mean_return is None else mean_return
                    logger.write(host, self.global_step)
                    bar.set_postfix(sps=f"{sps:,.0f}", ret=f"{recent:.1f}", refresh=False)
                if stop.signum is not None if self.ctx is None else stopping:
                    break
                if cfg.histogram_interval and it % cfg.histogram_interval == 0:
                    logger.histograms(self.policy, self.global_step)
                last = self.iteration == num_iterations
                if _crossed(cfg.eval_interval, prev_step, self.global_step) and not last and main:
                    # periodic evaluations start from other states each time (reproducibly), so best.pt is not
                    # chosen on one fixed set of start states
                    eval_mean, eval_std = self.run_eval(logger, cfg.eval_episodes,
                                                        derived_seed(cfg.seed, self.global_step, 1))
                    bar.set_postfix(sps=f"{sps:,.0f}", ret=f"{recent:.1f}", eval=f"{eval_mean:.1f}", refresh=False)
                if (_crossed(cfg.checkpoint_interval, prev_step, self.global_step) or due_by_time) and not last:
                    self.save_last(collector)
                    last_save = time.perf_counter()
            train_seconds = time.perf_counter() - start
            if stop.signum is None:
                # the final policy on the run's fixed evaluation seed (the figure `rlpg train` prints)
                if main:
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
                # (under torchrun a rank that failed cannot count on the others to join the save: it is skipped)
                if consistent and not (failed and self.ctx is not None):
                    self.save_last(collector, eval_mean if finished else None)
                if finished:
                    logger.hparams({**resolved["train"], **resolved["agent"]},
                                   {"hparam/eval_mean_return": eval_mean, "hparam/best_eval_return": self.best_eval},
                                   self.global_step)
            finally:
                logger.close()
                self.close_envs()
                if failed and not resumed and self.global_step == 0 and main:
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


class _Silent:
    """The logger of ranks other than 0 under torchrun: rank 0 alone writes events."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _map_tensors(tree: Any, fn: Any) -> Any:
    """`tree` (nested dicts / lists / tuples, as a state_dict) with fn applied to each of its tensors."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _map_tensors(v, fn) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_map_tensors(v, fn) for v in tree)
    return tree


def _to_cpu(tree: Any) -> Any:
    """A state tree with its tensors on the host."""
    return _map_tensors(tree, lambda t: t.detach().cpu())


def _crossed(interval: int, before: int, after: int) -> bool:
    """Whether the steps (before, after] pass a multiple of `interval` (0: never). Depends on the step alone, so
    a resumed run evaluates and checkpoints at the same steps as an uninterrupted one."""
    return bool(interval) and after // interval > before // interval


def _clone(tree: Any) -> Any:
    """A deep copy of a state_dict's tensors (nested dicts / lists), for undoing an update."""
    return _map_tensors(tree, lambda t: t.detach().clone())
