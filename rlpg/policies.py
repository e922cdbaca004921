"""Actor-critic policies whose heads return `torch.distributions`.

The actor and the critic are separate networks (`.actor`, `.critic`) so that trust-region methods can
take the actor's parameters alone, and so that freezing one does not touch the other.

Supported spaces: observations `Box` (any shape, flattened; uint8 / bool images through a convolutional
encoder, see rlpg.encoders) and `Discrete` (one-hot); actions
`Discrete` (Categorical), `Box` of rank 1 (diagonal Gaussian with a state-independent log-std) and
`MultiDiscrete` (independent Categoricals).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal, constraints, kl
from torch.distributions.utils import lazy_property
from torch.nn.modules import module as _module_globals

from rlpg.encoders import ImageEncoder, image_shape, to_float
from rlpg.errors import ConfigError, UnsupportedSpaceError

# A log-std that drifts far below zero makes the Gaussian a spike: log-probs of the taken actions blow
# up, importance ratios explode and the policy cannot explore back (the "log-std collapse" seen in
# many PPO/TRPO implementations on MuJoCo). Clamping keeps std in [exp(-5), exp(2)] ~ [0.0067, 7.4], with a
# gradient that still passes where it would bring the parameter back into range (see clamp_passing_inward):
# a plain clamp has zero gradient outside the range, so once the raw parameter crossed a bound the guard
# against collapse made the collapse permanent.
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class _ClampPassingInward(torch.autograd.Function):
    """clamp(x, lo, hi) whose gradient is the identity's inside [lo, hi], and outside it wherever a descent step
    (x -= lr * grad) moves x back towards the range; only gradients pushing x further out are dropped. The
    backward is elementwise and differentiable in `grad`, so double backprop (Fisher-vector products) works."""

    @staticmethod
    def forward(x: Tensor, lo: float, hi: float) -> Tensor:
        return x.clamp(lo, hi)

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: Tensor) -> None:
        x, ctx.lo, ctx.hi = inputs  # type: ignore[attr-defined]
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        lo, hi = ctx.lo, ctx.hi  # type: ignore[attr-defined]
        keep = ((x >= lo) & (x <= hi)) | ((x < lo) & (grad < 0)) | ((x > hi) & (grad > 0))
        return grad * keep, None, None


def clamp_passing_inward(x: Tensor, lo: float, hi: float) -> Tensor:
    """x clamped to [lo, hi] in the forward pass; see _ClampPassingInward for the gradient."""
    if _tracing() or not (torch.is_grad_enabled() and x.requires_grad):
        return x.clamp(lo, hi)
    if x.device.type == "cpu":
        # inside [lo, hi] plain clamp has the same value and gradient, at a third of the cost of a Python autograd
        # Function (~30 vs ~90 us forward + backward, a PPO step's 5%); reading the range syncs nothing on the CPU
        low, high = x.detach().aminmax()
        if lo <= low.item() and high.item() <= hi:
            return x.clamp(lo, hi)
    return _ClampPassingInward.apply(x, lo, hi)


def _tracing() -> bool:
    """True while torch.compile or torch.export (strict or not) traces a model."""
    compiler = torch.compiler
    return bool(getattr(compiler, "is_compiling", bool)() or getattr(compiler, "is_exporting", bool)())


def tanh(x: Tensor, inplace: bool = False) -> Tensor:
    """The hidden-layer tanh: torch.tanh, written into `x` itself when `inplace` and no graph is recorded
    (rollouts, evaluation), which saves allocating a [B, H] buffer per layer. Only a caller that created `x` itself
    and holds the only reference may ask for that (see MLP).

    It is torch's own kernel on every device. The identity 2 * sigmoid(2x) - 1, which rlpg used on the CPU when an AMD
    EPYC host measured torch's tanh ~6x slower than its sigmoid, is the slower one on an Intel Xeon (AVX-512, torch
    2.13): torch.tanh takes 0.24-0.44x its time without a graph and 0.54-0.73x forward + backward, 256 to 65,536
    rows, 1 and 2 threads. `python scripts/benchmark_policy.py --tanh` measures both on the CPU at hand."""
    if inplace and not (torch.is_grad_enabled() and x.requires_grad) and not _tracing():
        return x.tanh_()
    return torch.tanh(x)


class Tanh(nn.Module):
    """`tanh` as a module. It never writes into its input, wherever it is placed (a residual, a LayerNorm, a
    hook keeping the pre-activation all stay correct); MLP applies it in place where that is provably safe."""

    def forward(self, x: Tensor) -> Tensor:
        return tanh(x)


class MLP(nn.Sequential):
    """mlp()'s Linear / activation stack (an nn.Sequential: same parameter names and state_dict).

    Where no graph is recorded, a Tanh that directly follows a Linear overwrites that Linear's output: the tensor was
    created in this loop and nothing else holds it, which saves allocating a [B, H] buffer per layer (measurably
    faster for large batches: scripts/benchmark_policy.py). When a forward hook on either module could see the
    tensor, the Tanh runs normally (out of place). A Tanh used anywhere else is always out of place, so no
    architecture built from these modules can have its pre-activations overwritten.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not _hooks_or_tracing(self):
            return self._direct(x)
        m = _module_globals
        hooked = bool(m._global_forward_hooks or m._global_forward_pre_hooks)  # a global hook sees every module
        prev: nn.Module | None = None
        for layer in self:
            graph = torch.is_grad_enabled() and x.requires_grad
            if (isinstance(layer, Tanh) and isinstance(prev, nn.Linear) and not graph and not hooked
                    and not (prev._forward_hooks or layer._forward_hooks or layer._forward_pre_hooks)):
                x = tanh(x, inplace=True)  # x: the Linear output just computed, referenced only here
            else:
                x = layer(x)
            prev = layer
        return x

    def _direct(self, x: Tensor) -> Tensor:
        """forward with no hook to run: nn.Linear's and Tanh's own functions called directly rather than through
        Module.__call__ (the same kernels; ~1.5 us less per layer, a few % of a small-batch PPO iteration)."""
        after_linear = False
        for layer in self._modules.values():
            kind = type(layer)
            if kind is nn.Linear:
                x = nn.functional.linear(x, layer.weight, layer.bias)
            elif kind is Tanh:  # in place only on the output of the Linear just above (created here, held only here)
                x = tanh(x, inplace=after_linear)
            else:
                x = layer(x)
            after_linear = kind is nn.Linear
        return x


def _hooks_or_tracing(seq: nn.Sequential) -> bool:
    """Whether calling `seq`'s layers directly could skip something Module.__call__ would do: a hook on one of them
    (or a global one), or a tracer (TorchScript, torch.compile / export) that records module calls."""
    m = _module_globals
    if m._global_forward_hooks or m._global_forward_pre_hooks or m._global_backward_hooks \
            or m._global_backward_pre_hooks:
        return True
    for layer in seq._modules.values():
        if layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks or layer._backward_pre_hooks:
            return True
    return torch._C._get_tracing_state() is not None or _tracing()  # TorchScript's tracer; torch.compile / export


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}

_EMPTY = torch.Size()

SUPPORTED = "observations: Box, Discrete; actions: Discrete, Box (1-D), MultiDiscrete"


class GumbelCategorical(Categorical):
    """Categorical whose `sample()` uses the Gumbel-max trick, argmax(logits - log E) with E ~ Exp(1):
    exact, and on small CPU batches far cheaper than `torch.multinomial`, which Categorical.sample calls."""

    def sample(self, sample_shape: torch.Size = _EMPTY) -> Tensor:
        logits = self.logits.expand(torch.Size(sample_shape) + self.logits.shape) if sample_shape else self.logits
        with torch.no_grad():
            return (logits - torch.empty_like(logits).exponential_().log_()).argmax(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        """Categorical.log_prob; one action per row (the actions of a batch) is gathered at once, without broadcasting
        the actions against the logits first (two ops fewer forward and backward, the same numbers)."""
        if value.shape != self._batch_shape or self._validate_args:
            return super().log_prob(value)
        return self.logits.gather(-1, value.long().unsqueeze(-1)).squeeze(-1)

    @lazy_property
    def probs(self) -> Tensor:
        """exp of the normalised logits: Categorical takes softmax(logits), whose CPU kernel works row by row and costs
        ~25 ns per row with 2 actions (100 us for 16 seeds x 256 rows, against 4 us for this exp); equal up to
        rounding. entropy() and the categorical KL of NPG/TRPO read it."""
        return self.logits.exp()


def sample_with_log_prob(dist: Distribution) -> tuple[Tensor, Tensor]:
    """An action drawn from `dist` and its log-probability (a GumbelCategorical's gathered at once, see its
    log_prob)."""
    action = dist.sample()
    return action, dist.log_prob(action)


class MultiCategorical(Distribution):
    """Independent Categoricals over K action dimensions. logits: [B, sum(nvec)] -> actions [B, K]."""

    arg_constraints: dict = {}
    has_enumerate_support = False

    def __init__(self, logits: Tensor, nvec: Sequence[int], validate_args: bool | None = False) -> None:
        self.nvec = list(nvec)
        self.dists = [
            GumbelCategorical(logits=part, validate_args=False) for part in torch.split(logits, self.nvec, dim=-1)
        ]
        super().__init__(logits.shape[:-1], torch.Size([len(self.nvec)]), validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:  # pragma: no cover - only for Distribution's API
        return constraints.integer_interval(0, max(self.nvec) - 1)

    @property
    def logits(self) -> Tensor:
        return torch.cat([d.logits for d in self.dists], dim=-1)

    def sample(self, sample_shape: torch.Size = _EMPTY) -> Tensor:
        return torch.stack([d.sample(sample_shape) for d in self.dists], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        return sum(d.log_prob(value[..., i]) for i, d in enumerate(self.dists))  # type: ignore[return-value]

    def entropy(self) -> Tensor:
        return sum(d.entropy() for d in self.dists)  # type: ignore[return-value]

    @property
    def mode(self) -> Tensor:
        return torch.stack([d.logits.argmax(-1) for d in self.dists], dim=-1)


@kl.register_kl(MultiCategorical, MultiCategorical)
def _kl_multicategorical(p: MultiCategorical, q: MultiCategorical) -> Tensor:
    return sum(kl.kl_divergence(a, b) for a, b in zip(p.dists, q.dists, strict=True))  # type: ignore[return-value]


def dist_tensors(dist: Distribution) -> list[Tensor]:
    """The tensors `dist` is built from, in `with_tensors`' order: the (normalised) logits of a Categorical or
    MultiCategorical, the mean and the standard deviation of a diagonal Gaussian."""
    if isinstance(dist, Categorical | MultiCategorical):
        return [dist.logits]
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        return [dist.base_dist.loc, dist.base_dist.scale]
    raise TypeError(f"rlpg's trust-region code does not know {type(dist).__name__}")


def with_tensors(dist: Distribution, tensors: Sequence[Tensor]) -> Distribution:
    """A distribution of `dist`'s kind built from `tensors` (as `dist_tensors` returns them)."""
    if isinstance(dist, Categorical):
        return GumbelCategorical(logits=tensors[0], validate_args=False)
    if isinstance(dist, MultiCategorical):
        return MultiCategorical(tensors[0], dist.nvec)
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        return Independent(Normal(tensors[0], tensors[1], validate_args=False), 1)
    raise TypeError(f"rlpg's trust-region code does not know {type(dist).__name__}")


def detached(dist: Distribution) -> Distribution:
    """A copy of `dist` with its parameters detached: the fixed 'old' policy in KL(old || new)."""
    return with_tensors(dist, [t.detach() for t in dist_tensors(dist)])


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str, out_gain: float) -> MLP:
    """Linear layers with orthogonal init (gain sqrt(2) inside, `out_gain` on the last layer, zero bias),
    the initialisation of the PPO implementation-details study (Engstrom et al. 2020, Huang et al. 2022)."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [_ortho(nn.Linear(a, b), math.sqrt(2)), ACTIVATIONS[activation]()]
    layers.append(_ortho(nn.Linear(dims[-1], out_dim), out_gain))
    return MLP(*layers)


def _ortho(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def obs_dim(space: gym.Space) -> int:
    """Input size of the MLP for an observation space (flattened Box, one-hot Discrete)."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise UnsupportedSpaceError(f"unsupported observation space {space}; rlpg supports {SUPPORTED}")


def head(encoder: ImageEncoder | None, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str,
         out_gain: float) -> nn.Module:
    """An MLP on flat inputs, or a linear layer on an image encoder's features (the encoder may be shared)."""
    if encoder is None:
        return mlp(in_dim, hidden, out_dim, activation, out_gain)
    return nn.Sequential(encoder, mlp(encoder.out_dim, (), out_dim, activation, out_gain))


class Actor(nn.Module):
    """obs [B, D] (or images [B, C, H, W] with an encoder) -> action distribution with batch shape [B]."""

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        hidden: Sequence[int],
        activation: str,
        log_std_init: float = 0.0,
        encoder: ImageEncoder | None = None,
    ) -> None:
        super().__init__()
        d = obs_dim(obs_space)
        self.action_space = action_space
        if isinstance(action_space, gym.spaces.Discrete):
            self.net = head(encoder, d, hidden, int(action_space.n), activation, 0.01)
        elif isinstance(action_space, gym.spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
            self.nvec = [int(n) for n in action_space.nvec]
            self.net = head(encoder, d, hidden, sum(self.nvec), activation, 0.01)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            a = action_space.shape[0]
            self.net = head(encoder, d, hidden, a, activation, 0.01)
            self.log_std = nn.Parameter(torch.full((a,), float(log_std_init)))
        else:
            raise UnsupportedSpaceError(f"unsupported action space {action_space}; rlpg supports {SUPPORTED}")

    def forward(self, obs: Tensor) -> Distribution:
        out = self.net(obs)
        if isinstance(self.action_space, gym.spaces.Discrete):
            return GumbelCategorical(logits=out, validate_args=False)
        if isinstance(self.action_space, gym.spaces.MultiDiscrete):
            return MultiCategorical(out, self.nvec)
        log_std = clamp_passing_inward(self.log_std, LOG_STD_MIN, LOG_STD_MAX)  # see LOG_STD_MIN
        return Independent(Normal(out, log_std.exp().expand_as(out), validate_args=False), 1)


class ActorCritic(nn.Module):
    """An actor and a critic. Observations are flattened (Box) or one-hot encoded (Discrete) into separate MLPs;
    image observations (rlpg.encoders.image_shape) go through a convolutional encoder with a linear head each, one
    encoder per network, or one shared by both with `shared_encoder` (the convention of PPO on Atari)."""

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        shared_encoder: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.obs_space, self.action_space = obs_space, action_space
        self.image = image_shape(obs_space)
        if shared_encoder and self.image is None:
            raise ConfigError(f"--shared-encoder applies to image observations; {obs_space} is not one")
        actor_encoder = ImageEncoder(self.image) if self.image else None
        critic_encoder = actor_encoder if shared_encoder else ImageEncoder(self.image) if self.image else None
        self.shared_encoder = shared_encoder
        self.actor = Actor(obs_space, action_space, hidden_sizes, activation, log_std_init, actor_encoder)
        self.critic = head(critic_encoder, obs_dim(obs_space), hidden_sizes, 1, activation, 1.0)

    def preprocess(self, obs: Tensor) -> Tensor:
        """[B, *obs_shape] -> [B, D] (images: [B, C, H, W] in [0, 1]) in the parameters' dtype (float32 unless the
        policy was cast)."""
        dtype = self.actor.net[-1][-1].weight.dtype if self.image else self.critic[0].weight.dtype
        if self.image:
            return to_float(obs, self.obs_space, dtype)
        if isinstance(self.obs_space, gym.spaces.Discrete):
            index = obs.long().reshape(-1) - int(self.obs_space.start)  # Discrete(n, start) holds start .. start+n-1
            return nn.functional.one_hot(index, int(self.obs_space.n)).to(dtype)
        flat = obs if obs.dim() == 2 else obs.reshape(obs.shape[0], -1)
        return flat if flat.dtype == dtype else flat.to(dtype)  # (skipping no-op calls: ~3 us a rollout step)

    def dist(self, obs: Tensor) -> Distribution:
        return self.actor(self.preprocess(obs))

    def value(self, obs: Tensor) -> Tensor:
        """V(obs): [B]."""
        return self.critic(self.preprocess(obs)).squeeze(-1)

    def act(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Sample (or take the mode of) the policy: action [B, ...], log-prob [B], value [B]."""
        d = self.dist(obs)
        action = d.mode if deterministic else d.sample()
        return action, d.log_prob(action), self.value(obs)

    def forward(self, obs: Tensor) -> Tensor:
        """The deterministic action, the graph exported to ONNX."""
        return self.dist(obs).mode

    def actor_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The actor's trainable (name, parameter) pairs, names as in `named_parameters()`."""
        return [(n, p) for n, p in self.actor.named_parameters(prefix="actor") if p.requires_grad]

    def critic_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.critic.named_parameters(prefix="critic") if p.requires_grad]


def freeze(module: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Set `requires_grad=False` on every parameter whose name starts with one of `prefixes` (to
    fine-tune a pretrained policy). Returns the frozen names; an unmatched prefix is an error."""
    names = [n for n, _ in module.named_parameters()]
    frozen: list[str] = []
    for prefix in prefixes:
        hit = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        if not hit:
            raise ConfigError(f"--freeze {prefix!r} matches no parameter; names are: {', '.join(names)}")
        frozen += hit
    for n, p in module.named_parameters():
        if n in frozen:
            p.requires_grad_(False)
    return sorted(set(frozen))
