"""Acrobot-v1 as a batch of tensors: Gymnasium's `AcrobotEnv` (classic_control/acrobot.py), N at a time.

State [N, 4]: theta1, theta2, dtheta1, dtheta2 (Gymnasium's order); obs [N, 6] float32 =
[cos theta1, sin theta1, cos theta2, sin theta2, dtheta1, dtheta2]; actions [N] in {0, 1, 2} -> torque {-1, 0, +1}.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from rlpg.envs.torch_base import TorchVecEnv


def wrap(x: Tensor, m: float, big_m: float) -> Tensor:
    """Gymnasium's `wrap`: shift x by whole periods (M - m) until m <= x <= M. Its two while-loops become a ceil."""
    diff = big_m - m
    x = torch.where(x > big_m, x - diff * torch.ceil((x - big_m) / diff), x)
    return torch.where(x < m, x + diff * torch.ceil((m - x) / diff), x)


class Acrobot(TorchVecEnv):
    """Swing a two-link chain's tip above the bar: reward -1 per step, 0 on the terminating step, terminated when
    -cos(theta1) - cos(theta1 + theta2) > 1, truncated at 500 steps. "book" dynamics, rk4 over dt = 0.2, no torque
    noise (Gymnasium's defaults)."""

    spec_id = "Acrobot-v1"
    default_max_episode_steps = 500
    state_dim = 4
    # float64, as Gymnasium integrates (np.append(s, torque) promotes its float32 state to float64): at velocities near
    # the 9*pi bound a float32 rk4 step misses Gymnasium's by up to ~1e-5 (10 float32 ulps); float64 matches to 1e-7.
    state_dtype = torch.float64

    dt = 0.2
    LINK_LENGTH_1 = 1.0
    LINK_MASS_1 = 1.0
    LINK_MASS_2 = 1.0
    LINK_COM_POS_1 = 0.5
    LINK_COM_POS_2 = 0.5
    LINK_MOI = 1.0
    MAX_VEL_1 = 4 * math.pi
    MAX_VEL_2 = 9 * math.pi

    _high = np.array([1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2], dtype=np.float32)
    single_observation_space = spaces.Box(low=-_high, high=_high, dtype=np.float32)
    single_action_space = spaces.Discrete(3)

    def _initial_state(self) -> Tensor:
        # Gymnasium draws uniform(-0.1, 0.1) and rounds it to float32 before integrating in float64
        return self._uniform(-0.1, 0.1, (self.num_envs, 4)).float().to(self.state_dtype)

    def _dsdt(self, s: Tensor, a: Tensor) -> Tensor:
        """Time derivative [N, 4] of the state s [N, 4] under torque a [N] (Gymnasium's `_dsdt`, "book" branch)."""
        m1, m2, l1 = self.LINK_MASS_1, self.LINK_MASS_2, self.LINK_LENGTH_1
        lc1, lc2, i1, i2, g = self.LINK_COM_POS_1, self.LINK_COM_POS_2, self.LINK_MOI, self.LINK_MOI, 9.8
        theta1, theta2, dtheta1, dtheta2 = s.unbind(1)
        cos2, sin2 = torch.cos(theta2), torch.sin(theta2)
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos2) + i1 + i2
        d2 = m2 * (lc2**2 + l1 * lc2 * cos2) + i2
        phi2 = m2 * lc2 * g * torch.cos(theta1 + theta2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * sin2
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * g * torch.cos(theta1 - math.pi / 2)
            + phi2
        )
        ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * sin2 - phi2) / (m2 * lc2**2 + i2 - d2**2 / d1)
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return torch.stack((dtheta1, dtheta2, ddtheta1, ddtheta2), dim=1)

    def _transition(self, state: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        torque = actions.to(state.dtype) - 1.0  # AVAIL_TORQUE = [-1, 0, +1]
        # Gymnasium's rk4 over t = [0, dt]: one classic Runge-Kutta step; the torque is held constant
        dt, dt2 = self.dt, self.dt / 2.0
        k1 = self._dsdt(state, torque)
        k2 = self._dsdt(state + dt2 * k1, torque)
        k3 = self._dsdt(state + dt2 * k2, torque)
        k4 = self._dsdt(state + dt * k3, torque)
        ns = state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        theta1, theta2, dtheta1, dtheta2 = ns.unbind(1)
        # Gymnasium wraps the angles into [-pi, pi] and bounds (clips) the velocities after integrating
        theta1, theta2 = wrap(theta1, -math.pi, math.pi), wrap(theta2, -math.pi, math.pi)
        dtheta1 = dtheta1.clamp(-self.MAX_VEL_1, self.MAX_VEL_1)
        dtheta2 = dtheta2.clamp(-self.MAX_VEL_2, self.MAX_VEL_2)
        terminated = -torch.cos(theta1) - torch.cos(theta2 + theta1) > 1.0
        reward = terminated.to(torch.float32) - 1.0  # -1 per step, 0 on the terminating step
        return torch.stack((theta1, theta2, dtheta1, dtheta2), dim=1), reward, terminated

    def _observation(self, state: Tensor) -> Tensor:
        theta1, theta2, dtheta1, dtheta2 = state.unbind(1)
        obs = (torch.cos(theta1), torch.sin(theta1), torch.cos(theta2), torch.sin(theta2), dtheta1, dtheta2)
        return torch.stack(obs, dim=1).to(torch.float32)
