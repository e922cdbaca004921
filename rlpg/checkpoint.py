"""Atomic checkpoints and loading a trained policy for use in your own code.

A checkpoint is one `torch.save` file holding only tensors and plain containers, so it loads with
`torch.load(weights_only=True)` (no arbitrary pickle): policy and agent (optimizer) state, normaliser
statistics, RNG states, the step counter, the resolved config and a description of the spaces; `last.pt`
also holds what `--resume` needs (env state, the collector's observation, schedules' position).
It is written to a temporary file in the same directory, fsynced, then renamed over the target, so a
crash, a signal or SIGKILL mid-write never leaves a truncated checkpoint; a temporary file orphaned by a
killed writer is removed by the next save of the same checkpoint. A payload holding a NaN or an infinity
is refused (NonFiniteError) and the previous checkpoint stays.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlpg.errors import CheckpointError, NonFiniteError, UnsupportedSpaceError
from rlpg.policies import ActorCritic

FORMAT = "rlpg-checkpoint-v1"
REQUIRED = ("algo", "env_id", "global_step", "config", "policy", "spaces")
"""keys every rlpg checkpoint has (last.pt also has the resume state, see rlpg.trainer)"""
STATE = ("policy", "agent", "normalizer", "resume")
"""the learned and running state, which must be finite (spaces may have infinite bounds)"""


def tensors(tree: Any, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """(dotted path, tensor) for every tensor in nested dicts / lists / tuples."""
    if isinstance(tree, Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            yield from tensors(v, f"{prefix}.{i}")


def first_non_finite(tree: Any) -> str | None:
    """The path of the first floating-point tensor holding a NaN or an infinity, or None."""
    for name, t in tensors(tree):
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            return name
    return None


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` atomically (temp file + fsync + rename). A non-finite tensor anywhere in it
    raises NonFiniteError and leaves the existing file untouched."""
    path = Path(path)
    bad = first_non_finite({k: payload[k] for k in STATE if k in payload})
    if bad is not None:
        raise NonFiniteError(f"refused to write {path}: {bad} is not finite (NaN or inf); the previous "
                             f"{path.name} is kept")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **payload}, f))
    remove_orphans(path)
    return path


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(f)` into a temporary file beside `path`, fsync, then rename it over `path`: a reader (or a crash)
    sees the old file or the new one, never half of one. The temporary file is removed if writing fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_orphans(path: str | Path) -> list[Path]:
    """Delete the temporary files that interrupted writes of `path` left behind (a writer killed between
    mkstemp and rename). One run directory has one writer, so none of them can be in use."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its best.pt, else last.pt)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        seeds = sorted(c.name for c in p.glob("seed_*") if (c / "config.json").is_file())
        if (p / "seeds.json").is_file() and seeds:  # rlpg train --seeds: one run directory per seed inside
            raise CheckpointError(f"{p} holds the runs of {len(seeds)} seeds ({', '.join(seeds[:4])}"
                                  f"{', ...' if len(seeds) > 4 else ''}); pass one of them, e.g. {p / seeds[0]}")
        raise CheckpointError(f"no checkpoint in {p} (expected best.pt or last.pt); is it an rlpg run directory?")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist; pass a run directory or a .pt file")
    return p


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint. A missing, truncated, foreign or incomplete file, one with non-finite
    tensors, and a pickle that holds arbitrary Python objects (refused for safety) raise CheckpointError."""
    p = resolve(path)
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "not an allowed global" in str(e):  # a class torch would import
            raise CheckpointError(
                f"refused to load {p} for safety: it holds Python objects other than tensors and plain data, which "
                "could run code when unpickled (rlpg checkpoints never do); load it with torch.load(weights_only="
                "False) only if you trust where it came from"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {p}: it is corrupt or not a torch file (UnpicklingError); "
                              "re-save it or use another one") from None
    except Exception as e:  # torch raises RuntimeError/EOFError/... for damaged files
        raise CheckpointError(
            f"cannot read checkpoint {p}: it is corrupt or not a torch file "
            f"({type(e).__name__}); re-save it or use another one"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not an rlpg checkpoint (no '{FORMAT}' marker)")
    missing = [k for k in REQUIRED if k not in payload]
    train = payload.get("config", {}).get("train") if isinstance(payload.get("config"), dict) else None
    if not missing and not isinstance(train, dict):
        missing = ["config.train"]
    if not missing and not isinstance(payload["spaces"], dict):
        missing = ["spaces"]
    if not missing:
        missing = [f"spaces.{k}" for k in ("observation", "action") if k not in payload["spaces"]]
    if missing:
        raise CheckpointError(f"{p} is an rlpg checkpoint but lacks {', '.join(missing)}: it is damaged or was "
                              "not written by rlpg; use another one")
    bad = first_non_finite({k: payload[k] for k in STATE if k in payload})
    if bad is not None:
        raise CheckpointError(f"{p} holds non-finite values ({bad} has NaN or inf); it cannot be used")
    return payload


# ------------------------------------------------------------------------------------------ spaces / RNG
def space_to_dict(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "low": torch.as_tensor(space.low),
            "high": torch.as_tensor(space.high),
            "dtype": str(space.dtype),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": torch.as_tensor(space.nvec), "start": torch.as_tensor(space.start)}
    raise UnsupportedSpaceError(f"cannot store space {space} in a checkpoint")


def space_from_dict(d: dict[str, Any]) -> gym.Space:
    if d["type"] == "Box":
        return gym.spaces.Box(d["low"].cpu().numpy(), d["high"].cpu().numpy(), dtype=np.dtype(d["dtype"]))
    if d["type"] == "Discrete":
        return gym.spaces.Discrete(d["n"], start=d["start"])
    if d["type"] == "MultiDiscrete":
        start = d["start"].cpu().numpy() if "start" in d else None
        return gym.spaces.MultiDiscrete(d["nvec"].cpu().numpy(), start=start)
    raise CheckpointError(f"unknown space type {d['type']!r} in the checkpoint")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": torch.as_tensor(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ user-facing
class TrainedPolicy:
    """A trained policy for your own code: applies the saved observation normalisation, then the policy.

    policy = rlpg.load_policy("runs/CartPole-v1__ppo__1__...")
    action = policy.predict(obs)            # numpy or tensor, single obs [D] or batch [B, D]

    For a Box action space the actions are clipped to [low, high] by default: training clips at the env
    boundary (envs/gym.py; the torch-native tasks clip where Gymnasium does), so the clipped action is what
    the env saw for this policy's output. `clip=False` gives the raw Gaussian mean (or sample).
    """

    def __init__(self, policy: ActorCritic, obs_rms: dict[str, Tensor] | None, clip_obs: float, info: dict) -> None:
        self.policy, self.obs_rms, self.clip_obs, self.info = policy, obs_rms, clip_obs, info
        self.device = next(policy.parameters()).device
        space = policy.action_space
        self.action_bounds: tuple[Tensor, Tensor] | None = None
        """(low, high) [A] on the device for Box action spaces, else None"""
        if isinstance(space, gym.spaces.Box):
            low, high = (torch.as_tensor(b, dtype=torch.float32, device=self.device) for b in (space.low, space.high))
            self.action_bounds = (low, high)
        self.action_start: Tensor | None = None
        """the first action of a Discrete / MultiDiscrete space whose `start` is not 0 (the policy's categorical
        heads count from 0, the env from `start`), else None"""
        if isinstance(space, gym.spaces.Discrete | gym.spaces.MultiDiscrete) and np.any(space.start != 0):
            self.action_start = torch.as_tensor(space.start, dtype=torch.int64, device=self.device)

    def normalize(self, obs: Tensor) -> Tensor:
        if self.obs_rms is None:
            return obs
        mean, var = self.obs_rms["mean"].to(self.device), self.obs_rms["var"].to(self.device)
        return ((obs - mean) / torch.sqrt(var + 1e-8)).clamp(-self.clip_obs, self.clip_obs).float()

    def clip_action(self, action: Tensor) -> Tensor:
        """Clip a Box action [B, A] to the action space's bounds; other spaces' actions pass unchanged."""
        if self.action_bounds is None:
            return action
        low, high = self.action_bounds
        return action.clamp(low.to(action.dtype), high.to(action.dtype))

    @torch.no_grad()
    def predict(self, obs: Any, deterministic: bool = True, clip: bool = True) -> Any:
        """Action(s) for `obs`: the mode (`deterministic`) or a sample, clipped to a Box action space's bounds
        unless `clip=False` (see the class docstring). numpy in gives numpy out, a tensor gives a tensor."""
        is_numpy = not isinstance(obs, Tensor)
        x = torch.as_tensor(np.asarray(obs) if is_numpy else obs, device=self.device)
        single = x.dim() == len(self.policy.obs_space.shape or ())
        if single:
            x = x.unsqueeze(0)
        if isinstance(self.policy.obs_space, gym.spaces.Box):
            x = self.normalize(x.float())
        d = self.policy.dist(x)
        action = d.mode if deterministic else d.sample()
        if clip:
            action = self.clip_action(action)
        if self.action_start is not None:
            action = action + self.action_start
        if single:
            action = action[0]
        return action.cpu().numpy() if is_numpy else action

    __call__ = predict


def build_policy(payload: dict[str, Any], device: str | torch.device = "cpu") -> ActorCritic:
    """The ActorCritic a checkpoint describes (its spaces and architecture), with its weights, in eval mode."""
    try:
        cfg = payload["config"]["train"]
        policy = ActorCritic(
            space_from_dict(payload["spaces"]["observation"]),
            space_from_dict(payload["spaces"]["action"]),
            tuple(cfg["hidden_sizes"]),
            cfg["activation"],
            cfg["log_std_init"],
            bool(cfg.get("shared_encoder", False)),
        ).to(device)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"the checkpoint's description of its policy is incomplete or damaged ({type(e).__name__}"
                              f": {e}); use another checkpoint") from None
    try:
        policy.load_state_dict(payload["policy"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint weights do not fit the policy it describes: {str(e).splitlines()[0]}"
        ) from None
    return policy.eval()


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> TrainedPolicy:
    """The policy saved in a checkpoint or run directory (best.pt, else last.pt), ready to act."""
    return policy_from_payload(load(path, map_location=device), device)


def policy_from_payload(payload: dict[str, Any], device: str | torch.device = "cpu") -> TrainedPolicy:
    """`load_policy` for a checkpoint already loaded."""
    info = {k: payload.get(k) for k in ("algo", "env_id", "global_step", "eval_mean_return")}
    obs_rms = payload.get("normalizer", {}).get("obs_rms")
    policy = build_policy(payload, device)
    return TrainedPolicy(policy, obs_rms, float(payload["config"]["train"].get("clip_obs", 10.0)), info)
