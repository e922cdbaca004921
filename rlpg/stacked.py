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
norms and clipping (rlpg.optim.step_with_clip's `per_seed`) and sampling (`sample`, one generator per seed).
"""

from __future__ import annotations

import copy
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
from rlpg.types import Batch, Rollout, VecEnv


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
        trainable = {name: p.requires_grad for name, p in first.named_parameters()}
        for name, p in self.named_parameters():  # frozen parameters stay frozen (fine-tuning K seeds at once)
            p.requires_grad_(trainable[name])

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

    def actor_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The actor's trainable (name, stacked parameter) pairs, named as an ActorCritic's."""
        return [(n, p) for n, p in self.actor.named_parameters(prefix="actor") if p.requires_grad]

    def critic_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.critic.named_parameters(prefix="critic") if p.requires_grad]

    def policy(self, k: int) -> ActorCritic:
        """Seed k as an ordinary ActorCritic (a copy of its weights), as a single run of that seed holds it."""
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
            noise = torch.empty_like(logits)
            for k, g in enumerate(generators):
                noise[k].exponential_(generator=g)
            return (logits - noise.log()).argmax(-1)
        if isinstance(dist, MultiCategorical):
            return torch.stack([sample(d, generators) for d in dist.dists], dim=-1)
        if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
            # torch.normal(loc, scale) is N(0, 1) noise * scale + loc; drawing each seed's noise into a view of one
            # tensor and scaling all seeds at once gives the same numbers without K calls of torch.normal's checks
            # (~9 us each: with 16 seeds the largest per-step cost of a Pendulum rollout)
            noise = torch.empty_like(dist.base_dist.loc)
            for k, g in enumerate(generators):
                noise[k].normal_(generator=g)
            return noise.mul_(dist.base_dist.scale).add_(dist.base_dist.loc)
    raise TypeError(f"sample() does not know {type(dist).__name__}")


class StackedCollector:
    """Rollouts of K seeds at once: a torch-native env of K x N rows in K seed groups (its rows k*N .. k*N+N-1 are
    seed k's N envs), the stacked policy acting on [K, N] and each seed sampling from its own generator.

    collect() returns a Rollout in the env's layout, [T, K * N] (seed k's columns k*N .. k*N+N-1), which GAE and
    every per-column computation take unchanged, with the episode statistics per seed ([K] sums and counts)."""

    def __init__(self, env: VecEnv, policy: StackedActorCritic, num_steps: int,
                 generators: Sequence[torch.Generator]) -> None:
        if env.num_envs % policy.k or len(generators) != policy.k:
            raise ConfigError(f"{env.num_envs} envs and {len(generators)} generators do not split into "
                              f"{policy.k} seeds")
        self.env, self.policy, self.num_steps, self.generators = env, policy, num_steps, list(generators)
        self.obs: Tensor | None = None

    def reset(self, seeds: Sequence[int] | None = None) -> None:
        self.obs, _ = self.env.reset(seed=None if seeds is None else list(seeds))

    @torch.no_grad()
    def collect(self) -> Rollout:
        if self.obs is None:
            self.reset()
        assert self.obs is not None
        K, T, KN = self.policy.k, self.num_steps, self.env.num_envs
        N = KN // K
        device = next(self.policy.parameters()).device
        obs = self.obs.to(device)
        b_obs = torch.empty((T, *obs.shape), dtype=obs.dtype, device=device)
        b_next_obs = torch.empty_like(b_obs)
        b_logp = torch.empty((T, KN), device=device)
        b_rewards = torch.empty((T, KN), device=device)
        b_terminated = torch.empty((T, KN), dtype=torch.bool, device=device)
        b_truncated = torch.empty((T, KN), dtype=torch.bool, device=device)
        b_actions: Tensor | None = None
        ret_sum, len_sum, count = (torch.zeros(K, device=device) for _ in range(3))
        for t in range(T):
            d = self.policy.dist(obs.reshape(K, N, *obs.shape[1:]))
            action = sample(d, self.generators)
            logp = d.log_prob(action)
            action = action.reshape(KN, *action.shape[2:])
            if b_actions is None:
                b_actions = torch.empty((T, *action.shape), dtype=action.dtype, device=device)
            b_obs[t], b_actions[t], b_logp[t] = obs, action, logp.reshape(KN)
            obs, reward, terminated, truncated, info = self.env.step(action)
            b_rewards[t], b_terminated[t], b_truncated[t] = reward, terminated, truncated
            b_next_obs[t] = info["final_obs"]
            if "episode_return" in info:
                done = info.get("episode_done", terminated | truncated).float()
                ret_sum += (info["episode_return"] * done).reshape(K, N).sum(1)
                len_sum += (info["episode_length"] * done).reshape(K, N).sum(1)
                count += done.reshape(K, N).sum(1)
        self.obs = obs
        assert b_actions is not None
        values, next_values = stacked_critic_values(self.policy, b_obs, b_next_obs, obs, b_terminated | b_truncated)
        return Rollout(b_obs, b_actions, b_logp, values, next_values, b_rewards, b_terminated, b_truncated, ret_sum,
                       len_sum, count)


def stacked_critic_values(policy: StackedActorCritic, obs: Tensor, next_obs: Tensor, last_obs: Tensor,
                          dones: Tensor, gather: bool | None = None) -> tuple[Tensor, Tensor]:
    """rlpg.rollout.critic_values for K seeds (obs, next_obs [T, K*N, ...], last_obs [K*N, ...], dones [T, K*N]).

    On the CPU, as there: one stacked pass over s_0..s_T gives V(s_t) and, where the episode went on, V(s_{t+1});
    V(final_obs) is evaluated only on the done rows, each seed's gathered to the front of a [K, M] batch (M: the most
    done rows of any seed; the padding rows are computed and dropped). On an accelerator, where counting the done
    rows would make the host wait, one pass over every s_t and next_obs row (`gather` chooses, as there)."""
    T, KN = dones.shape
    K = policy.k
    N = KN // K
    flat = obs.shape[2:]

    def per_seed(x: Tensor) -> Tensor:  # [R, K*N, ...] -> [K, R*N, ...], seed k's rows in time order
        return x.reshape(x.shape[0], K, N, *flat).movedim(1, 0).reshape(K, x.shape[0] * N, *flat)

    def env_layout(v: Tensor) -> Tensor:  # [K, R*N] -> [R, K*N]
        return v.reshape(K, -1, N).movedim(0, 1).reshape(-1, KN)

    if not (obs.device.type == "cpu" if gather is None else gather):
        v = policy.value(per_seed(torch.cat([obs, next_obs])))
        both = env_layout(v)
        return both[:T], both[T:]
    ext = env_layout(policy.value(per_seed(torch.cat([obs, last_obs.unsqueeze(0)]))))  # [T+1, K*N]
    next_values = ext[1:].clone()
    done = dones.reshape(T, K, N).movedim(1, 0).reshape(K, T * N)
    most = int(done.sum(1).max())
    if most:
        # each seed's done rows first (stable: in time order), then as many of its other rows as the padding needs
        rows = torch.argsort((~done).to(torch.uint8), dim=1, stable=True)[:, :most]  # [K, M], row t*N + n of seed k
        at = (rows // N) * KN + torch.arange(K, device=rows.device).unsqueeze(1) * N + rows % N  # in [T * K*N]
        v = policy.value(next_obs.reshape(T * KN, *flat)[at.reshape(-1)].reshape(K, most, *flat))  # [K, M]
        keep = done.gather(1, rows)  # the padding rows keep V(s_{t+1})
        next_values.view(-1)[at[keep]] = v[keep]
    return ext[:-1], next_values


def seed_batch(rollout: Rollout, advantages: Tensor, returns: Tensor, k: int) -> Batch:
    """A K-seed rollout in the env's layout [T, K * N, ...] as the update's batch [K, T * N, ...]: seed k's rows in
    [k], in the order a single run of that seed flattens its own [T, N] rollout (rlpg.trainer.flatten)."""
    T, KN = rollout.rewards.shape
    n = KN // k

    def per_seed(x: Tensor) -> Tensor:
        return x.reshape(T, k, n, *x.shape[2:]).movedim(1, 0).reshape(k, T * n, *x.shape[2:])

    return Batch(per_seed(rollout.obs), per_seed(rollout.actions), per_seed(rollout.logp), per_seed(rollout.values),
                 per_seed(advantages), per_seed(returns))
