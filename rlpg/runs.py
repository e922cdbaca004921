"""What a run needs around its loop: the configs of a new or resumed run, its run directory, and stop signals.

A run directory is never reused silently: `--resume` continues it, `--overwrite` replaces it (only if it is an rlpg
run directory), otherwise it is an error. SIGTERM, SIGINT and SIGUSR1 stop a run at an iteration boundary.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import gymnasium

from rlpg import checkpoint
from rlpg.agents import ALGOS
from rlpg.config import MAX_RUN_NAME, TrainConfig, build
from rlpg.encoders import image_shape
from rlpg.envs import resolve_backend, spaces_of
from rlpg.errors import CheckpointError, ConfigError, StopNow, unknown_name
from rlpg.presets import preset

RESUMABLE = ("total_steps", "progress", "log_interval", "histogram_interval", "eval_interval", "eval_episodes",
             "num_eval_envs", "checkpoint_interval", "checkpoint_seconds", "torch_threads", "keep_heap",
             "max_skipped_updates")
"""settings a resumed run may change: how long it runs and what it logs, never what it learns from"""
SHARED_ENCODER_ALGOS = ("ppo", "reinforce")
"""algorithms whose image policies share one encoder by default (one loss trains actor and critic together)"""


def check_spaces(payload: dict[str, Any], env: Any, what: str) -> None:
    """ConfigError when a checkpoint was made for other observation / action spaces than `env` has."""
    for key, space in (("observation", env.single_observation_space), ("action", env.single_action_space)):
        saved = checkpoint.space_from_dict(payload["spaces"][key])
        if saved != space:
            raise ConfigError(f"{what} was made for {payload.get('env_id')} with {key} space {saved}, but this "
                              f"environment has {space}; use a checkpoint of the same environment")


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
    from_overrides = overrides.pop("env_id", None)
    env_id = env_id if env_id is not None else from_overrides if from_overrides is not None else TrainConfig.env_id
    if not isinstance(env_id, str):
        raise ConfigError(f"--env must be an environment id, got {env_id!r}")
    backend = overrides.get("backend") or "auto"
    tuned = preset(algo, env_id, resolve_backend(env_id, backend) if isinstance(backend, str) else "auto")
    known = {f for cls in (TrainConfig, config_cls) for f in cls.__dataclass_fields__}
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for {algo}; see rlpg train --algo {algo} --help")
    base = {"algo": algo, "env_id": env_id}
    cfg = build(TrainConfig, base, tuned, overrides)
    agent_cfg = build(config_cls, tuned, overrides)
    agent_cfg.validate_batch(cfg.num_envs, cfg.num_steps)
    if cfg.normalize_obs is None or cfg.normalize_reward is None or cfg.shared_encoder is None:
        spaces = spaces_of(env_id, cfg.backend, cfg.env_packages)
        image = spaces is not None and image_shape(spaces[0]) is not None
        # continuous control learns far better with both (Engstrom et al. 2020; on Hopper-v5 the critic's explained
        # variance goes from ~0.25 to ~0.99): the default for Box-action tasks nothing is tuned for (pixels are
        # scaled by the encoder instead)
        auto = not tuned and spaces is not None and isinstance(spaces[1], gymnasium.spaces.Box)
        cfg = replace(cfg, normalize_obs=(auto and not image) if cfg.normalize_obs is None else cfg.normalize_obs,
                      normalize_reward=auto if cfg.normalize_reward is None else cfg.normalize_reward,
                      shared_encoder=(image and algo in SHARED_ENCODER_ALGOS) if cfg.shared_encoder is None
                      else cfg.shared_encoder)
    if cfg.shared_encoder and algo not in SHARED_ENCODER_ALGOS:
        raise ConfigError(f"--shared-encoder true does not suit {algo}: its actor step (a trust region on the actor's "
                          "parameters) would also move the critic's encoder; use --shared-encoder false")
    return cfg, agent_cfg


def resume_configs(run_dir: str | Path, algo: str | None = None, env_id: str | None = None,
                   overrides: dict[str, Any] | None = None,
                   payload: dict[str, Any] | None = None) -> tuple[TrainConfig, Any, dict[str, Any]]:
    """The configs of the run in `run_dir`, as saved in its last.pt, with the few settings a resumed run may
    change (RESUMABLE) taken from `overrides`; any other setting that differs is a ConfigError. Returns
    (TrainConfig, agent config, the last.pt payload). `payload`: that last.pt, when the caller has loaded it."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"--resume {run}: no such run directory")
    if not (run / "last.pt").is_file():
        raise ConfigError(f"--resume {run}: it has no last.pt to continue from; is it an rlpg run directory?")
    if payload is None:
        payload = checkpoint.load(run / "last.pt")
    missing = [k for k in ("resume", "agent", "rng", "iteration") if k not in payload]
    if missing or "agent" not in payload["config"]:
        raise CheckpointError(f"{run / 'last.pt'} lacks the state a resumed run needs ({', '.join(missing)}); "
                              "it was written by an older rlpg: start a new run with --init-from instead")
    saved_train, saved_agent = payload["config"]["train"], payload["config"]["agent"]
    if algo is not None and algo != payload["algo"]:
        raise ConfigError(f"--algo {algo}: the run in {run} was trained with {payload['algo']}; drop --algo to resume")
    if env_id is not None and env_id != payload["env_id"]:
        raise ConfigError(f"--env {env_id}: the run in {run} was trained on {payload['env_id']}; drop --env to resume")
    if payload["algo"] not in ALGOS:
        raise CheckpointError(f"{run / 'last.pt'} was made by an unknown algorithm {payload['algo']!r}")
    _, config_cls = ALGOS[payload["algo"]]
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        saved = saved_train.get(key, saved_agent.get(key))
        if isinstance(value, tuple):
            value = list(value)
        if key not in RESUMABLE and value != saved:
            raise ConfigError(
                f"--{key.replace('_', '-')} cannot change when resuming (the run used {saved!r}); a resumed run "
                f"may change only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE)}"
            )
    keep = {k: v for k, v in overrides.items() if k in RESUMABLE}
    try:
        cfg = build(TrainConfig, saved_train, keep)
        agent_cfg = build(config_cls, saved_agent)
    except TypeError as e:
        raise CheckpointError(f"{run / 'last.pt'} holds a config this rlpg cannot read ({e})") from None
    cfg = replace(cfg, logdir=str(run.parent), run_name=run.name, init_from="")
    if payload["global_step"] >= cfg.total_steps:
        raise ConfigError(f"the run in {run} already finished its {cfg.total_steps} steps; pass a larger "
                          "--total-steps to continue it")
    return cfg, agent_cfg, payload


# -------------------------------------------------------------------------------------------------------- signals
STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None)


class StopSignals:
    """SIGTERM (kill, SLURM, Kubernetes, docker stop), SIGINT (Ctrl-C) and SIGUSR1 (SLURM's --signal warning) stop
    a run cleanly. While an iteration is half done (`safe` False) the first signal only asks the loop to stop at the
    end of it, so last.pt holds a consistent state; a signal while nothing is half done, or a second one, raises
    StopNow at once. Handlers are installed only in the main thread and restored on exit."""

    def __init__(self, deferred: bool = False, announce: bool = True) -> None:
        self.deferred, self.announce = deferred, announce
        """every signal only asks the loop to stop at the end of the iteration (a rank of a torchrun job: stopping at
        once would leave the other ranks waiting for it)"""
        self.signum: int | None = None
        self.safe = True
        self.closing = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if self.closing or (self.deferred and not first):
            return
        if first and (not self.safe or self.deferred):
            name = signal.Signals(signum).name
            again = "every rank stops with it" if self.deferred else "send it again to stop at once"
            if self.announce:
                print(f"\nrlpg: {name}: stopping after this update and saving last.pt ({again})",
                      file=sys.stderr, flush=True)
            return
        raise StopNow(signum)


# -------------------------------------------------------------------------------------------------- run directory
def default_run_name(env_id: str, algo: str, seed: int, stamp: int) -> str:
    """<env>__<algo>__<seed>__<time>, one directory name: the separators of ids such as ALE/Pong-v5 or
    my_pkg.envs:Maze-v0 become '-' (ALE-Pong-v5, my_pkg.envs-Maze-v0)."""
    env = re.sub(r"[/\\:\s]+", "-", env_id).strip("-.") or "env"
    return f"{env[:MAX_RUN_NAME - 60]}__{algo}__{seed}__{stamp}"


def looks_like_run(path: Path) -> bool:
    """An rlpg run directory (or an empty one), which --overwrite may delete."""
    names = {p.name for p in path.iterdir()}
    return not names or "config.json" in names or bool(names & {"last.pt", "best.pt", "seeds.json"})


def prepare_run_dir(logdir: Path, name: str, explicit: bool, overwrite: bool) -> Path:
    """Check (do not create) the run directory: an existing one is never reused silently."""
    if logdir.exists() and not logdir.is_dir():
        raise ConfigError(f"--logdir {logdir} is a file, not a directory; pass a directory")
    run_dir = logdir / name
    if explicit and (run_dir.exists() or run_dir.is_symlink()):
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir} exists and is not a directory; choose another --run-name")
        if not overwrite:
            raise ConfigError(f"run directory {run_dir} already exists; continue it with --resume {run_dir}, replace "
                              "it with --overwrite, or choose another --run-name")
        if not looks_like_run(run_dir):
            raise ConfigError(f"refusing to replace {run_dir}: it is not an rlpg run directory (no config.json or "
                              "checkpoint); choose another --run-name")
    return run_dir


def create_run_dir(run_dir: Path, explicit: bool, overwrite: bool) -> Path:
    """Create the run directory; an automatic name gets a _2, _3, ... suffix instead of sharing a directory."""
    try:
        if explicit:
            if overwrite and run_dir.is_dir():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True, exist_ok=False)
            return run_dir
        base, n = run_dir, 1
        while True:
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
                return run_dir
            except FileExistsError:
                n += 1
                run_dir = base.with_name(f"{base.name}_{n}")
    except FileExistsError:
        raise ConfigError(f"run directory {run_dir} was created by another process meanwhile; choose another "
                          "--run-name") from None
    except OSError as e:
        raise ConfigError(f"cannot create run directory {run_dir}: {e.strerror or e}") from None
