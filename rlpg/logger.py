"""TensorBoard logging. Only the trainer holds a Logger; agents return metric dicts.

Metrics arrive as device tensors (`train/*`, `grad_norm/*`, `rollout/*`, `time/*`); `scalars()` stacks
those on each device and copies them to the host once, instead of one `.item()` sync per value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.summary.writer.record_writer import RecordWriter
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

from rlpg.checkpoint import atomic_write


def to_host(metrics: Mapping[str, Tensor | float | int]) -> dict[str, float]:
    """Floats for every metric with one device-to-host copy per device."""
    out: dict[str, float] = {k: float(v) for k, v in metrics.items() if not isinstance(v, Tensor)}
    by_device: dict[torch.device, list[tuple[str, Tensor]]] = {}
    for k, v in metrics.items():
        if isinstance(v, Tensor):
            by_device.setdefault(v.device, []).append((k, v))
    for items in by_device.values():
        values = torch.stack([v.detach().reshape(()).to(torch.float64) for _, v in items]).cpu().tolist()
        out.update({k: x for (k, _), x in zip(items, values, strict=True)})
    return out


def _stale(event: Event, last_step: int) -> bool:
    """An event a resumed run will write again: one after the checkpoint's step, or the hparams summary of a
    finished run (written once more when the continued run finishes)."""
    if event.step > last_step:
        return True
    return any(v.tag.startswith("hparam/") or v.metadata.plugin_data.plugin_name == "hparams"
               for v in event.summary.value)


def purge_events(logdir: str | Path, last_step: int) -> int:
    """Drop the events a resumed run will log again from every event file in `logdir` (see `_stale`), so the
    continued curves have neither duplicated nor rewound points for any reader, not only for TensorBoard's own
    purge. Each file is rewritten atomically (temp file + rename); returns the number of events dropped."""
    dropped = 0
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        kept: list[bytes] = []
        stale = 0
        for record in RawEventFileLoader(str(path)).Load():
            event = Event.FromString(record)
            if _stale(event, last_step):
                stale += 1
            else:
                kept.append(record)
        if not stale:
            continue
        def write(f: BinaryIO, kept: list[bytes] = kept) -> None:
            writer = RecordWriter(f)
            for record in kept:
                writer.write(record)

        atomic_write(path, write)
        dropped += stale
    return dropped


class Logger:
    """A SummaryWriter in `logdir` with helpers for scalars, weight/gradient histograms and hparams.

    `purge_step` (a resumed run: the checkpoint's step + 1) also tells TensorBoard to hide anything it had
    already read at or after that step."""

    def __init__(self, logdir: str | Path, purge_step: int | None = None) -> None:
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir), flush_secs=10, purge_step=purge_step)

    def scalars(self, metrics: Mapping[str, Tensor | float | int], step: int) -> dict[str, float]:
        """Write every metric at `step` (non-finite values are skipped); returns them as floats."""
        host = to_host(metrics)
        self.write(host, step)
        return host

    def write(self, values: Mapping[str, float], step: int) -> None:
        """Write host floats; non-finite values (e.g. explained variance of constant returns) are skipped."""
        for k, v in values.items():
            if math.isfinite(v):
                self.writer.add_scalar(k, v, step)

    def histograms(self, module: nn.Module, step: int) -> None:
        """`weights/<name>` and `grads/<name>` (the last gradient step's) for every parameter."""
        for name, p in module.named_parameters():
            self.writer.add_histogram(f"weights/{name}", p.detach().cpu(), step)
            if p.grad is not None:
                self.writer.add_histogram(f"grads/{name}", p.grad.detach().cpu(), step)

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text, 0)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        clean = {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in hparams.items()}
        self.writer.add_hparams(clean, dict(metrics), run_name=".", global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
