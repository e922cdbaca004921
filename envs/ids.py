"""What an environment id names, and how each Gymnasium sub-env is built for it.

Ids take Gymnasium's forms: `EnvId`, or `module.path:EnvId` (the module is imported first, which registers EnvId).
`env_packages` are imported before any env is made (`import_packages`), for packages that register their envs on
import. Two families register themselves only when asked: `ALE/...` (ale-py; Gymnasium 1.x needs
`gymnasium.register_envs`) and `MinAtar/...` (the minatar package's entry-point plugin is not loaded by Gymnasium
1.x, so `minatar.gym.register_envs()` is called here). A missing package is a one-line error naming the extra.

`recipe()` returns what envs/gym.py needs to build the vector env: the registered id, the per-sub-env wrappers
(Atari preprocessing, a time limit for MinAtar, flattening of Dict / Tuple observations) and the time limit that
evaluation may rely on.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gymnasium as gym

from rlpg.encoders import image_shape
from rlpg.envs import atari
from rlpg.errors import ConfigError, RLPGError, install_line, unknown_name

Wrapper = Callable[[gym.Env], gym.Env]

MINATAR_PREFIX = "MinAtar/"
MINATAR_MAX_EPISODE_STEPS = {"Freeway": 2500}
"""time limits of MinAtar games, which have none registered: gymnax's `max_steps_in_episode` (1000, and Freeway's own
2500 frames); without one a good policy in Breakout could play for ever and an evaluation would not end"""
MINATAR_DEFAULT_STEPS = 1000


@dataclass(frozen=True)
class Recipe:
    """How to build the sub-envs of one Gymnasium id (see `recipe`)."""

    env_id: str
    """the registered id (without a `module:` prefix)"""
    wrappers: tuple[Wrapper, ...] = ()
    """applied to each sub-env in order, inside the vector env (`gymnasium.make_vec(wrappers=...)`)"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    """the episode limit evaluation may count on (None: the registered one)"""
    episode_stats: bool = False
    """the sub-envs record their own episode statistics (whole games), which the adapter reports"""


def import_module(name: str, what: str) -> None:
    """Import `name`, or ConfigError naming `what` (the flag) and the import's own error, on one line."""
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise ConfigError(f"{what}: {name!r} is not a module name (expected e.g. my_package.envs)")
    try:
        importlib.import_module(name)
    except Exception as e:  # a module's import can fail in any way; the first line of it is what the user needs
        first = str(e).splitlines()[0] if str(e) else ""
        hint = "; is it installed, or on PYTHONPATH?" if isinstance(e, ModuleNotFoundError) and e.name == name else ""
        raise ConfigError(f"{what}: cannot import module {name!r} ({type(e).__name__}: {first}){hint}") from None


def install_hint(env_id: str) -> str:
    """How to install what the family of `env_id` needs (the rlpg extra), for error messages."""
    if env_id.startswith(atari.PREFIX):
        return install_line("atari")
    if env_id.startswith(MINATAR_PREFIX):
        return install_line("minatar")
    spec = gym.envs.registry.get(env_id)
    entry = str(spec.entry_point) if spec is not None else ""
    for extra in ("box2d", "mujoco"):  # Gymnasium's own families, known by their entry point's module
        if f"envs.{extra}" in entry:
            return install_line(extra)
    return f"for MuJoCo tasks: {install_line('mujoco')}; for Box2D tasks: {install_line('box2d')}"


def register_family(env_id: str) -> None:
    """Register the ALE or MinAtar ids when `env_id` is one of them; a missing package names its extra (never a
    guess at a similar registered id, which would only mislead)."""
    if env_id.startswith(atari.PREFIX):
        try:
            import ale_py
        except ImportError:
            raise RLPGError(f"{env_id} needs an extra package (ale-py is not installed): {install_hint(env_id)}"
                            ) from None
        gym.register_envs(ale_py)
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no emulator banner on stderr for every process
    elif env_id.startswith(MINATAR_PREFIX):
        try:
            import minatar.gym
        except ImportError:
            raise RLPGError(f"{env_id} needs an extra package (minatar is not installed): {install_hint(env_id)}"
                            ) from None
        if env_id not in gym.envs.registry:  # registering again would only warn about overriding every id
            minatar.gym.register_envs()


def import_packages(env_packages: Sequence[str]) -> None:
    """Import each of `env_packages` (for any backend: the user asked for them), or ConfigError."""
    for package in env_packages:
        import_module(package, f"--env-packages {package}")


def registered_id(env_id: str) -> str:
    """The registered id `env_id` names, after importing its `module:` prefix and its family's package;
    UnknownNameError when no such id is registered then."""
    module, sep, name = env_id.partition(":")
    if sep:
        import_module(module, f"--env {env_id}")
        if not name:
            raise ConfigError(f"--env {env_id}: no environment id after the module (expected module:EnvId)")
    else:
        name = env_id
    register_family(name)
    if name not in gym.envs.registry:
        raise unknown_name("environment id", name, gym.envs.registry.keys())
    return name


def recipe(env_id: str, training: bool = False, env_kwargs: dict[str, Any] | None = None) -> Recipe:
    """The sub-env recipe of `env_id` (import the env packages first). `training` selects the learner's version of a
    game where the two differ (Atari: per-life episodes and sign-clipped rewards, see envs/atari.py)."""
    name = registered_id(env_id)
    kwargs = dict(env_kwargs or {})
    wrappers: list[Wrapper] = []
    limit = None
    stats = False
    if name.startswith(atari.PREFIX):
        kwargs = {"frameskip": 1, **kwargs}  # AtariPreprocessing repeats the action itself (and max-pools frames)
        wrappers += atari.wrappers(training)
        limit = atari.max_episode_steps(gym.spec(name), kwargs)
        stats = True
    elif name.startswith(MINATAR_PREFIX) and gym.spec(name).max_episode_steps is None:
        game = name.removeprefix(MINATAR_PREFIX).split("-")[0]
        limit = MINATAR_MAX_EPISODE_STEPS.get(game, MINATAR_DEFAULT_STEPS)
        wrappers.append(partial(gym.wrappers.TimeLimit, max_episode_steps=limit))
    wrappers.append(flatten_structured)
    return Recipe(name, tuple(wrappers), kwargs, limit, stats)


def make_single(r: Recipe) -> gym.Env:
    """One sub-env as the vector env builds it (envs/gym.py), also for its spaces."""
    env = gym.make(r.env_id, **r.env_kwargs)
    try:
        for wrap in r.wrappers:
            env = wrap(env)
    except BaseException:
        env.close()
        raise
    return env


def flatten_structured(env: gym.Env) -> gym.Env:
    """Dict and Tuple observations flattened into one Box (Discrete parts one-hot), so the MLP policy takes them;
    other spaces pass unchanged. A Dict holding an image is a ConfigError: its pixels would go into an MLP."""
    space = env.observation_space
    if not isinstance(space, gym.spaces.Dict | gym.spaces.Tuple):
        return env
    for key, sub in _leaves(space):
        if image_shape(sub) is not None:
            raise ConfigError(f"the observation space of {_id(env)} holds an image at {key!r} ({sub}) inside a "
                              f"{type(space).__name__}: image observations are supported only as the whole "
                              "observation (a Box of uint8 or bool); wrap the env to return the image alone")
        if not isinstance(sub, gym.spaces.Box | gym.spaces.Discrete | gym.spaces.MultiDiscrete
                          | gym.spaces.MultiBinary):
            raise ConfigError(f"the observation space of {_id(env)} holds {sub} at {key!r}, which cannot be "
                              "flattened into a vector; rlpg flattens Dict / Tuple spaces of Box, Discrete, "
                              "MultiDiscrete and MultiBinary")
    return gym.wrappers.FlattenObservation(env)


def _leaves(space: gym.Space, prefix: str = "") -> list[tuple[str, gym.Space]]:
    """(path, subspace) of every non-Dict, non-Tuple subspace, e.g. ("pos", Box) or ("sensors.0", Discrete)."""
    if isinstance(space, gym.spaces.Dict):
        items = list(space.spaces.items())
    elif isinstance(space, gym.spaces.Tuple):
        items = [(str(i), s) for i, s in enumerate(space.spaces)]
    else:
        return [(prefix, space)]
    return [leaf for key, sub in items for leaf in _leaves(sub, f"{prefix}.{key}" if prefix else key)]


def _id(env: gym.Env) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__
