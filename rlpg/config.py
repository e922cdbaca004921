"""Configuration: dataclasses whose one-line field docstrings become `--help`, turned into argparse flags.

`TrainConfig` holds what the trainer needs (environment, scale, logging, evaluation); each agent has its
own `<Algo>Config(AgentConfig)` next to its update in agents/. `__post_init__` rejects bad values with a
message that names the flag and the fix.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from rlpg.errors import ConfigError


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
        in_range(self, "gamma", 0.0, 1.0)
        in_range(self, "gae_lambda", 0.0, 1.0)
        positive(self, "learning_rate", "max_grad_norm", "norm_type", "clip_value")
        positive(self, "momentum", allow_zero=True)
        one_of(self, "optimizer", ("adam", "sgd", "rmsprop"))

    def validate_batch(self, num_envs: int, num_steps: int) -> None:
        """Check settings that depend on the batch size B = num_envs * num_steps (see PPOConfig)."""


@dataclass
class TrainConfig:
    """What the trainer needs: the environment, the scale of a run, logging, evaluation and checkpoints."""

    algo: str = "ppo"
    """algorithm: ppo, trpo, npg or reinforce"""
    env_id: str = "CartPole-v1"
    """Gymnasium environment id"""
    backend: str = "auto"
    """environment backend: torch (batched on the device), gymnasium, or auto (torch when rlpg has the env)"""
    num_envs: int = 8
    """number of parallel environments N"""
    num_steps: int = 128
    """steps per environment in each rollout T (batch size B = N * T)"""
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
    every large tensor in again; the process keeps its peak memory until it exits"""
    async_envs: bool = False
    """gymnasium backend: step environments in subprocesses (AsyncVectorEnv)"""
    normalize_obs: bool = False
    """normalise observations with running statistics (saved in checkpoints)"""
    normalize_reward: bool = False
    """scale rewards by the running std of the discounted return"""
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
    checkpoint_interval: int = 0
    """save last.pt every this many steps (0: only at evaluations and at the end)"""
    logdir: str = "runs"
    """parent directory of run directories"""
    run_name: str = ""
    """run directory name (default: <env>__<algo>__<seed>__<time>)"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self) -> None:
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
        )
        positive(self, "eval_interval", "histogram_interval", "checkpoint_interval", "torch_threads", allow_zero=True)
        one_of(self, "backend", ("auto", "torch", "gymnasium"))
        if any(h <= 0 for h in self.hidden_sizes):
            raise ConfigError(f"--hidden-sizes must be positive integers, got {self.hidden_sizes}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps


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


def add_arguments(parser: argparse.ArgumentParser, cls: type, title: str, skip: tuple[str, ...] = ()) -> None:
    """One `--field-name` flag per dataclass field. Unset flags stay out of the namespace (SUPPRESS), so presets
    can tell which flags the user set, and `--max-grad-norm none` can still set a field to None."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(title)
    for f in fields(cls):
        if f.name in skip:
            continue
        kw, meta = _parser_for(hints[f.name], f.default)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%")
        group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=meta, help=help_text, **kw)


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
