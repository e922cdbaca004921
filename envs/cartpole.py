"""CartPole-v1 as a batch of tensors: Gymnasium's `CartPoleEnv` (classic_control/cartpole.py), N at a time.

State [N, 4]: x, x_dot, theta, theta_dot (Gymnasium's order); obs [N, 4] float32 = state; actions [N] in {0, 1}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from rlpg.envs.torch_base import TorchVecEnv
from rlpg.errors import ConfigError


class CartPole(TorchVecEnv):
    """Balance a pole on a cart: reward 1 per step (the terminating step included), terminated when |x| > 2.4 or
    |theta| > 12 degrees, truncated at 500 steps. Euler integration, as Gymnasium's default `kinematics_integrator`.

    The physical constants default to Gymnasium's and may be changed per env, e.g. a heavier, longer pole for
    fine-tuning: `rlpg.envs.make("CartPole-v1", 8, env_kwargs={"masspole": 0.5, "length": 1.0})`.
    """

    spec_id = "CartPole-v1"
    default_max_episode_steps = 500
    state_dim = 4
    # float32 is enough: the state stays small while an episode lasts (|x| < 2.4, |theta| < 0.21), and one float32
    # step from a float64 Gymnasium state agrees with Gymnasium's float64 step to ~1e-7.

    tau = 0.02  # seconds between state updates
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    _high = np.array([x_threshold * 2, np.inf, theta_threshold_radians * 2, np.inf], dtype=np.float32)
    single_observation_space = spaces.Box(-_high, _high, dtype=np.float32)
    single_action_space = spaces.Discrete(2)

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int | Sequence[int] | None = None,
        max_episode_steps: int | None = None,
        gravity: float = 9.8,
        masscart: float = 1.0,
        masspole: float = 0.1,
        length: float = 0.5,
        force_mag: float = 10.0,
    ) -> None:
        """gravity (m/s^2), masscart and masspole (kg), length (half the pole's length, m) and force_mag (N, the push
        of either action): Gymnasium's `CartPoleEnv` attributes of the same names, with its defaults; each > 0."""
        physics = dict(gravity=gravity, masscart=masscart, masspole=masspole, length=length, force_mag=force_mag)
        for name, value in physics.items():
            if not value > 0:  # also rejects NaN
                raise ConfigError(f"CartPole {name} must be > 0, got {value}")
        super().__init__(num_envs, device, seed, max_episode_steps)
        self.gravity, self.masscart, self.masspole, self.length, self.force_mag = (float(v) for v in physics.values())
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length

    def _initial_state(self) -> Tensor:
        return self._uniform(-0.05, 0.05, (self.num_envs, 4))

    def _transition(self, state: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, x_dot, theta, theta_dot = state.unbind(1)
        force = torch.where(actions == 1, self.force_mag, -self.force_mag).to(state.dtype)
        costheta, sintheta = torch.cos(theta), torch.sin(theta)
        temp = (force + self.polemass_length * theta_dot.square() * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta.square() / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        terminated = (x < -self.x_threshold) | (x > self.x_threshold)
        terminated |= (theta < -self.theta_threshold_radians) | (theta > self.theta_threshold_radians)
        # Gymnasium pays 1.0 on the terminating step too. Its 0.0 for steps taken after termination
        # (`steps_beyond_terminated`) never happens here: a terminated row is reset in the same step.
        reward = torch.ones(self.num_envs, dtype=torch.float32, device=self.device)
        return torch.stack((x, x_dot, theta, theta_dot), dim=1), reward, terminated

    def _observation(self, state: Tensor) -> Tensor:
        return state.to(torch.float32, copy=True)  # a copy: callers may modify obs in place
