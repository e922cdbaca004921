import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlpg import checkpoint
from rlpg.errors import CheckpointError


def payload(**extra):
    """The smallest payload `checkpoint.load` accepts, plus `extra`."""
    base = {"algo": "ppo", "env_id": "CartPole-v1", "global_step": 0, "config": {"train": {}}, "policy": {},
            "spaces": {"observation": {}, "action": {}}}
    return {**base, **extra}


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, payload(policy={"w": torch.ones(3)}))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, payload(policy={"w": torch.zeros(3)}))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
    assert torch.equal(checkpoint.load(path)["policy"]["w"], torch.ones(3))


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        checkpoint.load(tmp_path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(bad)
    truncated = tmp_path / "trunc.pt"
    checkpoint.save(truncated, payload(policy={"w": torch.randn(1000)}))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an rlpg checkpoint"):
        checkpoint.load(foreign)


def test_run_dir_prefers_best(tmp_path):
    checkpoint.save(tmp_path / "last.pt", payload(tag="last"))
    assert checkpoint.resolve(tmp_path).name == "last.pt"
    checkpoint.save(tmp_path / "best.pt", payload(tag="best"))
    assert checkpoint.load(tmp_path)["tag"] == "best"


@pytest.mark.parametrize(
    "space",
    [gym.spaces.Box(-1, 2, (3,), np.float32), gym.spaces.Discrete(4, start=1), gym.spaces.MultiDiscrete([2, 3]),
     gym.spaces.MultiDiscrete([2, 3], start=[-1, 5])],
)
def test_spaces_round_trip_through_weights_only_load(tmp_path, space):
    checkpoint.save(tmp_path / "s.pt", payload(space=checkpoint.space_to_dict(space)))
    back = checkpoint.space_from_dict(checkpoint.load(tmp_path / "s.pt")["space"])
    assert back == space


def test_rng_state_round_trip(tmp_path):
    import random

    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    checkpoint.save(tmp_path / "r.pt", payload(rng=checkpoint.rng_state()))
    a = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "r.pt")["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert os.listdir(tmp_path) == ["r.pt"]


def test_orphaned_temp_files_are_removed_by_the_next_save(tmp_path):
    # a writer killed between mkstemp and rename leaves .last.pt.XXXX.tmp behind
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".best.pt.zzz.tmp").write_bytes(b"other checkpoint's")
    checkpoint.save(tmp_path / "last.pt", payload())
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.pt.zzz.tmp", "last.pt"]


def test_non_finite_payload_is_refused_and_the_old_file_kept(tmp_path):
    from rlpg.errors import NonFiniteError

    path = tmp_path / "last.pt"
    checkpoint.save(path, payload(policy={"w": torch.ones(2)}))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteError, match="policy.w is not finite"):
            checkpoint.save(path, payload(policy={"w": torch.tensor([1.0, bad])}))
        with pytest.raises(NonFiniteError, match="agent.optimizer.state.0.exp_avg"):
            checkpoint.save(path, payload(agent={"optimizer": {"state": {0: {"exp_avg": torch.tensor([bad])}}}}))
    assert torch.equal(checkpoint.load(path)["policy"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_loading_non_finite_incomplete_or_unsafe_files_is_a_clear_error(tmp_path):
    nan = tmp_path / "nan.pt"
    torch.save({"format": checkpoint.FORMAT, **payload(normalizer={"obs_rms": {"mean": torch.tensor([float("nan")])}})},
               nan)
    with pytest.raises(CheckpointError, match="non-finite values"):
        checkpoint.load(nan)
    for key in ("policy", "spaces", "config", "algo"):
        partial = tmp_path / f"no_{key}.pt"
        data = payload()
        del data[key]
        torch.save({"format": checkpoint.FORMAT, **data}, partial)
        with pytest.raises(CheckpointError, match=f"lacks {key}"):
            checkpoint.load(partial)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": checkpoint.FORMAT, **payload(), "obj": gym.spaces.Discrete(2)}, unsafe)
    with pytest.raises(CheckpointError, match="refused to load .* for safety"):
        checkpoint.load(unsafe)


def test_predict_clips_box_actions_to_the_action_space(out_of_bounds_checkpoint):
    policy = checkpoint.load_policy(out_of_bounds_checkpoint)
    low, high = torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 0.5])  # conftest's GAUSSIAN_ACTIONS
    assert torch.equal(torch.as_tensor(policy.policy.action_space.low), low)
    obs = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    raw = policy.predict(obs, clip=False)
    with torch.no_grad():
        assert torch.equal(raw, policy.policy.dist(obs).mean)  # clip=False: the Gaussian mean itself
    assert (raw < low).any() and (raw > high).any() and ((raw > low) & (raw < high)).any()  # the test bites
    clipped = policy.predict(obs)
    assert torch.equal(clipped, torch.maximum(torch.minimum(raw, high), low))
    # numpy and a single observation take the same path
    np.testing.assert_array_equal(policy.predict(obs[0].numpy()), clipped[0].numpy())
    # a sample is clipped too; with clip=False it is the unclipped sample
    torch.manual_seed(2)
    sample = policy.predict(obs, deterministic=False)
    torch.manual_seed(2)
    raw_sample = policy.predict(obs, deterministic=False, clip=False)
    assert not torch.equal(raw_sample, raw) and ((raw_sample < low) | (raw_sample > high)).any()
    assert torch.equal(sample, torch.maximum(torch.minimum(raw_sample, high), low))


def test_predict_leaves_discrete_actions_alone(tmp_path):
    from rlpg.policies import ActorCritic

    obs_space, act_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Discrete(4)
    policy = ActorCritic(obs_space, act_space, (8,))
    saved = payload(
        config={"train": {"hidden_sizes": [8], "activation": "tanh", "log_std_init": 0.0, "clip_obs": 10.0}},
        spaces={"observation": checkpoint.space_to_dict(obs_space), "action": checkpoint.space_to_dict(act_space)},
        policy=policy.state_dict(),
    )
    trained = checkpoint.load_policy(checkpoint.save(tmp_path / "d.pt", saved))
    obs = torch.randn(10, 3)
    assert torch.equal(trained.predict(obs), trained.predict(obs, clip=False))
    assert trained.predict(obs).dtype == torch.int64
