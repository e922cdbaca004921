"""Image observations: detection from the space, the Nature-DQN and MinAtar encoders, shared or separate trunks,
uint8 storage in the rollout, learning, checkpoints and ONNX export of CNN policies."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlpg
from rlpg.encoders import ImageEncoder, image_shape, to_float
from rlpg.errors import ConfigError
from rlpg.policies import ActorCritic

ATARI = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
RGB = gym.spaces.Box(0, 255, (84, 84, 3), np.uint8)
MINATAR = gym.spaces.Box(0, 1, (10, 10, 6), np.bool_)


def test_image_spaces_are_recognised_with_their_channel_axis():
    assert image_shape(ATARI) == (4, 84, 84)
    assert image_shape(RGB) == (3, 84, 84)
    assert image_shape(MINATAR) == (6, 10, 10)
    assert image_shape(gym.spaces.Box(0.0, 1.0, (3, 64, 64), np.float32)) is None  # float features, not pixels
    assert image_shape(gym.spaces.Box(0, 255, (84, 84), np.uint8)) is None
    assert image_shape(gym.spaces.Discrete(3)) is None


def test_to_float_scales_pixels_and_moves_channels_first():
    obs = torch.randint(0, 256, (5, 84, 84, 3), dtype=torch.uint8)
    x = to_float(obs, RGB, torch.float32)
    assert x.shape == (5, 3, 84, 84) and x.dtype == torch.float32
    torch.testing.assert_close(x, obs.permute(0, 3, 1, 2).float() / 255)
    flags = torch.rand(2, 10, 10, 6) > 0.5
    torch.testing.assert_close(to_float(flags, MINATAR, torch.float32), flags.permute(0, 3, 1, 2).float())


def test_encoders_are_the_nature_dqn_torso_and_minatars_network():
    nature = ImageEncoder((4, 84, 84))
    convs = [m for m in nature.convs if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)),
                                                                          (64, (3, 3), (1, 1))]
    assert nature.fc[0].in_features == 64 * 7 * 7 and nature.out_dim == 512  # Mnih et al. 2015
    small = ImageEncoder((6, 10, 10))
    (conv,) = [m for m in small.convs if isinstance(m, torch.nn.Conv2d)]
    assert (conv.out_channels, conv.kernel_size) == (16, (3, 3)) and small.fc[0].in_features == 16 * 8 * 8
    assert small(torch.zeros(3, 6, 10, 10)).shape == (3, 128)


def test_shared_encoder_is_one_module_trained_by_both_losses():
    shared = ActorCritic(ATARI, gym.spaces.Discrete(6), shared_encoder=True)
    separate = ActorCritic(ATARI, gym.spaces.Discrete(6))
    assert shared.actor.net[0] is shared.critic[0]
    assert separate.actor.net[0] is not separate.critic[0]
    n_shared = sum(p.numel() for p in shared.parameters())
    n_separate = sum(p.numel() for p in separate.parameters())
    assert n_separate - n_shared == sum(p.numel() for p in separate.critic[0].parameters())
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    shared.value(obs).sum().backward()
    assert shared.actor.net[0].convs[0].weight.grad.abs().sum() > 0  # the critic's loss reaches the shared torso
    with pytest.raises(ConfigError, match="applies to image observations"):
        ActorCritic(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), shared_encoder=True)


def test_image_runs_store_uint8_learn_and_export(tmp_path):
    from rlpg.rollout import Collector
    from rlpg.runs import resolve_configs
    from rlpg.trainer import Trainer

    kw = dict(total_steps=12_288, num_envs=8, num_steps=64, num_minibatches=4, update_epochs=4, learning_rate=2.5e-3,
              eval_episodes=8, num_eval_envs=4, eval_interval=0, progress=False, logdir=str(tmp_path), run_name="img")
    cfg, agent_cfg = resolve_configs("ppo", "RlpgTestImage-v0", kw)
    assert cfg.shared_encoder is True and cfg.normalize_obs is False  # PPO's convention; pixels are not normalised
    trainer = Trainer(cfg, agent_cfg)
    rollout = Collector(trainer.env, trainer.policy, 4).collect()
    assert rollout.obs.dtype == torch.uint8 and rollout.obs.shape == (4, 8, 2, 12, 12)
    result = trainer.run()
    assert result.eval_mean_return >= 14  # 16 steps, a reward for reading the frame right: random play gives 8
    policy = rlpg.load_policy(result.run_dir / "last.pt")
    frames = np.stack([np.zeros((2, 12, 12), np.uint8) for _ in range(12)])
    for x in range(12):
        frames[x, :, :, x] = 255
    assert policy.predict(frames).tolist() == [int(x >= 6) for x in range(12)]
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from rlpg.export import export_onnx

    out = export_onnx(result.run_dir / "last.pt", tmp_path / "img.onnx")
    onnx_actions = ort.InferenceSession(str(out)).run(None, {"obs": frames})[0]
    assert onnx_actions.tolist() == policy.predict(frames).tolist()


def test_trust_region_agents_keep_separate_encoders_and_refuse_a_shared_one(tmp_path):
    from rlpg.runs import resolve_configs

    cfg, _ = resolve_configs("trpo", "RlpgTestImage-v0", {})
    assert cfg.shared_encoder is False
    with pytest.raises(ConfigError, match="does not suit trpo"):
        resolve_configs("trpo", "RlpgTestImage-v0", {"shared_encoder": True})
    result = rlpg.train("npg", "RlpgTestImage-v0", total_steps=1024, num_envs=4, num_steps=128, vf_minibatches=4,
                        eval_episodes=2, num_eval_envs=2, progress=False, logdir=str(tmp_path))
    assert np.isfinite(result.eval_mean_return)  # the Fisher-vector products run through the convolutions
