"""Configuration: dataclasses whose one-line field docstrings become `--help`, turned into argparse flags.

`TrainConfig` holds what the trainer needs (environment, scale, logging, evaluation); each agent has its
own `<Algo>Config(AgentConfig)` next to its update in agents/. `__post_init__` rejects bad values with a
message that names the flag and the fix: first `check_fields` (types, NaN and infinities, integer bounds)
for every field, then each config's own ranges.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from rlpg.errors import ConfigError

MAX_INT = 2**62
"""bound of every integer setting (sizes are checked against memory separately, see rlpg.trainer)"""
MAY_BE_INFINITE = ("norm_type",)
"""float settings where +inf means something (the max norm); every other float must be finite"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_fields(obj: Any) -> None:
    """Type, finiteness and integer bounds of every field of a config dataclass: a NaN passes every `<` test, so
    it must be caught here, before the ranges are checked."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value, tp = getattr(obj, f.name), hints[f.name]
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
            if value is None:
                continue
            tp = next(a for a in args if a is not type(None))
        flag = _flag(f.name)
        if tp is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{flag} must be true or false, got {value!r}")
        elif tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{flag} must be an integer, got {value!r}")
            if abs(value) > MAX_INT:
                raise ConfigError(f"{flag} is out of range: {value}")
        elif tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{flag} must be a number, got {value!r}")
            if math.isnan(value) or (math.isinf(value) and not (f.name in MAY_BE_INFINITE and value > 0)):
                raise ConfigError(f"{flag} must be a finite number, got {value}")
        elif tp is str:
            if not isinstance(value, str):
                raise ConfigError(f"{flag} must be a string, got {value!r}")
        elif typing.get_origin(tp) is tuple:
            inner = typing.get_args(tp)[0]
            if not isinstance(value, tuple | list) or not all(
                isinstance(v, inner) and not isinstance(v, bool) for v in value
            ):
                raise ConfigError(f"{flag} must be a list of {inner.__name__} values, got {value!r}")
            if inner is int and any(abs(v) > MAX_INT for v in value):
                raise ConfigError(f"{flag} is out of range: {value}")


def positive(obj: Any, *names: str, allow_zero: bool = False) -> None:
    """Raise ConfigError unless each named field is > 0 (or >= 0)."""
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ConfigError(f"--{name.replace('_', '-')} must be {bound}, got {value}")


def in_range(obj: Any, name: str, lo: float, hi: float) -> None:
    value = getattr(obj, name)
    if not lo <= value <= hi:
        raise ConfigError(f"--{name.replace('_', '-')} must lie in [{lo}, {hi}], got {value}")


def one_of(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, got {value!r}")


@dataclass
class AgentConfig:
    """Fields every agent shares; an agent's config subclasses this once and may change the defaults."""

    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda (1 = Monte Carlo returns, 0 = one-step TD)"""
    learning_rate: float = 3e-4
    """learning rate of the first-order optimizer(s)"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training"""
    optimizer: str = "adam"
    """first-order optimizer: adam, sgd (with momentum) or rmsprop"""
    momentum: float = 0.9
    """momentum for sgd and rmsprop"""
    max_grad_norm: float | None = 0.5
    """clip the global gradient norm to this (none to disable)"""
    norm_type: float = 2.0
    """p of the p-norm used for measuring and clipping gradients (inf for the max norm)"""
    clip_value: float | None = None
    """clip each gradient element to [-clip_value, clip_value] before norm clipping (none to disable)"""

    def __post_init__(self) -> None:
        check_fields(self)
        in_range(self, "gamma", 0.0, 1.0)
        in_range(self, "gae_lambda", 0.0, 1.0)
        positive(self, "learning_rate", "max_grad_norm", "clip_value")
        in_range(self, "momentum", 0.0, 0.999)
        if self.norm_type < 1:
            raise ConfigError(f"--norm-type must be >= 1 (a p-norm) or inf, got {self.norm_type}")
        one_of(self, "optimizer", ("adam", "sgd", "rmsprop"))

    def validate_batch(self, num_envs: int, num_steps: int) -> None:
        """Check settings that depend on the batch size B = num_envs * num_steps (see PPOConfig)."""


@dataclass
class TrainConfig:
    """What the trainer needs: the environment, the scale of a run, logging, evaluation and checkpoints."""

    algo: str = "ppo"
    """algorithm: ppo, trpo, npg or reinforce"""
    env_id: str = "CartPole-v1"
    """Gymnasium environment id, or module:EnvId (module is imported first, registering EnvId)"""
    env_packages: tuple[str, ...] = dataclasses.field(default=(), metadata={"repeatable": "--env-package"})
    """modules to import before the environment is made, for packages that register their envs on import
    (--env-package a --env-package b, or --env-packages a b; recorded in config.json, so eval and --resume import
    them again)"""
    backend: str = "auto"
    """environment backend: torch (batched on the device), gymnasium, or auto (torch when rlpg has the env)"""
    num_envs: int = 8
    """number of parallel environments N (under torchrun / --nproc K: of all ranks together, each rank stepping N / K
    of them)"""
    num_steps: int = 128
    """steps per environment in each rollout T (batch size B = N * T; under torchrun / --nproc K the global batch of
    every update, each rank collecting B / K of it)"""
    total_steps: int = 100_000
    """total environment steps to train for"""
    seed: int = 1
    """seeds torch, numpy, python and every environment"""
    device: str = "auto"
    """torch device: auto (cuda when present), cpu, cuda, cuda:1, ..."""
    torch_threads: int = 1
    """CPU threads for torch ops (0: torch's default of one per core). 1 suits small MLPs: extra OpenMP threads
    add little and, when the cores are shared with env workers or other jobs, can slow a run down many times"""
    keep_heap: bool = True
    """glibc: keep freed memory in malloc's heap for reuse (rlpg.runtime.keep_heap_memory) rather than page-faulting
    every large tensor in again; the process keeps its peak memory until it exits. Applied by the rlpg command;
    rlpg.train() leaves the process's allocator as it is (call rlpg.runtime.keep_heap_memory() before it)"""
    async_envs: bool = False
    """gymnasium backend: split the sub-envs over one process per core, stepped at the same time (the same results;
    pays off from a few hundred cheap envs, or a few slow ones)"""
    normalize_obs: bool | None = None
    """normalise observations with running statistics (saved in checkpoints); none: on for continuous-action (Box)
    tasks without a preset, off otherwise"""
    normalize_reward: bool | None = None
    """scale rewards by the running std of the discounted return; none: as normalize_obs"""
    clip_obs: float = 10.0
    """clip normalised observations to [-clip_obs, clip_obs]"""
    clip_reward: float = 10.0
    """clip scaled rewards to [-clip_reward, clip_reward]"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer sizes of the actor and of the critic"""
    activation: str = "tanh"
    """hidden activation: tanh, relu, elu or gelu"""
    log_std_init: float = 0.0
    """initial log standard deviation of Gaussian policies"""
    shared_encoder: bool | None = None
    """image observations: one convolutional encoder for actor and critic (none: shared for ppo and reinforce,
    separate for npg and trpo)"""
    freeze: tuple[str, ...] = ()
    """parameter names (or prefixes such as actor.net.0) to freeze, for fine-tuning"""
    init_from: str = ""
    """checkpoint or run directory whose policy weights (and normaliser) initialise this run"""
    eval_interval: int = 25_000
    """evaluate the deterministic policy every this many steps (0: only at the end)"""
    eval_episodes: int = 20
    """episodes per evaluation"""
    num_eval_envs: int = 10
    """parallel environments used for evaluation"""
    log_interval: int = 1
    """write metrics to TensorBoard every this many updates"""
    histogram_interval: int = 0
    """write weight and gradient histograms every this many updates (0: never)"""
    checkpoint_interval: int = 200_000
    """save last.pt every this many steps (0: not by steps), and also by time (checkpoint_seconds), on a stop
    signal and at the end"""
    checkpoint_seconds: float = 120.0
    """save last.pt at least every this many seconds of training (0: not by time)"""
    max_skipped_updates: int = 5
    """an update with a non-finite loss or gradient is skipped (weights and optimizer untouched); stop the run with
    an error after this many in a row"""
    logdir: str = "runs"
    """parent directory of run directories"""
    run_name: str = ""
    """run directory name (default: <env>__<algo>__<seed>__<time>)"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self) -> None:
        check_fields(self)
        positive(
            self,
            "num_envs",
            "num_steps",
            "total_steps",
            "eval_episodes",
            "num_eval_envs",
            "log_interval",
            "clip_obs",
            "clip_reward",
            "max_skipped_updates",
        )
        positive(self, "eval_interval", "histogram_interval", "checkpoint_interval", "torch_threads",
                 "checkpoint_seconds", allow_zero=True)
        one_of(self, "backend", ("auto", "torch", "gymnasium"))
        if not self.hidden_sizes or any(h <= 0 or h > 1 << 20 for h in self.hidden_sizes):
            raise ConfigError(f"--hidden-sizes must be one or more integers in [1, 1048576], got {self.hidden_sizes}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must lie in [0, 2**32 - 1] (numpy's seed range), got {self.seed}")
        if self.torch_threads > 4096:
            raise ConfigError(f"--torch-threads must be <= 4096, got {self.torch_threads}")
        if not self.env_id:
            raise ConfigError("--env must name an environment, e.g. CartPole-v1")
        if not self.logdir:
            raise ConfigError("--logdir must not be empty")
        check_run_name(self.run_name)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps


MAX_RUN_NAME = 200


def check_run_name(name: str) -> None:
    """A run name is one directory name inside --logdir: no separators, not '.' or '..', at most 200 characters."""
    if not name:
        return
    if len(name) > MAX_RUN_NAME:
        raise ConfigError(f"--run-name is {len(name)} characters long; use at most {MAX_RUN_NAME}")
    if name.strip() in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        raise ConfigError(f"--run-name must be a single directory name inside --logdir (no '/', '\\', '..' or "
                          f"surrounding spaces), got {name!r}")


# ----------------------------------------------------------------------------------------- command line
def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each field of a dataclass (and its bases): the `--help` text."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # pragma: no cover - source unavailable
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = nxt.value.value
    return docs


def _parser_for(tp: Any, default: Any) -> tuple[dict[str, Any], str]:
    """argparse kwargs for a field's type, and a metavar."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        kw, meta = _parser_for(inner, default)
        conv = kw["type"]
        kw["type"] = lambda s, conv=conv: None if s.lower() in ("none", "null") else conv(s)
        return kw, meta
    if tp is bool:
        return {"type": _bool}, "BOOL"
    if origin is tuple:
        inner = args[0] if args else str
        return {"type": inner, "nargs": "*"}, inner.__name__.upper()
    if tp in (int, float, str):
        return {"type": tp}, tp.__name__.upper()
    raise TypeError(f"no flag type for {tp}")  # pragma: no cover


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def flag_value(value: Any) -> str:
    """A setting as its flag takes it: true / false, none, a list space-separated."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return " ".join(map(flag_value, value)) if value else "empty"
    return str(value)


def default_of(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def add_arguments(parser: argparse.ArgumentParser, cls: type, title: str, skip: tuple[str, ...] = (),
                  shown: Mapping[str, str] | None = None) -> None:
    """One `--field-name` flag per dataclass field. Unset flags stay out of the namespace (SUPPRESS), so presets
    can tell which flags the user set, and `--max-grad-norm none` can still set a field to None.

    `shown`: per field, the text in parentheses at the end of its help, saying which value a run takes and where it
    comes from (e.g. "preset ppo/CartPole-v1/torch: 64", see rlpg.describe); "default: <value>" otherwise."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(title)
    for f in fields(cls):
        if f.name in skip:
            continue
        kw, meta = _parser_for(hints[f.name], f.default)
        flags = ["--" + f.name.replace("_", "-")]
        if f.metadata.get("repeatable"):  # a list that each use of the flag (or its singular alias) adds to
            kw["action"] = "extend"
            flags.append(f.metadata["repeatable"])
        note = (shown or {}).get(f.name) or f"default: {flag_value(default_of(f))}"
        help_text = f"{docs.get(f.name, '')} ({note})".replace("%", "%%")
        group.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, metavar=meta, help=help_text, **kw)


def pick(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of `values` that are fields of dataclass `cls`."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def build(cls: type, *layers: dict[str, Any]) -> Any:
    """Instantiate `cls` from layered overrides: later layers win; a key that is present counts as set, even to
    None (so `max_grad_norm=None` disables clipping), a key that is absent does not."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(pick(cls, layer))
    hints = typing.get_type_hints(cls)
    for k, v in merged.items():
        if typing.get_origin(hints[k]) is tuple and isinstance(v, list):
            merged[k] = tuple(v)
    return cls(**merged)


def to_dict(obj: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(obj).items()}
