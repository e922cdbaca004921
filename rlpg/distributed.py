"""Many processes, one agent: torch.distributed under torchrun (`torchrun --nproc-per-node K -m rlpg train ...`).

Every rank owns `num_envs / world_size` environments and collects its share of the batch; every update is the
single-process update on the global batch, up to float reduction order:

- Minibatches come from one permutation of the global batch, drawn alike on every rank (`minibatches`, a generator
  seeded the same everywhere); each rank keeps the indices it holds. A loss is the rank's sum over its samples
  divided by the *global* minibatch size (`batch_mean`), so the sum of the ranks' gradients is exactly the gradient
  of the global minibatch mean, whatever share of the minibatch each rank happened to hold.
- `step_with_clip` sums the gradients with one flat all-reduce per optimizer step (`reduce_gradients`), before they
  are measured and clipped: clipping uses the global norm and every rank takes the same step.
- Advantage normalisation and explained variance use the global moments (`normalize`, `explained_variance`).
- NPG and TRPO all-reduce the flat policy gradient, every Fisher-vector product and the line search's surrogate and
  KL (rlpg.trust_region), so the conjugate gradient and the line search run identically on every rank.
- Running observation / reward normalisers are merged across ranks after every rollout (rlpg.envs.wrappers).

DistributedDataParallel is not used: it averages gradients over ranks, which is the global mean only when every
rank holds an equal share of each minibatch, and it hooks a module's forward(), while the agents call the policy's
`dist()` and `value()`. One flat all-reduce per step is what DDP's bucketing amounts to for policies this size.

Everything here is a no-op in a single process, where the agents compute exactly what they did before.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from rlpg.advantage import explained_variance as _explained_variance
from rlpg.advantage import normalize as _normalize
from rlpg.errors import ConfigError, RLPGError

T = TypeVar("T")

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""what torchrun sets in each worker's environment"""


@dataclass(frozen=True)
class Context:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    """gloo (CPU tensors) or nccl (CUDA tensors)"""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_ctx: Context | None = None


def active() -> Context | None:
    """The job this process belongs to, or None in a single process."""
    return _ctx


def is_main() -> bool:
    """Whether this process logs and writes checkpoints: rank 0, or a single process."""
    return _ctx is None or _ctx.is_main


def launched_world_size() -> int:
    """WORLD_SIZE as torchrun set it (1 outside torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(value)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={value!r} is not a number; launch rlpg with torchrun or rlpg train "
                          "--nproc K") from None
    if world < 1:
        raise ConfigError(f"WORLD_SIZE={world} must be >= 1; launch rlpg with torchrun or rlpg train --nproc K")
    return world


def setup(device: torch.device, timeout_s: float = 1800.0) -> tuple[Context | None, torch.device]:
    """Join the job torchrun launched (a no-op outside one, or with one process): the process group (NCCL for a CUDA
    device, gloo otherwise) and this rank's device (`cuda:LOCAL_RANK` when the run asked for CUDA)."""
    global _ctx
    world = launched_world_size()
    if world == 1:
        return None, device
    missing = [v for v in LAUNCH_VARS if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun "
                          "--nproc-per-node K -m rlpg train ... or rlpg train --nproc K")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} has no GPU of its own ({torch.cuda.device_count()} here); "
                              "launch at most one rank per GPU (--nproc-per-node) or use --device cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not torch.distributed.is_available():
        raise ConfigError("this torch build has no torch.distributed; install one that has it to train on many "
                          "processes")
    if not torch.distributed.is_initialized():
        kw: dict[str, Any] = {}
        if backend == "nccl" and "device_id" in inspect.signature(torch.distributed.init_process_group).parameters:
            kw["device_id"] = device  # torch >= 2.3: binds the communicator to this rank's GPU at once
        torch.distributed.init_process_group(backend, rank=rank, world_size=world,
                                             timeout=datetime.timedelta(seconds=timeout_s), **kw)
    _ctx = Context(rank, world, local_rank, backend)
    return _ctx, device


def shutdown(together: bool = True) -> None:
    """Leave the job (the process group is destroyed); a no-op in a single process.

    together: every rank is leaving now (the run ended, or every rank stopped at the same update), so they first wait
    for each other; a rank that tears its connections down while another still uses them can abort that one's
    gloo thread ("terminate called without an active exception"). False after an error on this rank, when the
    others may never arrive."""
    global _ctx
    if _ctx is not None and torch.distributed.is_initialized():
        if together:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    _ctx = None


# ------------------------------------------------------------------------------------------------ collectives
def _device_of(t: Tensor) -> torch.device:
    """Where a collective takes `t`: gloo reduces CPU tensors, NCCL this rank's GPU's."""
    if _ctx is None:
        return t.device
    return torch.device("cuda", _ctx.local_rank) if _ctx.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(t: Tensor) -> Tensor:
    """The sum of `t` over all ranks (a new tensor on t's device); `t` itself in a single process."""
    if _ctx is None:
        return t
    buf = t.detach().to(_device_of(t), copy=True)
    torch.distributed.all_reduce(buf)
    return buf.to(t.device)


def all_reduce_max(t: Tensor) -> Tensor:
    """The elementwise maximum of `t` over all ranks; `t` itself in a single process."""
    if _ctx is None:
        return t
    buf = t.detach().to(_device_of(t), copy=True)
    torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.MAX)
    return buf.to(t.device)


def all_gather(t: Tensor) -> Tensor:
    """[world_size, *t.shape]: every rank's `t`, in rank order; t[None] in a single process."""
    if _ctx is None:
        return t[None]
    buf = t.detach().to(_device_of(t)).contiguous()
    out = [torch.empty_like(buf) for _ in range(_ctx.world_size)]
    torch.distributed.all_gather(out, buf)
    return torch.stack(out).to(t.device)


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's picklable `obj` on rank 0 (None on the others); [obj] in a single process."""
    if _ctx is None:
        return [obj]
    out: list[Any] | None = [None] * _ctx.world_size if _ctx.is_main else None
    torch.distributed.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if _ctx is None:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_parameters(tensors: Sequence[Tensor]) -> None:
    """Overwrite `tensors` (parameters, buffers) with rank 0's, in place."""
    if _ctx is None:
        return
    for t in tensors:
        buf = t.detach().to(_device_of(t), copy=True)
        torch.distributed.broadcast(buf, src=0)
        with torch.no_grad():
            t.copy_(buf)


def reduce_gradients(params: Sequence[Tensor], loss: Tensor) -> Tensor:
    """Sum the `.grad` of `params` over all ranks with one flat all-reduce, in place, and return the summed loss
    (each rank's loss is its share of the global mean, see `batch_mean`). A parameter without a gradient counts as
    zeros. In a single process: nothing happens and the loss is returned detached."""
    if _ctx is None:
        return loss.detach()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0].dtype)])
    flat = all_reduce_sum(flat)
    with torch.no_grad():
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
    return flat[-1]


# ------------------------------------------------------------------------------------------ the global batch
def global_size(local_size: int) -> int | None:
    """The global batch size of a batch whose rank-local part has `local_size` rows (every rank holds as many);
    None in a single process."""
    return None if _ctx is None else local_size * _ctx.world_size


def batch_mean(x: Tensor, count: int | None) -> Tensor:
    """x.mean() in a single process (count None); this rank's share of the global mean, x.sum() / count, in a job
    (the ranks' shares add up to the mean over the global batch or minibatch of `count` rows)."""
    return x.mean() if count is None else x.sum() / count


def minibatches(local_size: int, num_minibatches: int, device: torch.device,
                generator: torch.Generator | None = None) -> Iterator[tuple[Tensor | slice, int | None]]:
    """The minibatches of one pass over a batch: (indices into this rank's rows, the global minibatch size or None).

    Without a generator (a single process, the default): one `torch.randperm` of the batch on its device from the
    global RNG, cut into `num_minibatches` equal slices. With one (every
    rank of a job holds an identically seeded generator): a permutation of the *global* batch on the CPU, the same on
    every rank, of which each rank keeps the rows it holds (rank r holds global rows [r * local_size, (r + 1) *
    local_size)), so the global minibatches are those of a single process shuffling with the same generator.
    """
    world, rank = (1, 0) if _ctx is None else (_ctx.world_size, _ctx.rank)
    if generator is None:
        if _ctx is not None:
            raise RuntimeError("minibatches over ranks need a generator seeded alike on every rank")
        perm = torch.randperm(local_size, device=device)
        size = local_size // num_minibatches
        for k in range(num_minibatches):
            yield perm[k * size:(k + 1) * size], None
        return
    total = local_size * world
    size = total // num_minibatches
    perm = torch.randperm(total, generator=generator)
    lo = rank * local_size
    for k in range(num_minibatches):
        chunk = perm[k * size:(k + 1) * size]
        mine = chunk[(chunk >= lo) & (chunk < lo + local_size)] - lo
        yield mine.to(device, non_blocking=True), size


def normalize(x: Tensor, eps: float = 1e-8) -> Tensor:
    """rlpg.advantage.normalize over the global batch: (x - mean) / (std + eps) with the mean and the (Bessel-
    corrected) std of every rank's rows; x as it is when the global batch has fewer than two rows."""
    if _ctx is None:
        return _normalize(x, eps)
    return normalize_each(x, [slice(None)], eps)[0]


def normalize_each(x: Tensor, index_sets: Sequence[Tensor | slice], eps: float = 1e-8) -> list[Tensor]:
    """[normalize(x[idx]) for idx in index_sets], each over its global minibatch under torchrun, where the moments of
    all of them travel in one all-reduce (instead of one per minibatch: the latency of a collective, ~1 ms over gloo
    on a small machine, is what a many-minibatch update pays for)."""
    if _ctx is None:
        return [_normalize(x[idx], eps) for idx in index_sets]
    parts = [x[idx] for idx in index_sets]
    local = torch.stack([torch.stack([torch.tensor(float(p.numel()), dtype=torch.float64, device=x.device),
                                      p.detach().to(torch.float64).sum(), p.detach().to(torch.float64).pow(2).sum()])
                         for p in parts])
    n, s, ss = all_reduce_sum(local).unbind(1)
    mean = (s / n).to(x.dtype)
    std = ((ss - s * s / n).clamp(min=0) / (n - 1).clamp(min=1)).sqrt().to(x.dtype)
    # a global minibatch of one row is left as it is (see rlpg.advantage.normalize); no host sync to decide it
    return [torch.where(n[k] < 2, p, (p - mean[k]) / (std[k] + eps)) for k, p in enumerate(parts)]


def explained_variance(y_pred: Tensor, y_true: Tensor) -> Tensor:
    """rlpg.advantage.explained_variance over the global batch."""
    if _ctx is None:
        return _explained_variance(y_pred, y_true)
    y, d = y_true.detach().to(torch.float64), (y_true - y_pred).detach().to(torch.float64)
    n = torch.tensor(float(y.numel()), dtype=torch.float64, device=y.device)
    n, sy, syy, sd, sdd = all_reduce_sum(torch.stack([n, y.sum(), y.pow(2).sum(), d.sum(), d.pow(2).sum()]))
    var_y = syy / n - (sy / n) ** 2
    var_d = sdd / n - (sd / n) ** 2
    return (1.0 - var_d / var_y).to(y_true.dtype)


# ------------------------------------------------------------------------------------------- job consistency
def check_same_config(resolved: dict[str, Any]) -> None:
    """ConfigError on every rank when the ranks were launched with different settings (a job whose ranks disagree
    would compute a different update on each)."""
    if _ctx is None:
        return
    text = json.dumps(resolved, sort_keys=True, default=str)
    digest = torch.tensor(list(hashlib.sha256(text.encode()).digest()[:8]), dtype=torch.int64)
    digests = all_gather(digest)
    differ = [r for r in range(_ctx.world_size) if not torch.equal(digests[r], digests[0])]
    if not differ:
        return
    texts = gather_objects(text)  # every rank takes part; rank 0 gets them all
    detail = broadcast_object(_first_difference([json.loads(t) for t in texts], differ[0]) if texts else "")
    raise ConfigError(f"rank {differ[0]} was launched with other settings than rank 0 ({detail}); launch every rank "
                      "with the same arguments")


def _first_difference(configs: list[dict[str, Any]], rank: int) -> str:
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(configs[0]), flat(configs[rank])
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key.split('.')[-1]}: {a.get(key)!r} on rank 0, {b.get(key)!r} on rank {rank}"
    return "their settings differ"


def on_main(fn: Callable[[], T]) -> T:
    """fn() on rank 0 alone (creating the run directory, ...), its result on every rank. An RLPGError it raises is
    raised on every rank, so the job stops with rank 0's one-line error instead of waiting for it."""
    if _ctx is None:
        return fn()
    outcome: tuple[str, Any] = ("ok", None)
    if _ctx.is_main:
        try:
            outcome = ("ok", fn())
        except RLPGError as e:
            outcome = ("error", e)
            broadcast_object(outcome)
            raise
    kind, value = broadcast_object(outcome)
    if kind == "error":
        raise value
    return value


def split_envs(num_envs: int) -> int:
    """The environments each rank steps: num_envs / world_size, which must be a whole number."""
    if _ctx is None:
        return num_envs
    if num_envs % _ctx.world_size:
        raise ConfigError(f"--num-envs {num_envs} is the global number of environments and must split evenly over "
                          f"the {_ctx.world_size} ranks; use a multiple of {_ctx.world_size}")
    return num_envs // _ctx.world_size


def parameter_checksum(tensors: Sequence[Tensor]) -> Tensor:
    """A float64 fingerprint of `tensors` (sums of the values and of the values weighted by position), equal on two
    ranks when they hold the same parameters."""
    total = torch.zeros(2, dtype=torch.float64, device=tensors[0].device)
    for t in tensors:
        v = t.detach().reshape(-1).to(torch.float64)
        total[0] += v.sum()
        total[1] += (v * torch.arange(1, v.numel() + 1, dtype=torch.float64, device=v.device)).sum()
    return total
