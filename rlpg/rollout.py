"""Rollout collection and evaluation: the only code that steps an environment.

Everything runs under `torch.no_grad()` on the policy's device. With torch-native envs nothing crosses
between host and device inside the loop; with Gymnasium envs the adapter does the one copy per step.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import Tensor

from rlpg.encoders import image_shape
from rlpg.errors import RLPGError
from rlpg.policies import ActorCritic, sample_with_log_prob
from rlpg.types import Rollout, VecEnv


def rollout_bytes(obs_space: gym.Space, action_space: gym.Space, num_envs: int, num_steps: int, hidden: int) -> int:
    """Roughly the memory one iteration needs for its [T, N] storage and the batched critic pass over it: obs and
    next obs (and the critic's copy of them), actions, six float and two bool columns, the hidden activations."""
    d = int(math.prod(obs_space.shape)) if isinstance(obs_space, gym.spaces.Box) else int(getattr(obs_space, "n", 1))
    a = int(math.prod(action_space.shape or (1,)))
    itemsize = 1 if image_shape(obs_space) else 4  # images are stored as they come (uint8 / bool)
    per_sample = 4 * itemsize * d + 8 * a + 6 * 4 + 2 + 3 * 4 * hidden
    return num_envs * num_steps * per_sample


class Collector:
    """Holds the envs' current observation between rollouts, so episodes continue across them."""

    def __init__(self, env: VecEnv, policy: ActorCritic, num_steps: int) -> None:
        self.env, self.policy, self.num_steps = env, policy, num_steps
        self.obs: Tensor | None = None

    def reset(self, seed: int | None = None) -> None:
        self.obs, _ = self.env.reset(seed=seed)

    @torch.no_grad()
    def collect(self) -> Rollout:
        """Step every env `num_steps` times with the sampling policy. Shapes: see rlpg.types.Rollout."""
        if self.obs is None:
            self.reset()
        obs = self.obs
        assert obs is not None
        T, N = self.num_steps, self.env.num_envs
        device = next(self.policy.parameters()).device
        obs = obs.to(device)
        b_obs = torch.empty((T, *obs.shape), dtype=obs.dtype, device=device)
        b_next_obs = torch.empty_like(b_obs)  # s_{t+1} of the same episode: final_obs on done rows
        b_logp = torch.empty((T, N), device=device)
        b_rewards = torch.empty((T, N), device=device)
        b_terminated = torch.empty((T, N), dtype=torch.bool, device=device)
        b_truncated = torch.empty((T, N), dtype=torch.bool, device=device)
        b_actions: Tensor | None = None
        # the episodes that ended (as the env scores them, see below) with their returns and lengths, summed after the
        # loop rather than in ~9 small ops per step
        b_done = torch.zeros((T, N), dtype=torch.bool, device=device)
        b_ret = torch.zeros((T, N), device=device)
        b_len = torch.zeros((T, N), device=device)
        # each step's row views made once (one unbind per buffer rather than an indexing op per store and step)
        obs_t, next_obs_t, logp_t, rewards_t, terminated_t, truncated_t, done_t, ret_t, len_t = (
            x.unbind(0)
            for x in (b_obs, b_next_obs, b_logp, b_rewards, b_terminated, b_truncated, b_done, b_ret, b_len))
        actions_t: tuple[Tensor, ...] = ()
        for t in range(T):
            action, logp = sample_with_log_prob(self.policy.dist(obs))
            if b_actions is None:
                b_actions = torch.empty((T, *action.shape), dtype=action.dtype, device=device)
                actions_t = b_actions.unbind(0)
            obs_t[t].copy_(obs)
            actions_t[t].copy_(action)
            logp_t[t].copy_(logp)
            obs, reward, terminated, truncated, info = self.env.step(action)
            rewards_t[t].copy_(reward)
            terminated_t[t].copy_(terminated)
            truncated_t[t].copy_(truncated)
            if "final_obs" not in info:
                # without it a truncated episode would silently bootstrap from the next episode's first observation
                raise RLPGError(
                    f"{type(self.env).__name__}.step() returned no info['final_obs']: a VecEnv must return the last "
                    "observation of each sub-env (the observation itself where the episode goes on), see "
                    "rlpg.types.VecEnv"
                )
            next_obs_t[t].copy_(info["final_obs"])
            if "episode_return" in info:
                # episode_done: the episodes the env scores (whole Atari games, not the learner's per-life ones)
                done_t[t].copy_(info.get("episode_done", terminated | truncated))
                ret_t[t].copy_(info["episode_return"])
                len_t[t].copy_(info["episode_length"])
        self.obs = obs
        assert b_actions is not None
        done = b_done.float()
        ret_sum, len_sum, count = (b_ret * done).sum(), (b_len * done).sum(), done.sum()
        values, next_values = critic_values(self.policy, b_obs, b_next_obs, obs, b_terminated | b_truncated)
        return Rollout(
            b_obs,
            b_actions,
            b_logp,
            values,
            next_values,
            b_rewards,
            b_terminated,
            b_truncated,
            ret_sum,
            len_sum,
            count,
        )


def critic_values(
    policy: ActorCritic, obs: Tensor, next_obs: Tensor, last_obs: Tensor, dones: Tensor, gather: bool | None = None
) -> tuple[Tensor, Tensor]:
    """V(s_t) and V(s_{t+1}) of the same episode for a rollout, in batched critic passes after the loop (the
    critic is not needed to act, so this replaces T small passes inside it).

    obs, next_obs: [T, N, D], next_obs holding final_obs where the episode ended; last_obs: s_T [N, D];
    dones: [T, N]. Returns values, next_values [T, N]: a truncated episode bootstraps from V(final_obs), the
    last step from V(s_T). Where an episode went on, s_{t+1} is obs[t+1], so one pass over s_0..s_T gives
    both, and only the few done rows need V(final_obs): `gather` (default: on the CPU) evaluates just those,
    which halves the critic's work but needs their count on the host; on an accelerator that would stall the
    device, so there the critic runs over every next_obs row in the same pass instead.
    """
    T, N = dones.shape
    flat = obs.shape[2:]
    if gather is None:
        gather = obs.device.type == "cpu"
    if not gather:
        both = torch.cat([obs, next_obs]).reshape(2 * T * N, *flat)
        values, next_values = policy.value(both).reshape(2, T, N)
        return values, next_values
    ext = policy.value(torch.cat([obs.reshape(T * N, *flat), last_obs])).reshape(T + 1, N)
    next_values = ext[1:].clone()
    rows = dones.reshape(-1).nonzero().squeeze(1)
    if len(rows):
        next_values.view(-1)[rows] = policy.value(next_obs.reshape(T * N, *flat)[rows])
    return ext[:-1], next_values


EVAL_STEPS_WITHOUT_TIME_LIMIT = 10_000
"""steps an evaluation episode may take in an env that has no time limit of its own, before `evaluate` stops"""


@torch.no_grad()
def evaluate(
    env: VecEnv,
    policy: ActorCritic,
    episodes: int,
    seed: int | list[int] | None = None,
    deterministic: bool = True,
    max_steps: int | None = None,
    groups: int | None = None,
) -> Tensor:
    """Returns of `episodes` complete episodes [episodes] (on the host), run with the policy's mode.

    Each of the N envs runs a fixed share of the episodes (episodes // N, plus one for the first
    episodes % N), so short episodes are not over-represented, as SB3's evaluate_policy does. `env`
    must report episode statistics (rlpg.envs.make adds them). At most `max_steps` steps per env are taken
    (default: the env's share of episodes times its time limit, or EVAL_STEPS_WITHOUT_TIME_LIMIT per episode
    when it has none), then RLPGError: an env whose episodes never end cannot hang an evaluation.

    `groups` K: K seeds at once (rlpg.seeds), `env` a K-seed env of K x N rows and `policy` their StackedActorCritic
    (K may be 1); each seed's N rows play `episodes` episodes exactly as a single run's N envs would. Returns
    [K, episodes].
    """
    stacked = groups is not None
    groups = groups or 1
    n = env.num_envs // groups
    device = next(policy.parameters()).device
    share = episodes // n + (episodes % n > 0)
    if max_steps is None:
        limit = getattr(env, "max_episode_steps", None) or EVAL_STEPS_WITHOUT_TIME_LIMIT
        max_steps = share * limit + 1
    targets = torch.tensor([episodes // n + (i < episodes % n) for i in range(n)], device=device).repeat(groups)
    per_env = int(targets.max())
    buf = torch.zeros((n * groups, max(per_env, 1)), device=device)
    counts = torch.zeros(n * groups, dtype=torch.long, device=device)
    rows = torch.arange(n * groups, device=device)
    obs, _ = env.reset(seed=seed)
    for step in range(max_steps):
        obs = obs.to(device)
        d = policy.dist(obs.reshape(groups, n, *obs.shape[1:]) if stacked else obs)
        action = d.mode if deterministic else d.sample()
        if stacked:
            action = action.reshape(groups * n, *action.shape[2:])
        obs, _, terminated, truncated, info = env.step(action)
        take = info.get("episode_done", terminated | truncated).to(device) & (counts < targets)
        col = counts.clamp(max=per_env - 1)
        buf[rows, col] = torch.where(take, info["episode_return"].to(device).float(), buf[rows, col])
        counts += take.long()
        if step % 16 == 15 and bool((counts >= targets).all()):
            break
    else:
        if not bool((counts >= targets).all()):
            done = int(counts.sum())
            name = getattr(env, "spec_id", type(env).__name__)
            raise RLPGError(
                f"evaluation stopped after {max_steps} steps per env with {done} of {episodes} episodes of {name} "
                "finished; an env without a time limit needs one (gymnasium.register(..., max_episode_steps=N) "
                "or gymnasium.wrappers.TimeLimit)"
            )
    mask = torch.arange(max(per_env, 1), device=device).unsqueeze(0) < targets.unsqueeze(1)
    returns = buf[mask].cpu()
    return returns.reshape(groups, episodes) if stacked else returns
