"""Shared machinery of the torch-native batched classic-control environments.

`TorchVecEnv` owns what every task needs: the env's own `torch.Generator`, the elapsed-step counters, Gymnasium's
TimeLimit truncation, the same-step autoreset done with `torch.where`, `info["final_obs"]`, the spaces and close().
A task subclasses it once and supplies three tensor functions (shapes: N = num_envs, S = state dim, D = obs dim):

    _initial_state() -> [N, S]                            reset draws, from self.generator
    _transition(state [N, S], actions) -> next_state [N, S], reward [N] float32, terminated [N] bool
    _observation(state [N, S]) -> obs [N, D] float32

Many seeds in one env (rlpg.stacked): `seed` may be a list of K seeds; the N rows then form K groups of N / K, each
drawing its reset states from a generator of its own, exactly as an env of N / K rows seeded with that seed alone
would (row group k of the K-seed env steps as that env does).

`step` never branches on tensor values and never moves data between host and device, so it runs under
`torch.cuda.set_sync_debug_mode("error")`; the reset draws are computed for every row at every step and selected
with `torch.where`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from torch import Tensor


class TorchVecEnv:
    """N copies of one Gymnasium classic-control task stepped as tensors on `device` (implements rlpg.types.VecEnv).

    reset(seed) -> obs [N, D] float32, {}; step(actions) -> obs [N, D] float32, reward [N] float32,
    terminated [N] bool, truncated [N] bool, {"final_obs": [N, D]}. Discrete actions are integer [N] (or [N, 1]);
    continuous actions are float [N, A]. Actions must already be on `device`.
    """

    spec_id: ClassVar[str]
    """Gymnasium id of the task this class reproduces, e.g. "CartPole-v1"."""
    default_max_episode_steps: ClassVar[int]
    """Gymnasium's registered `max_episode_steps` for `spec_id`."""
    state_dim: ClassVar[int]
    state_dtype: ClassVar[torch.dtype] = torch.float32
    """dtype of the internal state; observations are always float32."""
    single_observation_space: gym.spaces.Box
    single_action_space: gym.spaces.Discrete | gym.spaces.Box
    metadata: ClassVar[dict[str, Any]] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int | Sequence[int] | None = None,
        max_episode_steps: int | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        groups = 1 if seed is None or isinstance(seed, int) else len(seed)
        if groups < 1 or num_envs % groups:
            raise ValueError(f"num_envs ({num_envs}) must be a multiple of the number of seeds ({groups})")
        if max_episode_steps is None:
            max_episode_steps = self.default_max_episode_steps
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        # torch.device("cuda") -> cuda:<current>, so the device check in step compares equal to tensors' devices
        self.device = torch.empty(0, device=device).device
        # per-instance copies of the class-level spaces, so seeding one env's action space leaves the others alone
        self.single_observation_space = copy.deepcopy(self.single_observation_space)
        self.single_action_space = copy.deepcopy(self.single_action_space)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        if isinstance(self.single_action_space, gym.spaces.Box):
            low, high = (torch.as_tensor(b, dtype=self.state_dtype, device=self.device)
                         for b in (self.single_action_space.low, self.single_action_space.high))
            self._action_low, self._action_high = low, high
        self.generators = [torch.Generator(device=self.device) for _ in range(groups)]
        self.generator = self.generators[0]
        if seed is None:
            self.generator.seed()
        else:
            self._seed(seed)
        self._state = torch.zeros(num_envs, self.state_dim, dtype=self.state_dtype, device=self.device)
        self._elapsed = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._needs_reset = True  # Gymnasium's OrderEnforcing: step() before reset() is an error

    # ---- what a task supplies -------------------------------------------------------------------------------------
    def _initial_state(self) -> Tensor:
        """Fresh reset states [N, S] drawn from `self.generator` with Gymnasium's reset distribution."""
        raise NotImplementedError

    def _transition(self, state: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step of the dynamics: next_state [N, S], reward [N] float32, terminated [N] bool."""
        raise NotImplementedError

    def _observation(self, state: Tensor) -> Tensor:
        """Observation [N, D] float32 of `state` [N, S]."""
        raise NotImplementedError

    # ---- helpers for tasks ----------------------------------------------------------------------------------------
    def _uniform(self, low: float, high: float, shape: tuple[int, ...]) -> Tensor:
        """Uniform draws in [low, high) of `shape` (rows first) from the env's own generator (Gymnasium's
        np_random.uniform); with K seeds, each group of rows from its own generator."""
        if len(self.generators) == 1:
            u = torch.rand(shape, generator=self.generator, dtype=self.state_dtype, device=self.device)
        else:  # each group's draws written into its rows of one tensor (torch.rand is empty().uniform_())
            u = torch.empty(shape, dtype=self.state_dtype, device=self.device)
            for rows, g in zip(u.chunk(len(self.generators)), self.generators, strict=True):
                rows.uniform_(generator=g)
        return u * (high - low) + low

    def _seed(self, seed: int | Sequence[int]) -> None:
        seeds = [seed] if isinstance(seed, int) else list(seed)
        if len(seeds) != len(self.generators):
            raise ValueError(f"this env has {len(self.generators)} seed group(s); reset got {len(seeds)} seed(s)")
        for g, s in zip(self.generators, seeds, strict=True):
            g.manual_seed(s)

    # ---- the VecEnv API -------------------------------------------------------------------------------------------
    def reset(self, seed: int | Sequence[int] | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Reset every sub-env; reseed the env's generator(s) first when `seed` is given (one seed per group). Returns
        obs [N, D], {}."""
        if seed is not None:
            self._seed(seed)
        self._state = self._initial_state()
        self._elapsed = torch.zeros_like(self._elapsed)
        self._needs_reset = False
        return self._observation(self._state), {}

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        """Step all N sub-envs and reset the finished ones in the same step (Gymnasium's AutoresetMode.SAME_STEP).

        Returns obs [N, D] (first obs of the new episode on done rows), reward [N], terminated [N], truncated [N]
        and info["final_obs"] [N, D]: the last obs of the finished episode on done rows, equal to obs elsewhere.
        """
        if self._needs_reset:
            raise RuntimeError(f"{self!r}: call reset() before step()")
        next_state, reward, terminated = self._transition(self._state, self._check_actions(actions))
        elapsed = self._elapsed + 1
        # Gymnasium's TimeLimit wrapper: truncated = elapsed >= max_episode_steps, whether or not it also terminated
        truncated = elapsed >= self.max_episode_steps
        done = (terminated | truncated).unsqueeze(1)  # [N, 1]
        final_obs = self._observation(next_state)
        # draw reset states for every row (no data-dependent branch) and keep them only where the episode ended
        self._state = torch.where(done, self._initial_state(), next_state)
        self._elapsed = torch.where(done.squeeze(1), 0, elapsed)
        return self._observation(self._state), reward, terminated, truncated, {"final_obs": final_obs}

    def reset_rows(self, mask: Tensor) -> Tensor:
        """Reset only the sub-envs where `mask` [N] bool is True (fresh draws from the generator, elapsed 0); the
        others keep their state. Returns obs [N, D] of every row. Like step, it draws reset states for all rows
        and selects with `torch.where`, so it reads no value on the host."""
        if self._needs_reset:
            raise RuntimeError(f"{self!r}: call reset() before resetting some rows")
        mask = torch.as_tensor(mask, device=self.device)
        if mask.dtype != torch.bool or mask.shape != (self.num_envs,):
            raise ValueError(f"mask must be a bool tensor of shape ({self.num_envs},), got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        self._state = torch.where(mask.unsqueeze(1), self._initial_state(), self._state)
        self._elapsed = torch.where(mask, 0, self._elapsed)
        return self._observation(self._state)

    def close(self) -> None:
        """Nothing to release: the state lives in tensors."""

    # ---- state access (tests, custom initial states) -------------------------------------------------------------
    @property
    def state(self) -> Tensor:
        """A copy of the physical state [N, S] in Gymnasium's order and `state_dtype`."""
        return self._state.clone()

    @state.setter
    def state(self, value: Tensor) -> None:
        """Set the physical state [N, S]; the elapsed step counters are left unchanged."""
        value = torch.as_tensor(value)
        if value.shape != (self.num_envs, self.state_dim):
            raise ValueError(f"state must have shape {(self.num_envs, self.state_dim)}, got {tuple(value.shape)}")
        self._state = value.to(device=self.device, dtype=self.state_dtype).clone()
        self._needs_reset = False

    @property
    def elapsed(self) -> Tensor:
        """A copy of the steps taken in each current episode [N] int64 (Gymnasium's TimeLimit `_elapsed_steps`)."""
        return self._elapsed.clone()

    @elapsed.setter
    def elapsed(self, value: Tensor) -> None:
        value = torch.as_tensor(value)
        if value.shape != (self.num_envs,):
            raise ValueError(f"elapsed must have shape {(self.num_envs,)}, got {tuple(value.shape)}")
        self._elapsed = value.to(device=self.device, dtype=torch.int64).clone()

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit for bit: state, elapsed steps and the generator."""
        return {
            "spec_id": self.spec_id,
            "state": self._state.cpu(),
            "elapsed": self._elapsed.cpu(),
            "generator": self.generator.get_state(),
            **({"generators": [g.get_state() for g in self.generators]} if len(self.generators) > 1 else {}),
            "needs_reset": self._needs_reset,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; a state of another task or another number of envs is a ValueError."""
        if state.get("spec_id") != self.spec_id:
            raise ValueError(f"saved env state is of {state.get('spec_id')!r}, this env is {self.spec_id!r}")
        shape = (self.num_envs, self.state_dim)
        if tuple(state["state"].shape) != shape or tuple(state["elapsed"].shape) != (self.num_envs,):
            raise ValueError(f"saved env state has shape {tuple(state['state'].shape)}, this env {shape}; "
                             "was it saved with another number of envs?")
        if not torch.isfinite(state["state"]).all():
            raise ValueError("saved env state is not finite")
        self._state = state["state"].to(device=self.device, dtype=self.state_dtype).clone()
        self._elapsed = state["elapsed"].to(device=self.device, dtype=torch.int64).clone()
        saved = state.get("generators", [state["generator"]])
        if len(saved) != len(self.generators):
            raise ValueError(f"saved env state has {len(saved)} seed group(s), this env {len(self.generators)}")
        for g, g_state in zip(self.generators, saved, strict=True):
            g.set_state(g_state.cpu())
        self._needs_reset = bool(state["needs_reset"])

    def _check_actions(self, actions: Tensor) -> Tensor:
        """Validate shape, dtype and device (metadata only, no sync); return [N] int64 or [N, A] `state_dtype`.

        Values are not range-checked: that would need a device-to-host sync. Continuous actions are clipped to the
        action space here, at the env boundary, as the Gymnasium adapter clips them.
        """
        if not isinstance(actions, Tensor):
            raise TypeError(f"actions must be a torch.Tensor on {self.device}, got {type(actions).__name__}")
        if actions.device != self.device:
            raise ValueError(f"actions are on {actions.device} but the env is on {self.device}")
        n = self.num_envs
        if isinstance(self.single_action_space, gym.spaces.Discrete):
            if actions.is_floating_point() or actions.is_complex() or actions.dtype == torch.bool:
                raise TypeError(f"discrete actions must be an integer tensor, got {actions.dtype}")
            if actions.shape not in ((n,), (n, 1)):
                raise ValueError(f"discrete actions must have shape ({n},) or ({n}, 1), got {tuple(actions.shape)}")
            return actions.reshape(n).long()
        shape = (n, *self.single_action_space.shape)
        if actions.shape != shape:
            raise ValueError(f"continuous actions must have shape {shape}, got {tuple(actions.shape)}")
        # one rule for every backend: the Gaussian policy samples on R^A and the env receives the sample clipped to
        # the action space (the Gymnasium adapter clips the same way), so rewards never depend on the backend
        return actions.to(self.state_dtype).clamp(self._action_low, self._action_high)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec_id}, num_envs={self.num_envs}, device={self.device})"
