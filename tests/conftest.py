"""Shared fixtures: small custom Gymnasium envs for bad-input tests, and quiet short training runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch


class UnsupportedObsEnv(gym.Env):
    """An env with a MultiBinary observation space, which rlpg's policies do not take (Dict and Tuple spaces are
    flattened by rlpg.envs, see tests/test_env_ids.py)."""

    observation_space = gym.spaces.MultiBinary(4)
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


class HugeRewardEnv(NaNRewardEnv):
    """Finite but huge rewards: the returns overflow to inf, so every update has a non-finite loss."""

    def step(self, action):
        return np.zeros(3, np.float32), 3e38, False, False, {}


class NaNObsEnv(NaNRewardEnv):
    """A NaN in the observation on the third step of every episode."""

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return super().reset(seed=seed)

    def step(self, action):
        self.t += 1
        obs = np.zeros(3, np.float32)
        if self.t == 3:
            obs[1] = np.nan
        return obs, 1.0, False, False, {}


class OffsetSpacesEnv(gym.Env):
    """Discrete spaces that do not start at 0: observations 10..14, actions -1..1 (asserted on every step)."""

    observation_space = gym.spaces.Discrete(5, start=10)
    action_space = gym.spaces.Discrete(3, start=-1)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = 12
        return self.state, {}

    def step(self, action):
        assert -1 <= int(action) <= 1, f"action {action} outside Discrete(3, start=-1)"
        self.state = int(np.clip(self.state + int(action), 10, 14))
        return self.state, float(self.state == 14), self.state == 14, False, {}


class NoTimeLimitEnv(NaNRewardEnv):
    """Episodes never end, and no time limit is registered."""

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


for _id, _cls, _limit in (
    ("RlpgTestUnsupportedObs-v0", UnsupportedObsEnv, 50),
    ("RlpgTestNaNReward-v0", NaNRewardEnv, 50),
    ("RlpgTestHugeReward-v0", HugeRewardEnv, 50),
    ("RlpgTestNaNObs-v0", NaNObsEnv, 50),
    ("RlpgTestOffsetSpaces-v0", OffsetSpacesEnv, 20),
    ("RlpgTestNoTimeLimit-v0", NoTimeLimitEnv, None),
):
    if _id not in gym.envs.registry:
        gym.register(_id, entry_point=_cls, max_episode_steps=_limit)


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(1)  # small MLPs: intra-op threads only add contention on 2 cores
    yield


def pytest_collection_modifyitems(config, items):
    # the learning runs (marked slow, ~1-2 min each) first: pytest-xdist then hands out the short tests as workers
    # free up, rather than leaving one worker alone on a long run at the end
    items.sort(key=lambda item: "slow" not in item.keywords)
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


# a Box action space with different bounds per dimension, and a policy whose mean leaves them on both sides
GAUSSIAN_OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
GAUSSIAN_ACTIONS = gym.spaces.Box(np.array([-1.0, -2.0], np.float32), np.array([1.0, 0.5], np.float32))


@pytest.fixture
def out_of_bounds_checkpoint(tmp_path):
    """A saved Gaussian policy (no training) whose mean lies far outside the action bounds for most observations:
    the last actor layer's weights scaled up, and its bias pushing dimension 0 up and dimension 1 down."""
    from rlpg import checkpoint
    from rlpg.policies import ActorCritic

    torch.manual_seed(0)
    policy = ActorCritic(GAUSSIAN_OBS, GAUSSIAN_ACTIONS, (16, 16))
    with torch.no_grad():
        policy.actor.net[-1].weight.mul_(300.0)
        policy.actor.net[-1].bias.copy_(torch.tensor([2.0, -3.0]))
    payload = {
        "algo": "ppo",
        "env_id": "Test-v0",
        "global_step": 0,
        "eval_mean_return": None,
        "config": {"train": {"hidden_sizes": [16, 16], "activation": "tanh", "log_std_init": 0.0, "clip_obs": 10.0}},
        "spaces": {
            "observation": checkpoint.space_to_dict(GAUSSIAN_OBS),
            "action": checkpoint.space_to_dict(GAUSSIAN_ACTIONS),
        },
        "policy": policy.state_dict(),
        "normalizer": {},
    }
    return checkpoint.save(tmp_path / "run" / "last.pt", payload)


class ImageEnv(gym.Env):
    """Pixels: a bright column at a random x in a 2 x 12 x 12 uint8 frame; reward 1 for the action (0 left, 1 right)
    that points at the column's half. 16 steps an episode."""

    observation_space = gym.spaces.Box(0, 255, (2, 12, 12), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def _frame(self):
        frame = np.zeros((2, 12, 12), np.uint8)
        frame[:, :, self.x] = 255
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = int(self.np_random.integers(12))
        return self._frame(), {}

    def step(self, action):
        reward = float(int(action) == int(self.x >= 6))
        self.x = int(self.np_random.integers(12))
        return self._frame(), reward, False, False, {}


if "RlpgTestImage-v0" not in gym.envs.registry:
    gym.register("RlpgTestImage-v0", entry_point=ImageEnv, max_episode_steps=16)


def run_cli(capsys, *argv):
    """`rlpg ARGV` in-process: (exit code, stdout, stderr)."""
    from rlpg.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *argv, match):
    """`rlpg ARGV` exits with 2 after one `rlpg: error:` line holding `match`, the last thing printed, no traceback."""
    code, _, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.startswith("rlpg: error:")]
    assert code == 2, err
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    assert match in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]
