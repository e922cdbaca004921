"""K independent actor-critics as one computation: every parameter stacked along a leading seed dimension.

    policies = [ActorCritic(obs_space, act_space) for each seed]      # built as the single runs build them
    stacked = StackedActorCritic(policies)                            # parameters [K, ...], names as a single run's
    d = stacked.dist(obs)                                             # obs [K, N, ...] -> batch shape [K, N]
    action = sample(d, generators)                                    # seed k's rows from generator k
    stacked.policy(k)                                                 # seed k as an ordinary ActorCritic

Seed k's parameters are `p[k]` of each stacked parameter `p`, under the single run's name (`actor.net.0.weight`),
so seed k's weights load into an ActorCritic and back unchanged. A linear layer is one batched matrix product
(`torch.baddbmm` over [K, B, in] x [K, in, out]) instead of K small ones: one kernel and one autograd node per layer
whatever K, which is where K seeds beat K processes on small networks (scripts/benchmark_seeds.py measures it against
`torch.func.vmap` over `functional_call`). The seeds never mix: the loss of the K-seed batch is the sum of the seeds'
losses, so each seed's gradient is its own gradient, and the elementwise optimizers (Adam, RMSprop, SGD) over the
stacked parameters are exactly K independent optimizers. What is not elementwise is taken per seed here: gradient
norms and clipping (`seed_grad_norms`, `clip_per_seed`) and sampling (`sample`, one generator per seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from rlpg.errors import ConfigError
from rlpg.policies import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    MLP,
    ActorCritic,
    GumbelCategorical,
    MultiCategorical,
    Tanh,
    clamp_passing_inward,
)


class StackedLinear(nn.Module):
    """K linear layers: x [K, B, in] -> [K, B, out], weight [K, out, in] and bias [K, out] (nn.Linear's layout per
    seed)."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]).clone())
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]).clone())

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


def stack_mlp(mlps: Sequence[nn.Sequential]) -> nn.Sequential:
    """One stacked network from K MLPs of the same architecture: Linear layers become StackedLinear at the same
    index (so parameter names match), activations are shared (they hold no parameters)."""
    first = mlps[0]
    layers: list[nn.Module] = []
    for i, layer in enumerate(first):
        if isinstance(layer, nn.Linear):
            layers.append(StackedLinear([m[i] for m in mlps]))
        elif isinstance(layer, Tanh | nn.ReLU | nn.ELU | nn.GELU):
            layers.append(layer)
        else:
            raise ConfigError(f"many seeds in one process take MLP policies; {type(layer).__name__} is not supported")
    return MLP(*layers)


class StackedActorCritic(nn.Module):
    """K ActorCritics of one architecture (flat observations, MLPs) with parameters stacked along dimension 0."""

    def __init__(self, policies: Sequence[ActorCritic]) -> None:
        super().__init__()
        if not policies:
            raise ConfigError("StackedActorCritic needs at least one policy")
        first = policies[0]
        if first.image is not None:
            raise ConfigError("many seeds in one process take flat observations (MLP policies); image observations "
                              "need one process per seed")
        shapes = [[tuple(p.shape) for p in policy.parameters()] for policy in policies]
        if any(s != shapes[0] for s in shapes):
            raise ConfigError("the stacked policies must share one architecture")
        self.k = len(policies)
        self.obs_space, self.action_space = first.obs_space, first.action_space
        self.image = None
        # builds seed k's ActorCritic in policy(k); kept out of the module tree (its parameters are not this one's)
        self._template: tuple[ActorCritic] = (first,)
        self.actor = nn.Module()
        self.actor.net = stack_mlp([p.actor.net for p in policies])
        if hasattr(first.actor, "log_std"):
            self.actor.log_std = nn.Parameter(torch.stack([p.actor.log_std.detach() for p in policies]).clone())
        self.critic = stack_mlp([p.critic for p in policies])
        self.nvec = getattr(first.actor, "nvec", None)
        for name, p in self.named_parameters():  # frozen parameters stay frozen (fine-tuning K seeds at once)
            p.requires_grad_(dict(first.named_parameters())[name].requires_grad)

    def preprocess(self, obs: Tensor) -> Tensor:
        """[K, N, *obs_shape] -> [K, N, D] in the parameters' dtype (one-hot for Discrete observations)."""
        dtype = self.critic[0].weight.dtype
        if isinstance(self.obs_space, gym.spaces.Discrete):
            index = obs.long().reshape(obs.shape[0], -1) - int(self.obs_space.start)
            return nn.functional.one_hot(index, int(self.obs_space.n)).to(dtype)
        return obs.reshape(obs.shape[0], obs.shape[1], -1).to(dtype)

    def dist(self, obs: Tensor) -> Distribution:
        """The K policies' action distributions, batch shape [K, N]."""
        out = self.actor.net(self.preprocess(obs))
        if isinstance(self.action_space, gym.spaces.Discrete):
            return GumbelCategorical(logits=out, validate_args=False)
        if isinstance(self.action_space, gym.spaces.MultiDiscrete):
            return MultiCategorical(out, self.nvec)
        log_std = clamp_passing_inward(self.actor.log_std, LOG_STD_MIN, LOG_STD_MAX)  # [K, A]; see LOG_STD_MIN
        return Independent(Normal(out, log_std.exp().unsqueeze(1).expand_as(out), validate_args=False), 1)

    def value(self, obs: Tensor) -> Tensor:
        """V(obs): [K, N]."""
        return self.critic(self.preprocess(obs)).squeeze(-1)

    def policy(self, k: int) -> ActorCritic:
        """Seed k as an ordinary ActorCritic (a copy of its weights), as a single run of that seed holds it."""
        import copy

        single = copy.deepcopy(self._template[0])
        single.load_state_dict(self.state_dict_of(k))
        return single

    def state_dict_of(self, k: int) -> dict[str, Tensor]:
        """Seed k's state_dict in the single-run format (names and shapes of an ActorCritic's)."""
        return {name: p.detach()[k].clone() for name, p in self.named_parameters()}

    def load_seed(self, k: int, state: dict[str, Tensor]) -> None:
        """Load a single run's ActorCritic state_dict into seed k."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                p[k].copy_(state[name])


def sample(dist: Distribution, generators: Sequence[torch.Generator]) -> Tensor:
    """A sample of each seed's distribution (batch shape [K, N]) from that seed's generator, drawn as the single
    run's `dist.sample()` draws from the global generator: seed k's rows take the same numbers in the same order, so
    a batched run and K single runs seeded alike sample the same actions."""
    with torch.no_grad():
        if isinstance(dist, GumbelCategorical):
            logits = dist.logits
            noise = torch.stack([torch.empty_like(logits[k]).exponential_(generator=g)
                                 for k, g in enumerate(generators)])
            return (logits - noise.log()).argmax(-1)
        if isinstance(dist, MultiCategorical):
            return torch.stack([sample(d, generators) for d in dist.dists], dim=-1)
        if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
            loc, scale = dist.base_dist.loc, dist.base_dist.scale
            return torch.stack([torch.normal(loc[k], scale[k], generator=g) for k, g in enumerate(generators)])
    raise TypeError(f"sample() does not know {type(dist).__name__}")


def seed_grad_norms(grads: Sequence[Tensor], norm_type: float = 2.0) -> tuple[Tensor, Tensor]:
    """Per seed: the total gradient norm [K] and each parameter's norm [K, P] of stacked gradients [K, ...]."""
    per = torch.stack([torch.linalg.vector_norm(g.detach().reshape(g.shape[0], -1), norm_type, dim=1)
                       for g in grads], dim=1)  # [K, P]
    total = per.amax(1) if math.isinf(norm_type) else torch.linalg.vector_norm(per, norm_type, dim=1)
    return total, per


def clip_per_seed(grads: Sequence[Tensor], total: Tensor, max_norm: float) -> None:
    """Scale seed k's gradients by min(1, max_norm / (total[k] + 1e-6)): clip_grad_norm_ of each seed on its own."""
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(-1, *([1] * (g.dim() - 1))))
