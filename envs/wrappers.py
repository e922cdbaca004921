"""Tensor wrappers for any VecEnv: a finiteness check, episode statistics and running observation / reward
normalisation.

All statistics live on the env's device, so they work unchanged for torch-native envs on a GPU. Every wrapper
has a `state_dict()`; `env_state(env)` gathers them with the base env's own state, so a checkpoint holds what a
resumed run needs to continue exactly (see rlpg.trainer).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlpg.errors import CheckpointError, NonFiniteError
from rlpg.optim import surely_finite


class VecEnvWrapper:
    """Forwards everything to the wrapped env; subclasses override reset/step."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]:
        return self.env.reset(seed=seed)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        return self.env.step(actions)

    def close(self) -> None:
        self.env.close()

    def state_dict(self) -> dict[str, Any]:
        """What this wrapper needs to continue exactly where it stopped (tensors and plain data)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""


class CheckFinite(VecEnvWrapper):
    """Stops a run at the first NaN or infinity in an observation, reward or final observation, with an error that
    names the env id, the sub-env index, the step and the signal, before the value reaches the policy.

    On the CPU each step is checked at once. On an accelerator that would make the host wait for the device every
    step, so the first bad step of each sub-env is recorded on the device and `check_finite()` (which the trainer
    calls once per rollout) raises; NormalizeObservation / NormalizeReward never absorb such a value meanwhile
    (see RunningMeanStd).
    """

    SIGNALS = ("observation", "reward", "final observation")

    def __init__(self, env: Any, env_id: str) -> None:
        super().__init__(env)
        self.env_id = env_id
        self._steps = 0
        self._immediate = torch.device(env.device).type == "cpu"
        self._first: Tensor | None = None  # [3, N] first bad step per signal and sub-env, -1 if none

    @staticmethod
    def _bad_rows(x: Tensor) -> Tensor:
        if not x.is_floating_point():
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        return ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)

    def _record(self, bad: Tensor) -> None:
        """bad: [3, N] bool for the current step."""
        if self._immediate:
            if bool(bad.any()):
                self._raise(torch.where(bad, self._steps, -1))
            return
        if self._first is None:
            self._first = torch.full_like(bad, -1, dtype=torch.int64)
        self._first = torch.where((self._first < 0) & bad, self._steps, self._first)

    def _raise(self, first: Tensor) -> None:
        first = first.cpu()
        hits = [(int(first[k, i]), k, i) for k in range(first.shape[0]) for i in range(first.shape[1])
                if first[k, i] >= 0]
        step, k, i = min(hits)
        raise NonFiniteError(
            f"environment {self.env_id} returned a non-finite {self.SIGNALS[k]} (NaN or inf) in sub-env {i} at step "
            f"{step} of this env batch ({len(hits)} such value(s)); fix the environment or wrap it to clean its output"
        )

    def check_finite(self) -> None:
        """Raise NonFiniteError if a non-finite value was recorded since the last check (one host sync)."""
        if self._first is not None and bool((self._first >= 0).any()):
            first, self._first = self._first, None
            self._raise(first)

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        none = torch.zeros(obs.shape[0], dtype=torch.bool, device=obs.device)
        self._record(torch.stack([self._bad_rows(obs), none, none]))
        return obs, info

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._steps += 1
        final = info.get("final_obs")
        # the CPU's quick test (~5 us against ~40 for the per-row one at 64 envs); on False the per-row test decides
        if self._immediate and surely_finite(obs, reward, final):
            return obs, reward, terminated, truncated, info
        bad_final = self._bad_rows(final) if final is not None else torch.zeros_like(terminated)
        bad_reward = ~torch.isfinite(reward) if reward.is_floating_point() else torch.zeros_like(terminated)
        self._record(torch.stack([self._bad_rows(obs), bad_reward, bad_final]))
        return obs, reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self._steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._steps = int(state["steps"])


class RunningMeanStd:
    """Running mean and variance over a stream of batches (Chan et al.'s parallel update), float64.

    Rows holding a NaN or an infinity are left out of the update, so one bad observation cannot poison the
    statistics for the rest of the run (CheckFinite reports it); the selection uses `torch.where`, not a
    data-dependent branch, so updating never makes the host wait for the device.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, epsilon: float = 1e-4,
                 groups: int | None = None) -> None:
        # groups = K: K independent statistics (mean [K, *shape], count [K]) over the K row groups of each batch,
        # the K seeds of a seed-grouped env (rlpg.stacked); each group's are those a lone env of its rows would keep
        self.groups = groups
        lead = () if groups is None else (groups,)
        self.mean = torch.zeros((*lead, *shape), dtype=torch.float64, device=device)
        self.var = torch.ones((*lead, *shape), dtype=torch.float64, device=device)
        self.count = torch.full(lead, epsilon, dtype=torch.float64, device=device)
        self._synced = (self.mean, self.var, self.count)  # the statistics every rank agreed on last (see sync)

    def rows(self, stat: Tensor, n: int) -> Tensor:
        """`stat` (mean or var) for each of n rows: itself, or with K groups each group's repeated over its rows."""
        if self.groups is None:
            return stat
        return stat.repeat_interleave(n // self.groups, dim=0)

    def update(self, x: Tensor) -> None:
        """x: [N, *shape] (with K groups: rows k*N/K .. (k+1)*N/K - 1 are group k's)."""
        x = x.to(torch.float64)
        if x.device.type == "cpu" and bool(torch.isfinite(x).all()):
            # every row finite, which the CPU tells without a host sync: the plain moments alone (what the torch.where
            # below picks then, the same numbers), not the masked ones beside them
            if self.groups is None:
                self._merge(x.mean(0), x.var(0, correction=0), torch.tensor(float(x.shape[0]), dtype=torch.float64))
            else:
                g = x.reshape(self.groups, -1, *x.shape[1:])
                count = torch.full((self.groups, *([1] * (g.dim() - 2))), float(g.shape[1]), dtype=torch.float64)
                self._merge(g.mean(1), g.var(1, correction=0), count)
            return
        if self.groups is not None:
            self._update_groups(x)
            return
        n = x.shape[0]
        finite = torch.isfinite(x.reshape(n, -1)).all(1)  # [N]
        w = finite.reshape(n, *([1] * (x.dim() - 1))).to(torch.float64)
        b_count = w.sum()
        # the plain mean / var when every row is finite (the common case, with the same rounding as ever),
        # else the moments of the finite rows alone
        xz = torch.where(w > 0, x, 0.0)
        masked_mean = xz.sum(0) / b_count.clamp(min=1)
        masked_var = ((xz - masked_mean).pow(2) * w).sum(0) / b_count.clamp(min=1)
        all_finite = finite.all()
        b_mean = torch.where(all_finite, x.mean(0), masked_mean)
        b_var = torch.where(all_finite, x.var(0, correction=0), masked_var)
        self._merge(b_mean, b_var, b_count)

    def _merge(self, b_mean: Tensor, b_var: Tensor, b_count: Tensor) -> None:
        """Chan et al.'s update with a batch's moments; b_count broadcasts against the mean (a scalar, or [K, 1, ...]
        with K groups)."""
        count = self.count.reshape(b_count.shape)
        delta = b_mean - self.mean
        total = count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * count + b_var * b_count + delta.pow(2) * count * b_count / total
        self.var = m2 / total
        self.count = total.reshape(self.count.shape)

    def _update_groups(self, x: Tensor) -> None:
        """update() of each group on its own rows, all groups at once."""
        k = self.groups
        assert k is not None
        x = x.to(torch.float64).reshape(k, x.shape[0] // k, *x.shape[1:])
        n = x.shape[1]
        finite = torch.isfinite(x.reshape(k, n, -1)).all(2)  # [K, n]
        w = finite.reshape(k, n, *([1] * (x.dim() - 2))).to(torch.float64)
        b_count = w.sum(1).reshape(k)  # [K]
        xz = torch.where(w > 0, x, 0.0)
        counts = b_count.clamp(min=1).reshape(k, *([1] * (x.dim() - 2)))
        masked_mean = xz.sum(1) / counts
        masked_var = ((xz - masked_mean.unsqueeze(1)).pow(2) * w).sum(1) / counts
        all_finite = finite.all(1).reshape(k, *([1] * (x.dim() - 2)))
        b_mean = torch.where(all_finite, x.mean(1), masked_mean)
        b_var = torch.where(all_finite, x.var(1, correction=0), masked_var)
        self._merge(b_mean, b_var, b_count.reshape(counts.shape))

    def sync(self) -> None:
        """Under torchrun: merge what every rank has seen since the last sync into statistics every rank shares.

        Each rank's own rows since then are recovered from its statistics and the last shared ones (count-weighted
        moments, float64), gathered, and folded into the shared statistics in rank order with Chan's update, so every
        rank ends with the same mean, variance and count: those of all ranks' rows together. No-op in one process."""
        from rlpg.distributed import active, all_gather

        if active() is None:
            return
        m0, v0, n0 = self._synced
        n_i = self.count - n0
        safe = n_i.clamp(min=1e-12)
        m_i = torch.where(n_i > 0, (self.count * self.mean - n0 * m0) / safe, 0.0)
        m2_i = self.count * self.var - n0 * v0 - (m_i - m0).pow(2) * n0 * n_i / self.count
        parts = all_gather(torch.cat([n_i.reshape(1), m_i.reshape(-1), m2_i.reshape(-1).clamp(min=0)]))
        mean, m2, count = m0, v0 * n0, n0
        d = m0.numel()
        for row in parts:  # rank order: the same arithmetic on every rank
            n, m, m2_r = row[0], row[1:1 + d].view_as(m0), row[1 + d:].view_as(m0)
            total = count + n
            delta = m - mean
            mean = mean + delta * n / total
            m2 = m2 + m2_r + delta.pow(2) * count * n / total
            count = total
        self.mean, self.var, self.count = mean, m2 / count, count
        self._synced = (self.mean, self.var, self.count)

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean.cpu(), "var": self.var.cpu(), "count": self.count.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        device = self.mean.device
        mean, var, count = (torch.as_tensor(state[k]).to(device, torch.float64) for k in ("mean", "var", "count"))
        if mean.shape != self.mean.shape or var.shape != self.var.shape:
            raise CheckpointError(
                f"saved normaliser statistics have shape {tuple(mean.shape)}, this environment's observations "
                f"{tuple(self.mean.shape)}; was the checkpoint made for another environment?"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(var).all() and torch.isfinite(count).all()):
            raise CheckpointError("saved normaliser statistics are not finite (NaN or inf); the checkpoint is damaged")
        self.mean, self.var, self.count = mean, var, count
        self._synced = (mean, var, count)


class RecordEpisodeStatistics(VecEnvWrapper):
    """Adds `info["episode_done"]` [N] bool and `info["episode_return"]`, `info["episode_length"]` [N] (valid where
    episode_done) from the raw rewards; sits below reward normalisation so the returns are the environment's own.

    An episode here is what the environment scores: usually terminated | truncated, but an env whose learner sees
    shorter episodes than its game (Atari's per-life episodes and clipped rewards, envs/atari.py) reports the whole
    games itself (`env.episode_stats`, see GymVecEnv), and those are passed on unchanged.
    """

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.from_env = bool(getattr(env, "episode_stats", False))

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        if not self.from_env:
            self._ret = torch.zeros(self.num_envs, device=obs.device)
            self._len = torch.zeros(self.num_envs, dtype=torch.long, device=obs.device)
        return obs, info

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self.from_env:
            return obs, reward, terminated, truncated, info
        self._ret = self._ret + reward
        self._len = self._len + 1
        done = terminated | truncated
        info["episode_return"], info["episode_length"], info["episode_done"] = self._ret, self._len, done
        self._ret = torch.where(done, 0.0, self._ret)
        self._len = torch.where(done, 0, self._len)
        return obs, reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        if not hasattr(self, "_ret"):
            return {}
        return {"ret": self._ret.cpu(), "len": self._len.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._ret = _restore(state["ret"], (self.num_envs,), self.env.device, "episode returns")
            self._len = _restore(state["len"], (self.num_envs,), self.env.device, "episode lengths")


class NormalizeObservation(VecEnvWrapper):
    """obs -> clip((obs - mean) / sqrt(var + eps)); statistics updated while `training` is True. Applied to
    `info["final_obs"]` too, so bootstrap values see the same input scale as the policy."""

    def __init__(self, env: Any, clip: float = 10.0, epsilon: float = 1e-8, groups: int | None = None) -> None:
        super().__init__(env)
        shape = tuple(env.single_observation_space.shape)
        self.rms = RunningMeanStd(shape, torch.device(env.device), groups=groups)  # groups: one per seed
        self.clip, self.epsilon, self.training = clip, epsilon, True

    def normalize(self, obs: Tensor) -> Tensor:
        n = obs.shape[0]
        out = (obs - self.rms.rows(self.rms.mean, n)) / torch.sqrt(self.rms.rows(self.rms.var, n) + self.epsilon)
        return out.clamp(-self.clip, self.clip).to(torch.float32)

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        if self.training:
            self.rms.update(obs)
        return self.normalize(obs), info

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self.training:
            self.rms.update(obs)
        if "final_obs" in info:
            info["final_obs"] = self.normalize(info["final_obs"])
        return self.normalize(obs), reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        return {"rms": self.rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rms.load_state_dict(state["rms"])


class NormalizeReward(VecEnvWrapper):
    """reward -> clip(reward / sqrt(Var[discounted return] + eps)), the scaling of Engstrom et al. 2020
    ("Implementation Matters"): only scaled, never shifted, so the sign of rewards is kept."""

    def __init__(self, env: Any, gamma: float = 0.99, clip: float = 10.0, epsilon: float = 1e-8,
                 groups: int | None = None) -> None:
        super().__init__(env)
        self.rms = RunningMeanStd((), torch.device(env.device), groups=groups)  # groups: one per seed
        self.gamma, self.clip, self.epsilon, self.training = gamma, clip, epsilon, True
        self._returns = torch.zeros(env.num_envs, dtype=torch.float64, device=torch.device(env.device))

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict[str, Any]]:
        # every episode starts now, so no discounted return carries over from the episodes that were cut off
        self._returns = torch.zeros_like(self._returns)
        return self.env.reset(seed=seed)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._returns = self._returns * self.gamma + reward
        if self.training:
            self.rms.update(self._returns)
        var = self.rms.rows(self.rms.var, reward.shape[0])
        scaled = (reward / torch.sqrt(var + self.epsilon)).clamp(-self.clip, self.clip).to(torch.float32)
        self._returns = torch.where(terminated | truncated, 0.0, self._returns)
        return obs, scaled, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        return {"rms": self.rms.state_dict(), "returns": self._returns.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rms.load_state_dict(state["rms"])
        self._returns = _restore(state["returns"], (self.num_envs,), self.env.device, "discounted returns",
                                 torch.float64)


def find_wrapper(env: Any, cls: type) -> Any | None:
    """The first wrapper of type `cls` in the chain, or None."""
    while env is not None:
        if isinstance(env, cls):
            return env
        env = getattr(env, "env", None) if isinstance(env, VecEnvWrapper) else None
    return None


def normalizer_state(env: Any) -> dict[str, Any]:
    """The normalisation statistics of a wrapped env, for checkpoints."""
    out: dict[str, Any] = {}
    if (w := find_wrapper(env, NormalizeObservation)) is not None:
        out["obs_rms"] = w.rms.state_dict()
    if (w := find_wrapper(env, NormalizeReward)) is not None:
        out["ret_rms"] = w.rms.state_dict()
    return out


def load_normalizer_state(env: Any, state: dict[str, Any]) -> None:
    if "obs_rms" in state and (w := find_wrapper(env, NormalizeObservation)) is not None:
        w.rms.load_state_dict(state["obs_rms"])
    if "ret_rms" in state and (w := find_wrapper(env, NormalizeReward)) is not None:
        w.rms.load_state_dict(state["ret_rms"])


def sync_normalizers(env: Any) -> None:
    """Under torchrun: merge the ranks' running observation and reward statistics (RunningMeanStd.sync), once per
    rollout, so every rank normalises alike. No-op in one process."""
    for cls in (NormalizeObservation, NormalizeReward):
        if (w := find_wrapper(env, cls)) is not None:
            w.rms.sync()


def set_training(env: Any, training: bool) -> None:
    """Freeze (False) or resume (True) updates of the normalisation statistics, e.g. for evaluation."""
    for cls in (NormalizeObservation, NormalizeReward):
        if (w := find_wrapper(env, cls)) is not None:
            w.training = training


def _restore(value: Any, shape: tuple[int, ...], device: Any, what: str, dtype: torch.dtype | None = None) -> Tensor:
    """A saved tensor checked for shape and finiteness, moved to the env's device."""
    t = torch.as_tensor(value)
    if tuple(t.shape) != shape:
        raise CheckpointError(f"saved {what} have shape {tuple(t.shape)}, this run needs {shape}; "
                              "was the checkpoint made with another --num-envs?")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise CheckpointError(f"saved {what} are not finite; the checkpoint is damaged")
    return t.to(device=torch.device(device), dtype=dtype or t.dtype)


def env_state(env: Any) -> dict[str, Any]:
    """The state of a wrapped env for a checkpoint: every wrapper's `state_dict()`, outermost first, and the base
    env's own (`None` when the base env cannot save its state, as a Gymnasium env cannot)."""
    layers = []
    while isinstance(env, VecEnvWrapper):
        layers.append({"type": type(env).__name__, "state": env.state_dict()})
        env = env.env
    base = env.state_dict() if callable(getattr(env, "state_dict", None)) else None
    return {"wrappers": layers, "base": base}


def load_env_state(env: Any, state: dict[str, Any], restore_base: bool = True) -> None:
    """Restore `env_state()`: the same wrappers in the same order, else CheckpointError. With `restore_base`
    False (or no saved base state) the base env keeps its own state, e.g. a freshly seeded Gymnasium env."""
    chain = []
    while isinstance(env, VecEnvWrapper):
        chain.append(env)
        env = env.env
    saved = [layer["type"] for layer in state["wrappers"]]
    if saved != [type(w).__name__ for w in chain]:
        raise CheckpointError(f"the checkpoint's env wrappers {saved} differ from this run's "
                              f"{[type(w).__name__ for w in chain]}")
    for w, layer in zip(chain, state["wrappers"], strict=True):
        w.load_state_dict(layer["state"])
    if restore_base and state.get("base") is not None:
        try:
            env.load_state_dict(state["base"])
        except ValueError as e:
            raise CheckpointError(f"cannot restore the environment: {e}") from None
