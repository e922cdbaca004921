"""Advantage estimation: pure tensor functions, time-major [T, N].

Terminated vs truncated (Pardo et al. 2018, "Time Limits in Reinforcement Learning"): at a termination
the value of the next state is 0; at a time-limit truncation the episode could have gone on, so the
target bootstraps from V(final_obs). Treating truncation as termination (CleanRL issue #198, SB3 before
its timeout fix) biases values near the time limit. Both cut the recursion across the episode boundary.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlpg.types import Rollout


def _check(name: str, x: Tensor, shape: torch.Size) -> None:
    if x.shape != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)} (time-major [T, N])")


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    dones: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016).

    rewards, values, next_values: [T, N] float; terminated, dones (= terminated | truncated): [T, N] bool.
    next_values[t] = V(s_{t+1}), holding V(final_obs) where dones[t]. Returns (advantages, returns) [T, N]
    with returns = advantages + values (the critic's target).

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * lambda * (1 - dones_t) * A_{t+1}
    """
    shape = rewards.shape
    for name, x in (("values", values), ("next_values", next_values), ("terminated", terminated), ("dones", dones)):
        _check(name, x, shape)
    not_terminated = (~terminated).to(rewards.dtype)
    deltas = rewards + gamma * not_terminated * next_values - values
    # the recursion runs over the rows of a few whole-rollout tensors: two small ops per step (a rollout of 16 steps
    # took ~7 ops a step, indexing and storing included, about 5% of a small PPO iteration on the CPU)
    decay = (gamma * gae_lambda) * (~dones).to(rewards.dtype)
    rows = [torch.zeros_like(rewards[0])]
    for delta, keep in zip(reversed(deltas.unbind(0)), reversed(decay.unbind(0)), strict=True):
        rows.append(torch.mul(keep, rows[-1]).add_(delta))
    advantages = torch.stack(rows[:0:-1]) if len(rows) > 1 else torch.empty_like(rewards)
    return advantages, advantages + values


def rollout_gae(rollout: Rollout, gamma: float, gae_lambda: float) -> tuple[Tensor, Tensor]:
    """`gae` on a Rollout's fields: (advantages, returns) [T, N]. The advantages() of PPO, NPG and TRPO."""
    return gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.dones, gamma,
               gae_lambda)


def discounted_returns(
    rewards: Tensor, terminated: Tensor, truncated: Tensor, next_values: Tensor | None, gamma: float
) -> Tensor:
    """Reward-to-go G_t = r_t + gamma * G_{t+1}, restarted at every episode boundary: [T, N].

    rewards: [T, N]; terminated, truncated: [T, N] bool; next_values: [T, N] or None. After a termination
    the tail is 0. After a truncation, and after the last step of the rollout (the episode goes on in the
    next rollout), the tail is next_values (V(final_obs) / V(s_T)) when a value baseline exists, else 0:
    without a critic the unobserved tail cannot be estimated and a truncation counts as an end.
    """
    shape = rewards.shape
    for name, x in (("terminated", terminated), ("truncated", truncated)):
        _check(name, x, shape)
    tail = torch.zeros_like(rewards) if next_values is None else next_values
    _check("next_values", tail, shape)
    tail = tail * (~terminated).to(rewards.dtype)
    returns = torch.empty_like(rewards)
    running = tail[-1]
    for t in reversed(range(shape[0])):
        # at an episode boundary (or the rollout's end) restart from the bootstrap tail
        running = rewards[t] + gamma * torch.where(terminated[t] | truncated[t], tail[t], running)
        returns[t] = running
    return returns


def normalize(x: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / (std + eps). A batch of one is returned as it is: its std is NaN with Bessel's correction
    (the minibatch-of-one NaN reported against SB3), and centring it would give 0, so the policy would never
    move; SB3's fix (DLR-RM/stable-baselines3#325) likewise skips normalisation for a single sample."""
    if x.numel() < 2:
        return x
    return (x - x.mean()) / (x.std() + eps)


def explained_variance(y_pred: Tensor, y_true: Tensor) -> Tensor:
    """1 - Var[y_true - y_pred] / Var[y_true]: 1 is perfect, 0 is no better than the mean; NaN when
    y_true is constant (a device scalar; no host sync)."""
    var_y = y_true.var(correction=0)
    return 1.0 - (y_true - y_pred).var(correction=0) / var_y
