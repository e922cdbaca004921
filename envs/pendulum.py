"""Pendulum-v1 as a batch of tensors: Gymnasium's `PendulumEnv` (classic_control/pendulum.py), N at a time.

State [N, 2]: th, thdot (Gymnasium's order; th is not wrapped); obs [N, 3] float32 = [cos th, sin th, thdot];
actions [N, 1] float torque, clipped to [-2, 2].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from rlpg.envs.torch_base import TorchVecEnv


def angle_normalize(x: Tensor) -> Tensor:
    """Gymnasium's `angle_normalize`: x into [-pi, pi) (torch.remainder is floored, like numpy's %)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


class Pendulum(TorchVecEnv):
    """Swing a pendulum up and hold it: reward -(angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2), never terminates,
    truncated at 200 steps. g = 10, as Gymnasium's default."""

    spec_id = "Pendulum-v1"
    default_max_episode_steps = 200
    state_dim = 2
    # float64, as Gymnasium: th is never wrapped and drifts to tens of radians while the pendulum spins, where a
    # float32 angle is off by ~1e-5 rad and the reward's angle_normalize(th)^2 by more than 1e-5.
    state_dtype = torch.float64

    max_speed = 8.0
    max_torque = 2.0
    dt = 0.05
    g = 10.0
    m = 1.0
    l = 1.0  # noqa: E741 (Gymnasium's name)

    single_observation_space = spaces.Box(
        low=-np.array([1.0, 1.0, max_speed], dtype=np.float32),
        high=np.array([1.0, 1.0, max_speed], dtype=np.float32),
        dtype=np.float32,
    )
    single_action_space = spaces.Box(low=-max_torque, high=max_torque, shape=(1,), dtype=np.float32)

    def _initial_state(self) -> Tensor:
        # Gymnasium: uniform(low=-high, high=high) with high = [DEFAULT_X, DEFAULT_Y] = [pi, 1]
        th = self._uniform(-math.pi, math.pi, (self.num_envs,))
        thdot = self._uniform(-1.0, 1.0, (self.num_envs,))
        return torch.stack((th, thdot), dim=1)

    def _transition(self, state: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        th, thdot = state.unbind(1)
        g, m, l, dt = self.g, self.m, self.l, self.dt  # noqa: E741
        u = actions[:, 0].clamp(-self.max_torque, self.max_torque)  # Gymnasium clips u before the cost and dynamics
        costs = angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)
        newthdot = thdot + (3 * g / (2 * l) * torch.sin(th) + 3.0 / (m * l**2) * u) * dt
        newthdot = newthdot.clamp(-self.max_speed, self.max_speed)  # Gymnasium clips the speed, then integrates
        newth = th + newthdot * dt
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return torch.stack((newth, newthdot), dim=1), (-costs).to(torch.float32), terminated

    def _observation(self, state: Tensor) -> Tensor:
        th, thdot = state.unbind(1)
        return torch.stack((torch.cos(th), torch.sin(th), thdot), dim=1).to(torch.float32)
