"""No-grad forward of the policy's tanh MLP with the hidden tanh in place vs. out of place, side by side.

    python scripts/benchmark_policy.py --rows 64 4096 65536 --repeats 31 --threads 1 [--keep-heap false]

The network is rlpg.policies.mlp (Linear -> Tanh -> Linear -> Tanh -> Linear, 64x64 hidden, the default policy and
critic), run twice with the same modules: as the MLP that mlp() returns, whose tanh overwrites each Linear output
("in place"), and as a plain nn.Sequential of the same layers, where Tanh allocates its output ("out of place"). Each
timing is the median over `--repeats` rounds; in each round both variants run `--inner` forwards under
`torch.no_grad()` (the rollout's and evaluation's path), in alternating order, so that drift in the machine's load
hits both alike. Prints microseconds per forward and the ratio in-place / out-of-place (below 1: in place is faster).
`--keep-heap` (default true, as `rlpg train`) applies rlpg.runtime.keep_heap_memory, which makes the out-of-place
variant's extra [B, 64] buffer cheap to allocate.

    python scripts/benchmark_policy.py --tanh --rows 256 4096 65536 --threads 1

`--tanh` instead times the hidden activation alone on [B, 64]: torch.tanh (what rlpg's Tanh runs) against the
identity 2 * sigmoid(2x) - 1 (three in-place passes after one allocating multiply, with tanh's backward from the
saved output as a custom autograd.Function), without a graph and forward + backward, alternating as above. Below 1 in
the ratio column: torch.tanh is faster.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from rlpg.policies import MLP, mlp
from rlpg.runtime import keep_heap_memory


def time_calls(fn: Callable[[], object], inner: int) -> float:
    """Seconds per call of `fn`, over `inner` calls."""
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def alternated_medians(fns: dict[str, Callable[[], object]], inner: int, repeats: int) -> dict[str, float]:
    """Microseconds per call of each of `fns`: one warm-up round, then `repeats` rounds in alternating order; the
    median round of each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        time_calls(fn, inner)
    for r in range(repeats):
        for name in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            times[name].append(time_calls(fns[name], inner))
    return {k: statistics.median(v) * 1e6 for k, v in times.items()}


class SigmoidTanh(torch.autograd.Function):
    """tanh(x) computed as 2 * sigmoid(2x) - 1, backward grad * (1 - y^2) from the saved output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = x.mul(2).sigmoid_().mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def _activation_calls(kind: str, x: torch.Tensor, xg: torch.Tensor, g: torch.Tensor) -> dict:
    if kind == "no grad":
        return {"tanh": lambda: torch.tanh(x), "sigmoid": lambda: SigmoidTanh.apply(x)}
    return {"tanh": lambda: torch.tanh(xg).backward(g), "sigmoid": lambda: SigmoidTanh.apply(xg).backward(g)}


def compare_tanh(rows_list: list[int], repeats: int) -> None:
    print(f"{'rows':>7} {'pass':>16} {'torch.tanh us':>14} {'2 sigmoid(2x)-1 us':>19} {'ratio':>7}")
    for rows in rows_list:
        x = torch.randn(rows, 64) * 3
        xg = x.clone().requires_grad_()
        g = torch.randn_like(x)
        torch.testing.assert_close(SigmoidTanh.apply(x), torch.tanh(x), rtol=0, atol=2.5e-7)
        inner = max(1, 2_000_000 // (rows * 64))
        for kind in ("no grad", "forward+backward"):
            med = alternated_medians(_activation_calls(kind, x, xg, g), inner, repeats)
            ratio = med["tanh"] / med["sigmoid"]
            print(f"{rows:>7} {kind:>16} {med['tanh']:>14.1f} {med['sigmoid']:>19.1f} {ratio:>7.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[64, 4096, 65536], help="batch sizes B")
    p.add_argument("--obs-dim", type=int, default=8, help="input width D")
    p.add_argument("--repeats", type=int, default=31, help="rounds; the median is reported")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    p.add_argument("--keep-heap", type=lambda s: s.lower() == "true", default=True, help="true or false")
    p.add_argument("--tanh", action="store_true", help="time torch.tanh against 2 * sigmoid(2x) - 1 instead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    heap = keep_heap_memory() if args.keep_heap else False
    if args.tanh:
        print(f"torch {torch.__version__}, {args.threads} thread(s), keep_heap_memory {heap}, CPU capability "
              f"{torch.backends.cpu.get_cpu_capability()}, activation on [rows, 64] float32")
        compare_tanh(args.rows, args.repeats)
        return
    torch.manual_seed(0)
    base = mlp(args.obs_dim, (64, 64), 2, "tanh", 0.01)
    nets = {"in place": base.eval(), "out of place": nn.Sequential(*base).eval()}
    assert isinstance(base, MLP) and type(nets["out of place"]) is nn.Sequential
    print(f"torch {torch.__version__}, {args.threads} thread(s), keep_heap_memory {heap}, 64x64 tanh MLP, "
          f"D={args.obs_dim}, no grad")
    print(f"{'rows':>7} {'in place us':>12} {'out of place us':>16} {'ratio':>7}")
    with torch.no_grad():
        for rows in args.rows:
            x = torch.randn(rows, args.obs_dim)
            inner = max(1, 200_000 // rows)
            torch.testing.assert_close(nets["in place"](x), nets["out of place"](x), rtol=0, atol=0)
            med = alternated_medians({k: partial(net, x) for k, net in nets.items()}, inner, args.repeats)
            ratio = med["in place"] / med["out of place"]
            print(f"{rows:>7} {med['in place']:>12.1f} {med['out of place']:>16.1f} {ratio:>7.3f}")


if __name__ == "__main__":
    main()
