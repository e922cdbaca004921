"""The batch operations an agent's update is written in, for one run (`SINGLE`) or for K seeds at once (`Seeds`).

An update says what it computes once: "cut the batch into minibatches", "normalise each minibatch's advantages",
"the mean over the minibatch", "take a clipped gradient step". `SINGLE` does these as a single run (and a
torchrun job) always has: rlpg.distributed's functions and rlpg.optim.step_with_clip, unchanged. `Seeds` does each
per seed on a batch whose tensors carry a leading seed dimension [K, B, ...] (rlpg.stacked): each seed's own
permutation from its own generator, its own moments, a mean over its own rows ([K] losses, summed for backward, so
each seed's gradient is its own), its own gradient norm and clip. An agent written against an axis trains one run
or K seeds with the same lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from rlpg import distributed
from rlpg import trust_region as tr
from rlpg.advantage import explained_variance as _explained_variance
from rlpg.optim import NamedParams, grad_norms, seed_grad_norms, step_with_clip
from rlpg.types import Batch


class Single:
    """One run (or one torchrun job): the batch is [B, ...]."""

    k: int | None = None

    def size(self, batch: Batch) -> int:
        return len(batch)

    def minibatches(self, size: int, num_minibatches: int, device: torch.device, shuffle: torch.Generator | None,
                    active: Tensor | None = None) -> Iterator[tuple[Tensor | slice, int | None]]:
        return distributed.minibatches(size, num_minibatches, device, shuffle)

    def whole(self, size: int) -> tuple[slice, int | None]:
        """The whole batch as one minibatch: (index, the global size under torchrun or None)."""
        return slice(None), distributed.global_size(size)

    def index(self, batch: Batch, idx: Tensor | slice) -> Batch:
        return batch.index(idx)

    def take(self, x: Tensor, idx: Tensor | slice) -> Tensor:
        """The rows of one batch field at a minibatch's indices."""
        return x[idx]

    def normalize(self, x: Tensor) -> Tensor:
        return distributed.normalize(x)

    def normalize_each(self, x: Tensor, index_sets: Sequence[Tensor | slice]) -> list[Tensor]:
        return distributed.normalize_each(x, index_sets)

    def mean(self, x: Tensor, count: int | None) -> Tensor:
        return distributed.batch_mean(x, count)

    def step(self, optimizer: torch.optim.Optimizer, loss: Tensor, params: NamedParams, max_grad_norm: float | None,
             norm_type: float, clip_value: float | None) -> tuple[Tensor, Tensor]:
        return step_with_clip(optimizer, loss, params, max_grad_norm, norm_type, clip_value)

    def explained_variance(self, values: Tensor, returns: Tensor) -> Tensor:
        return distributed.explained_variance(values, returns)

    def reduce_sum(self, x: Tensor) -> Tensor:
        return distributed.all_reduce_sum(x)

    def global_count(self, size: int) -> int | None:
        """The rows a batch mean divides by under torchrun (None: the local mean)."""
        return distributed.global_size(size)

    def grad_norms(self, grads: Sequence[Tensor], norm_type: float) -> tuple[Tensor, Tensor]:
        return grad_norms(grads, norm_type)

    def vector_norm(self, x: Tensor) -> Tensor:
        return torch.linalg.vector_norm(x)

    # -- the trust region (rlpg.trust_region): flat vectors [P]
    def flat_params(self, params: Sequence[Tensor]) -> Tensor:
        return tr.flat_params(params)

    def set_flat_params(self, params: Sequence[Tensor], flat: Tensor) -> None:
        tr.set_flat_params(params, flat)

    def split_flat(self, flat: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
        return tr.split_flat(flat, params)

    def flat_grad(self, output: Tensor, params: Sequence[Tensor], retain_graph: bool = False) -> Tensor:
        return tr.flat_grad(output, params, retain_graph=retain_graph)

    def fisher_vector_product(self, policy: nn.Module, obs: Tensor, params: Sequence[Tensor], damping: float,
                              dist: Distribution) -> tr.Avp:
        return tr.fisher_vector_product(policy, obs, params, damping, dist=dist)

    def natural_step(self, fvp: tr.Avp, g: Tensor, max_kl: float, cg_iters: int,
                     residual_tol: float) -> tr.NaturalStep:
        return tr.natural_gradient_direction(fvp, g, max_kl, cg_iters, residual_tol)

    def evaluator(self, policy: nn.Module, params: Sequence[Tensor], obs: Tensor, old: Distribution,
                  objective: Callable[[Distribution], Tensor]) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        return tr.policy_evaluator(policy, params, obs, old, objective)

    def line_search(self, f_eval: Callable[[Tensor], tuple[Tensor, Tensor]], x0: Tensor, step: tr.NaturalStep,
                    max_kl: float, max_backtracks: int, backtrack_coef: float, accept_ratio: float,
                    f0: Tensor) -> tr.LineSearchResult:
        """TRPO's line search along `step` (none when the step was skipped: x0 kept, 0 candidates tried)."""
        if step.skipped:
            zero = torch.zeros((), device=x0.device)
            return tr.LineSearchResult(False, 0, x0, zero, zero)
        return tr.line_search(f_eval, x0, step.fullstep, step.expected_improve, max_kl, max_backtracks,
                              backtrack_coef, accept_ratio, f0=f0)


SINGLE = Single()


class Seeds(Single):
    """K seeds: the batch is [K, B, ...], seed k's rows in [k]; `generators[k]` is seed k's random stream (the one a
    single run of that seed draws from the global generator)."""

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        self.generators = list(generators)
        self.k = len(self.generators)

    def size(self, batch: Batch) -> int:
        return batch.obs.shape[1]

    def minibatches(self, size: int, num_minibatches: int, device: torch.device,
                    shuffle: torch.Generator | None, active: Tensor | None = None) -> Iterator[tuple[Tensor, None]]:
        # seed k's permutation is what `torch.randperm(size)` gives a single run of that seed; a seed that no longer
        # steps (`active` False: its epochs stopped early) draws nothing, as its single run draws nothing
        on = [True] * self.k if active is None else active.tolist()
        perm = torch.stack([torch.randperm(size, generator=g) if a else torch.arange(size)
                            for g, a in zip(self.generators, on, strict=True)])
        # as rows of the flattened [K * size] batch (what `take` gathers), offset once here rather than per field
        rows = (perm + torch.arange(self.k).unsqueeze(1) * size).to(device)
        part = size // num_minibatches
        for i in range(num_minibatches):
            yield rows[:, i * part:(i + 1) * part].contiguous(), None  # contiguous: `take` flattens it per field

    def whole(self, size: int) -> tuple[slice, None]:
        return slice(None), None

    def index(self, batch: Batch, idx: Tensor | slice) -> Batch:
        return Batch(*(self.take(getattr(batch, f), idx) for f in _FIELDS))

    def take(self, x: Tensor, idx: Tensor | slice) -> Tensor:
        """x [K, B, ...] at a minibatch of `minibatches` (idx [K, M]: rows of the flattened [K * B] batch, seed k's
        among k*B .. k*B+B-1) or a slice of every seed's rows: [K, M, ...]."""
        if isinstance(idx, slice):
            return x[:, idx]
        k, b = x.shape[0], x.shape[1]
        # one index_select on the flattened [K * B] rows: ~2x faster than x[arange(K)[:, None], idx] on the CPU
        return x.reshape(k * b, *x.shape[2:]).index_select(0, idx.reshape(-1)).reshape(k, idx.shape[1], *x.shape[2:])

    def normalize(self, x: Tensor) -> Tensor:
        """rlpg.advantage.normalize of each seed's rows (a seed with one row is left as it is)."""
        if x.shape[1] < 2:
            return x
        return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-8)

    def normalize_each(self, x: Tensor, index_sets: Sequence[Tensor | slice]) -> list[Tensor]:
        return [self.normalize(self.take(x, idx)) for idx in index_sets]

    def mean(self, x: Tensor, count: int | None) -> Tensor:
        return x.reshape(x.shape[0], -1).mean(1)

    def step(self, optimizer: torch.optim.Optimizer, loss: Tensor, params: NamedParams, max_grad_norm: float | None,
             norm_type: float, clip_value: float | None) -> tuple[Tensor, Tensor]:
        """step_with_clip per seed: losses [K]; returns (total [K], per [K, P])."""
        return step_with_clip(optimizer, loss, params, max_grad_norm, norm_type, clip_value, per_seed=True)

    def explained_variance(self, values: Tensor, returns: Tensor) -> Tensor:
        return torch.stack([_explained_variance(values[k], returns[k]) for k in range(values.shape[0])])

    def reduce_sum(self, x: Tensor) -> Tensor:
        return x

    def global_count(self, size: int) -> None:
        return None

    def grad_norms(self, grads: Sequence[Tensor], norm_type: float) -> tuple[Tensor, Tensor]:
        return seed_grad_norms(grads, norm_type)

    def vector_norm(self, x: Tensor) -> Tensor:
        return torch.linalg.vector_norm(x, dim=-1)

    # -- the trust region, per seed: flat vectors [K, P], scalars [K]
    def flat_params(self, params: Sequence[Tensor]) -> Tensor:
        return tr.flat_params_seeds(params)

    def set_flat_params(self, params: Sequence[Tensor], flat: Tensor) -> None:
        tr.set_flat_params_seeds(params, flat)

    def split_flat(self, flat: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
        return tr.split_flat_seeds(flat, params)

    def flat_grad(self, output: Tensor, params: Sequence[Tensor], retain_graph: bool = False) -> Tensor:
        return tr.flat_grad_seeds(output, params, retain_graph=retain_graph)

    def fisher_vector_product(self, policy: nn.Module, obs: Tensor, params: Sequence[Tensor], damping: float,
                              dist: Distribution) -> tr.Avp:
        return tr.fisher_vector_product_seeds(policy, obs, params, damping, dist=dist)

    def natural_step(self, fvp: tr.Avp, g: Tensor, max_kl: float, cg_iters: int,
                     residual_tol: float) -> tr.NaturalStep:
        return tr.natural_gradient_direction_seeds(fvp, g, max_kl, cg_iters, residual_tol)

    def evaluator(self, policy: nn.Module, params: Sequence[Tensor], obs: Tensor, old: Distribution,
                  objective: Callable[[Distribution], Tensor]) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        return tr.policy_evaluator_seeds(policy, params, obs, old, objective)

    def line_search(self, f_eval: Callable[[Tensor], tuple[Tensor, Tensor]], x0: Tensor, step: tr.NaturalStep,
                    max_kl: float, max_backtracks: int, backtrack_coef: float, accept_ratio: float,
                    f0: Tensor) -> tr.LineSearchResult:
        return tr.line_search_seeds(f_eval, x0, step.fullstep, step.expected_improve, max_kl, max_backtracks,
                                    backtrack_coef, accept_ratio, f0, torch.as_tensor(step.skipped))


_FIELDS = ("obs", "actions", "logp", "values", "advantages", "returns")
