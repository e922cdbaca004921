"""Shared fixtures: small custom Gymnasium envs for bad-input tests, and quiet short training runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch


class DictObsEnv(gym.Env):
    """An env with a Dict observation space, which rlpg's MLP policies do not support."""

    observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,))})
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


class NaNRewardEnv(gym.Env):
    """Returns NaN rewards: the value loss becomes non-finite on the first update."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), float("nan"), False, False, {}


for _id, _cls in (("RlpgTestDictObs-v0", DictObsEnv), ("RlpgTestNaNReward-v0", NaNRewardEnv)):
    if _id not in gym.envs.registry:
        gym.register(_id, entry_point=_cls, max_episode_steps=50)


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(1)  # small MLPs: intra-op threads only add contention on 2 cores
    yield


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
