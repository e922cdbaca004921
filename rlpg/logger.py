"""TensorBoard logging, and the same scalars in `progress.csv`. Only the trainer holds a Logger; agents return
metric dicts.

Metrics arrive as device tensors (`train/*`, `grad_norm/*`, `rollout/*`, `time/*`); `scalars()` stacks
those on each device and copies them to the host once, instead of one `.item()` sync per value.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

from rlpg.checkpoint import atomic_write, remove_orphans

CSV_NAME = "progress.csv"
FLUSH_SECS = 10.0
"""how often the event file (SummaryWriter's flush_secs) and progress.csv reach the disk during a run"""


def to_host(metrics: Mapping[str, Tensor | float | int]) -> dict[str, float]:
    """Floats for every metric with one device-to-host copy per device."""
    out: dict[str, float] = {k: float(v) for k, v in metrics.items() if not isinstance(v, Tensor)}
    by_device: dict[torch.device, list[tuple[str, Tensor]]] = {}
    for k, v in metrics.items():
        if isinstance(v, Tensor):
            by_device.setdefault(v.device, []).append((k, v))
    for device, items in by_device.items():
        if device.type == "cpu":  # nothing to copy: a read per tensor (~3x cheaper than stacking them first)
            out.update({k: float(v) for k, v in items})
            continue
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


def read_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a progress.csv (cells as text, "" where a tag had no value at that step)."""
    header, rows, _ = _read_csv(Path(path))
    return header, rows


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]], bool]:
    """header, rows, and whether a last line without its newline (a write cut short by a kill) was left out, so a
    resumed run never keeps half a row (a step number cut to its first digits, say)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    partial = bool(lines) and not lines[-1].endswith("\n")
    records = list(csv.reader(lines[:-1] if partial else lines))
    if not records:
        return [], [], partial
    header = records[0]
    return header, [dict(zip(header, r, strict=True)) for r in records[1:] if len(r) == len(header)], partial


class CSVWriter:
    """`progress.csv`: one row per step, columns `step` and then every tag logged so far (sorted); a cell is
    empty where a tag had no finite value at that step. A row stays open while its step lasts (the evaluation
    logs at the step of the update before it); closed rows are appended every `flush_secs` and at `flush()`.
    A tag seen for the first time widens the header: then the file is rewritten whole, atomically (temp file +
    rename, as SB3's CSV writer rewrites it), so a reader never sees rows shorter than the header.

    `purge_step` (a resumed run, as for the event files): rows at or after it are dropped first."""

    def __init__(self, path: Path, purge_step: int | None = None, flush_secs: float = FLUSH_SECS) -> None:
        self.path, self.flush_secs = path, flush_secs
        remove_orphans(path)  # a rewrite killed between its temp file and the rename
        self.columns: list[str] = []
        if path.is_file():
            header, rows, partial = _read_csv(path)
            kept = [r for r in rows if r["step"].isdigit() and (purge_step is None or int(r["step"]) < purge_step)]
            self.columns = header[1:]
            if partial or len(kept) < len(rows):
                self._rewrite(kept)
        self.closed: list[dict[str, float | int]] = []
        """complete rows (with their "step") not on disk yet"""
        self.row: dict[str, float | int] = {}
        """the open row: the values of the latest step"""
        self.row_on_disk = self.row_changed = False  # flush() wrote the open row / values came for it since
        self.last_flush = time.monotonic()

    def add(self, values: Mapping[str, float], step: int) -> None:
        """Record the finite `values` at `step` (a later step closes the row of the one before)."""
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        if not finite:
            return
        if self.row and self.row["step"] != step:
            self._close_row()
        if not self.row:
            self.row = {"step": step}
        self.row.update(finite)
        self.row_changed = True
        if self.closed and time.monotonic() - self.last_flush >= self.flush_secs:
            self._append(self.closed)
            self.closed, self.last_flush = [], time.monotonic()

    def flush(self) -> None:
        """Write every row so far, the open one too (it is rewritten if more values come for its step)."""
        if self.row and self.row_on_disk and self.row_changed:
            self._replace_last(self.row)  # only after an explicit flush() in the middle of a step
        elif self.row and not self.row_on_disk:
            self.closed.append(self.row)
            self.row_on_disk = True
        self._append(self.closed)
        self.closed, self.last_flush, self.row_changed = [], time.monotonic(), False

    def _close_row(self) -> None:
        if self.row_on_disk:
            if self.row_changed:
                self._replace_last(self.row)
        else:
            self.closed.append(self.row)
        self.row, self.row_on_disk, self.row_changed = {}, False, False

    def _append(self, rows: list[dict[str, float | int]]) -> None:
        if not rows:
            return
        tags = {k for row in rows for k in row if k != "step"}
        if not tags <= set(self.columns):
            _, old = read_csv(self.path) if self.path.is_file() else ([], [])
            self.columns = sorted(tags | set(self.columns))
            self._rewrite([*old, *rows])
            return
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(self._text(rows))
            f.flush()

    def _replace_last(self, row: dict[str, float | int]) -> None:
        """The open row was written by flush() and has grown since: the file's last row becomes `row`."""
        _, old = read_csv(self.path)
        self.columns = sorted(set(self.columns) | {k for k in row if k != "step"})
        self._rewrite([*old[:-1], row])

    def _rewrite(self, rows: Iterable[Mapping[str, object]]) -> None:
        text = self._text(rows, header=True).encode("utf-8")
        atomic_write(self.path, lambda f: f.write(text))

    def _text(self, rows: Iterable[Mapping[str, object]], header: bool = False) -> str:
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        if header:
            out.writerow(["step", *self.columns])
        out.writerows([row.get(c, "") for c in ("step", *self.columns)] for row in rows)
        return buf.getvalue()


class Logger:
    """A SummaryWriter in `logdir` with helpers for scalars, weight/gradient histograms and hparams; every scalar of
    `scalars()` / `write()` also goes to `logdir/progress.csv` (see CSVWriter), flushed with the event file (the
    hparams summary stays in the event file and config.json).

    `purge_step` (a resumed run: the checkpoint's step + 1) also tells TensorBoard to hide anything it had
    already read at or after that step, and drops progress.csv's rows from that step on."""

    def __init__(self, logdir: str | Path, purge_step: int | None = None) -> None:
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir), flush_secs=int(FLUSH_SECS), purge_step=purge_step)
        self.csv = CSVWriter(self.logdir / CSV_NAME, purge_step)

    def scalars(self, metrics: Mapping[str, Tensor | float | int], step: int) -> dict[str, float]:
        """Write every metric at `step` (non-finite values are skipped); returns them as floats."""
        host = to_host(metrics)
        self.write(host, step)
        return host

    def write(self, values: Mapping[str, float], step: int) -> None:
        """Write host floats; non-finite values (e.g. explained variance of constant returns) are skipped. All of
        them go into one event (a Summary of many values, as add_scalar writes each alone): ~7x less time per step
        than an add_scalar per tag, which adds up with a logger per seed (rlpg.seeds)."""
        finite = [Summary.Value(tag=k, simple_value=v) for k, v in values.items() if math.isfinite(v)]
        if finite:
            self.writer._get_file_writer().add_summary(Summary(value=finite), step)
        self.csv.add(values, step)

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
        self.csv.flush()

    def close(self) -> None:
        self.writer.close()
        self.csv.flush()
