"""MountainCar-v0 and MountainCarContinuous-v0 as batches of tensors: Gymnasium's `MountainCarEnv`
(classic_control/mountain_car.py) and `Continuous_MountainCarEnv` (classic_control/continuous_mountain_car.py).

State [N, 2]: position, velocity (Gymnasium's order); obs [N, 2] float32 = state.
MountainCar actions [N] in {0, 1, 2} (push left, none, right); MountainCarContinuous actions [N, 1] float force.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from rlpg.envs.torch_base import TorchVecEnv

MIN_POSITION, MAX_POSITION, MAX_SPEED = -1.2, 0.6, 0.07
_LOW = np.array([MIN_POSITION, -MAX_SPEED], dtype=np.float32)
_HIGH = np.array([MAX_POSITION, MAX_SPEED], dtype=np.float32)


def _initial_state(env: TorchVecEnv) -> Tensor:
    """Gymnasium's reset for both tasks: position uniform in [-0.6, -0.4), velocity 0. Returns [N, 2]."""
    position = env._uniform(-0.6, -0.4, (env.num_envs,))
    return torch.stack((position, torch.zeros_like(position)), dim=1)


def _move(state: Tensor, push: Tensor) -> tuple[Tensor, Tensor]:
    """The car's physics, shared by both tasks: state [N, 2], push [N] (action force) -> position, velocity [N]."""
    position, velocity = state.unbind(1)
    velocity = velocity + (push - 0.0025 * torch.cos(3 * position))  # gravity = 0.0025
    velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED)
    position = (position + velocity).clamp(MIN_POSITION, MAX_POSITION)
    # Gymnasium: `if position == self.min_position and velocity < 0: velocity = 0` (an inelastic left wall)
    velocity = torch.where((position == MIN_POSITION) & (velocity < 0), 0.0, velocity)
    return position, velocity


class MountainCar(TorchVecEnv):
    """Drive an underpowered car up the right hill: reward -1 per step, terminated when position >= 0.5 and
    velocity >= 0, truncated at 200 steps."""

    spec_id = "MountainCar-v0"
    default_max_episode_steps = 200
    state_dim = 2
    # float32 suffices: position and velocity are bounded and small, and one step is a few multiply-adds.

    force = 0.001
    goal_position = 0.5
    goal_velocity = 0.0

    single_observation_space = spaces.Box(_LOW, _HIGH, dtype=np.float32)
    single_action_space = spaces.Discrete(3)

    def _initial_state(self) -> Tensor:
        return _initial_state(self)

    def _transition(self, state: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Gymnasium: velocity += (action - 1) * self.force + math.cos(3 * position) * (-self.gravity)
        position, velocity = _move(state, (actions - 1).to(state.dtype) * self.force)
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        reward = torch.full((self.num_envs,), -1.0, dtype=torch.float32, device=self.device)
        return torch.stack((position, velocity), dim=1), reward, terminated

    def _observation(self, state: Tensor) -> Tensor:
        return state.to(torch.float32, copy=True)  # a copy: callers may modify obs in place


class MountainCarContinuous(TorchVecEnv):
    """MountainCar with a continuous force in [-1, 1]: reward 100 on reaching position >= 0.45 with velocity >= 0,
    minus 0.1 * action^2 every step; truncated at 999 steps."""

    spec_id = "MountainCarContinuous-v0"
    default_max_episode_steps = 999
    state_dim = 2
    # float32, as Gymnasium itself stores this task's state (np.array([position, velocity], dtype=np.float32)).

    min_action = -1.0
    max_action = 1.0
    power = 0.0015
    goal_position = 0.45  # 0.45 in Gymnasium's continuous task (0.5 in the discrete one)
    goal_velocity = 0.0

    single_observation_space = spaces.Box(_LOW, _HIGH, dtype=np.float32)
    single_action_space = spaces.Box(low=min_action, high=max_action, shape=(1,), dtype=np.float32)

    def _initial_state(self) -> Tensor:
        return _initial_state(self)

    def _transition(self, state: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        action = actions[:, 0]  # already clipped to [min_action, max_action] at the env boundary (TorchVecEnv)
        position, velocity = _move(state, action * self.power)
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        # Gymnasium's env penalises the action it is given (`math.pow(action[0], 2) * 0.1`); rlpg gives every backend
        # the clipped action, so the penalty is on the force actually applied
        reward = terminated.to(torch.float32) * 100.0 - (action**2 * 0.1).to(torch.float32)
        return torch.stack((position, velocity), dim=1), reward, terminated

    def _observation(self, state: Tensor) -> Tensor:
        return state.to(torch.float32, copy=True)  # a copy: callers may modify obs in place
