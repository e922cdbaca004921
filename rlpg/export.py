"""Export a trained policy to ONNX: observation in (raw, normalised inside the graph), action out.

Needs the `onnx` extra: torch's exporter uses onnx and onnxscript.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rlpg import checkpoint
from rlpg.checkpoint import TrainedPolicy, load_policy
from rlpg.errors import RLPGError, install_line
from rlpg.policies import obs_dim


class DeterministicPolicy(nn.Module):
    """obs [B, D] -> deterministic action: the saved observation normalisation followed by the mode.
    For a Gaussian policy the mode is the mean, clipped to the Box action space's bounds in the graph when
    `clip_actions` (as `TrainedPolicy.predict` does by default); Categorical heads export their argmax."""

    def __init__(self, trained: TrainedPolicy, clip_actions: bool = True) -> None:
        super().__init__()
        self.clip_actions = clip_actions and trained.action_bounds is not None
        low, high = trained.action_bounds or (torch.zeros(0), torch.zeros(0))
        self.register_buffer("action_low", low.detach().cpu().clone())
        self.register_buffer("action_high", high.detach().cpu().clone())
        self.offset_actions = trained.action_start is not None
        start = trained.action_start if trained.action_start is not None else torch.zeros(0, dtype=torch.int64)
        self.register_buffer("action_start", start.detach().cpu().clone())
        self.policy = trained.policy
        rms = trained.obs_rms
        self.normalize = rms is not None
        d = obs_dim(self.policy.obs_space)
        mean = rms["mean"].float() if rms is not None else torch.zeros(d)
        var = rms["var"].float() if rms is not None else torch.ones(d)
        self.register_buffer("mean", mean.reshape(-1))
        self.register_buffer("inv_std", torch.rsqrt(var.reshape(-1) + 1e-8))
        self.clip = float(trained.clip_obs)

    def forward(self, obs: Tensor) -> Tensor:
        if self.policy.image:  # pixels go to the encoder as they are (uint8 / bool in, scaled inside the graph)
            action = self.policy(obs)
        else:
            x = obs.reshape(obs.shape[0], -1).float()
            if self.normalize:
                x = ((x - self.mean) * self.inv_std).clamp(-self.clip, self.clip)
            action = self.policy(x)
        if self.clip_actions:
            action = action.clamp(self.action_low, self.action_high)
        if self.offset_actions:  # Discrete(n, start): the env's actions are start .. start + n - 1
            action = action + self.action_start
        return action


def check_output(out: Path) -> Path:
    """An export never overwrites a checkpoint or anything but an .onnx file, and its directory must exist."""
    if out.suffix.lower() != ".onnx":
        raise RLPGError(f"--output {out} must end in .onnx (an export never overwrites a checkpoint or other file)")
    if out.is_dir():
        raise RLPGError(f"--output {out} is a directory; name a file such as {out / 'policy.onnx'}")
    if not out.parent.is_dir():
        raise RLPGError(f"--output {out}: directory {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK):
        raise RLPGError(f"--output {out}: directory {out.parent} is not writable")
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence what torch's ONNX exporter says about itself rather than about the model: a warning per
    torchvision operator when torchvision is not installed (rlpg uses none of them) and a FutureWarning from
    torch's own pytree code. Errors still surface as exceptions."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def export_onnx(path: str | Path, output: str | Path | None = None, clip_actions: bool = True) -> Path:
    """Write the deterministic policy of a run directory or checkpoint to an .onnx file (atomically).
    `clip_actions=False` exports the raw Gaussian mean instead of the action clipped to the Box bounds."""
    src = checkpoint.resolve(path)
    out = check_output(Path(output) if output else src.with_suffix(".onnx"))
    trained = load_policy(src)
    module = DeterministicPolicy(trained, clip_actions).eval()
    space = trained.policy.obs_space  # an example in the space (a Discrete(n, start) observation starts at start)
    example = torch.full((2, *space.shape), float(getattr(space, "start", 0)))
    if trained.policy.image:  # the exported graph takes the env's own pixels
        example = torch.zeros((2, *space.shape), dtype=torch.uint8 if space.dtype == np.uint8 else torch.bool)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise RLPGError(f"ONNX export needs the onnx extra: {install_line('onnx')}") from None
    try:
        with _quiet_exporter():
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=["obs"],
                output_names=["action"],
                dynamic_shapes={"obs": {0: torch.export.Dim("batch", min=1)}},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
