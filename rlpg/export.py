"""Export a trained policy to ONNX: observation in (raw, normalised inside the graph), action out.

Needs the `onnx` extra (`pip install 'rlpg[onnx]'`): torch's exporter uses onnx and onnxscript.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from rlpg import checkpoint
from rlpg.checkpoint import TrainedPolicy, load_policy
from rlpg.errors import RLPGError


class DeterministicPolicy(nn.Module):
    """obs [B, D] -> deterministic action: the saved observation normalisation followed by the mode.
    For a Gaussian policy the mode is the mean; Categorical heads export their argmax."""

    def __init__(self, trained: TrainedPolicy) -> None:
        super().__init__()
        self.policy = trained.policy
        rms = trained.obs_rms
        self.normalize = rms is not None
        d = self.policy.preprocess(torch.zeros(1, *self.policy.obs_space.shape)).shape[-1]
        mean = rms["mean"].float() if rms is not None else torch.zeros(d)
        var = rms["var"].float() if rms is not None else torch.ones(d)
        self.register_buffer("mean", mean.reshape(-1))
        self.register_buffer("inv_std", torch.rsqrt(var.reshape(-1) + 1e-8))
        self.clip = float(trained.clip_obs)

    def forward(self, obs: Tensor) -> Tensor:
        x = obs.reshape(obs.shape[0], -1).float()
        if self.normalize:
            x = ((x - self.mean) * self.inv_std).clamp(-self.clip, self.clip)
        return self.policy(x)


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


def export_onnx(path: str | Path, output: str | Path | None = None) -> Path:
    """Write the deterministic policy of a run directory or checkpoint to an .onnx file (atomically)."""
    src = checkpoint.resolve(path)
    out = check_output(Path(output) if output else src.with_suffix(".onnx"))
    trained = load_policy(src)
    module = DeterministicPolicy(trained).eval()
    example = torch.zeros(2, *trained.policy.obs_space.shape)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise RLPGError("ONNX export needs the onnx extra: pip install 'rlpg[onnx]'") from None
    try:
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
