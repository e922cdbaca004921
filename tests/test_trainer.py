"""The trainer end to end on short runs: TensorBoard tags read back, checkpoints, determinism."""

import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlpg
from rlpg import checkpoint
from rlpg.envs import make

SHORT = dict(
    total_steps=1024, num_envs=4, num_steps=64, eval_episodes=2, num_eval_envs=2, progress=False, eval_interval=0
)


def scalars(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_tags_include_every_parameter_grad_norm(tmp_path):
    # one gradient step per update, so the logged total is exactly the norm of the logged per-parameter norms
    result = rlpg.train(
        "ppo",
        "CartPole-v1",
        backend="gymnasium",
        logdir=str(tmp_path),
        run_name="r",
        histogram_interval=8,
        update_epochs=1,
        num_minibatches=1,
        **SHORT,
    )
    tags = scalars(result.run_dir)
    required = [
        "rollout/episodic_return",
        "rollout/episodic_length",
        "time/sps",
        "train/policy_loss",
        "train/value_loss",
        "train/entropy",
        "train/approx_kl",
        "train/clip_fraction",
        "train/explained_variance",
        "train/learning_rate",
        "grad_norm/total",
    ]
    for tag in required:
        assert tag in tags, tag
    names = [n for n, _ in result.policy.named_parameters()]
    assert len(names) == 12  # 3 linear layers x (weight, bias) for actor and critic
    for n in names:
        assert f"grad_norm/{n}" in tags, n
        assert all(v >= 0 for v in tags[f"grad_norm/{n}"])
    # 1024 / (4 * 64) = 4 updates, one log each
    assert len(tags["grad_norm/total"]) == 4
    # the learning rate is annealed linearly from the preset's 1e-3
    lr = tags["train/learning_rate"]
    assert lr[0] == pytest.approx(1e-3) and lr[-1] == pytest.approx(1e-3 * 0.25)
    # the total is the 2-norm of the per-parameter norms
    per = torch.tensor([tags[f"grad_norm/{n}"] for n in names])
    torch.testing.assert_close(per.norm(dim=0), torch.tensor(tags["grad_norm/total"]), rtol=1e-4, atol=1e-6)
    assert "eval/mean_return" in tags
    assert result.train_seconds > 0
    acc = EventAccumulator(str(result.run_dir), size_guidance={"histograms": 0})
    acc.Reload()
    assert "weights/actor.net.0.weight" in acc.Tags()["histograms"]
    assert "grads/critic.4.bias" in acc.Tags()["histograms"]
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["train"]["env_id"] == "CartPole-v1" and config["agent"]["gamma"] == 0.98  # rl-zoo preset


def test_same_seed_same_run(tmp_path):
    a = rlpg.train("ppo", "CartPole-v1", backend="torch", seed=3, logdir=str(tmp_path), run_name="a", **SHORT)
    b = rlpg.train("ppo", "CartPole-v1", backend="torch", seed=3, logdir=str(tmp_path), run_name="b", **SHORT)
    c = rlpg.train("ppo", "CartPole-v1", backend="torch", seed=4, logdir=str(tmp_path), run_name="c", **SHORT)
    for (n, p), (_, q) in zip(a.policy.named_parameters(), b.policy.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    assert any(not torch.equal(p, q) for p, q in zip(a.policy.parameters(), c.policy.parameters(), strict=True))


def test_save_then_load_gives_identical_actions(tmp_path):
    result = rlpg.train(
        "ppo", "Pendulum-v1", backend="torch", normalize_obs=True, logdir=str(tmp_path), run_name="p", **SHORT
    )
    loaded = rlpg.load_policy(result.run_dir / "last.pt")
    env = make("Pendulum-v1", 5, backend="torch", normalize_obs=False)
    raw, _ = env.reset(seed=0)
    # the trainer's policy sees normalised observations; the loaded one normalises by itself
    payload = checkpoint.load(result.run_dir / "last.pt")
    rms = payload["normalizer"]["obs_rms"]
    normed = ((raw - rms["mean"]) / torch.sqrt(rms["var"] + 1e-8)).clamp(-10, 10).float()
    with torch.no_grad():
        expected = result.policy.dist(normed).mode
    torch.testing.assert_close(loaded.predict(raw), expected)
    single = loaded.predict(raw[0].numpy())
    assert single.shape == (1,)
    torch.testing.assert_close(torch.as_tensor(single), expected[0])
    # a resumed optimizer state is present and loads
    assert "optimizer" in payload["agent"]
    assert payload["global_step"] == 1024


def test_freeze_and_init_from_fine_tune(tmp_path):
    base = rlpg.train("ppo", "CartPole-v1", backend="torch", logdir=str(tmp_path), run_name="base", **SHORT)
    tuned = rlpg.train(
        "ppo",
        "CartPole-v1",
        backend="torch",
        logdir=str(tmp_path),
        run_name="ft",
        init_from=str(base.run_dir),
        freeze=("actor.net.0", "actor.net.2"),
        **SHORT,
    )
    pre = dict(base.policy.named_parameters())
    post = dict(tuned.policy.named_parameters())
    for n in ("actor.net.0.weight", "actor.net.0.bias", "actor.net.2.weight"):
        assert torch.equal(pre[n], post[n]), n
    assert not torch.equal(pre["actor.net.4.weight"], post["actor.net.4.weight"])
    tags = scalars(tuned.run_dir)
    assert "grad_norm/actor.net.4.weight" in tags and "grad_norm/actor.net.0.weight" not in tags


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_other_optimizers_train(tmp_path, optimizer):
    result = rlpg.train(
        "ppo",
        "CartPole-v1",
        backend="torch",
        optimizer=optimizer,
        learning_rate=1e-3,
        logdir=str(tmp_path),
        run_name=optimizer,
        **SHORT,
    )
    opt = result.agent.optimizer
    assert type(opt).__name__.lower() == optimizer
    assert opt.param_groups[0]["momentum"] == 0.9


def test_none_can_be_set_and_presets_layer_under_user_values():
    from rlpg.trainer import resolve_configs

    cfg, agent = resolve_configs("ppo", "CartPole-v1", {"backend": "gymnasium", "max_grad_norm": None, "gamma": 0.9})
    assert agent.max_grad_norm is None and agent.gamma == 0.9
    assert agent.update_epochs == 20 and cfg.num_envs == 8  # rl-zoo preset for the gymnasium backend
    cfg, agent = resolve_configs("ppo", "CartPole-v1", {})
    assert cfg.backend == "auto" and cfg.num_envs == 64 and agent.max_grad_norm == 0.5  # torch preset


def test_mujoco_presets_set_per_task_settings_and_the_network():
    from rlpg.trainer import resolve_configs

    cfg, agent = resolve_configs("ppo", "HalfCheetah-v5", {})  # rl-zoo's: its own network, one env
    assert cfg.hidden_sizes == (256, 256) and cfg.activation == "relu" and cfg.log_std_init == -2.0
    assert cfg.num_envs == 1 and agent.update_epochs == 20 and agent.anneal_lr is False
    cfg, agent = resolve_configs("ppo", "HalfCheetah-v5", {"hidden_sizes": (64, 64)})  # the user's flag wins
    assert cfg.hidden_sizes == (64, 64) and cfg.activation == "relu"
    cfg, agent = resolve_configs("ppo", "Hopper-v5", {})
    assert agent.num_minibatches == 16 and cfg.hidden_sizes == (64, 64) and cfg.num_envs == 8
    cfg, agent = resolve_configs("ppo", "Walker2d-v5", {})
    assert agent.num_minibatches == 32
    for algo in ("trpo", "npg"):
        cfg, agent = resolve_configs(algo, "HalfCheetah-v5", {})
        assert (cfg.num_envs, cfg.num_steps, cfg.log_std_init) == (16, 64, -0.5)


def test_runs_started_together_get_their_own_directories(tmp_path):
    from rlpg.trainer import Trainer, resolve_configs

    cfg, agent = resolve_configs("ppo", "CartPole-v1", dict(SHORT, logdir=str(tmp_path), total_steps=256))
    a, b = Trainer(cfg, agent), Trainer(cfg, agent)
    ra, rb = a.run(), b.run()
    assert ra.run_dir != rb.run_dir and ra.run_dir.is_dir() and rb.run_dir.is_dir()


def test_config_json_records_the_backend_and_device_used(tmp_path):
    result = rlpg.train("ppo", "CartPole-v1", logdir=str(tmp_path), run_name="auto", **SHORT)  # backend "auto"
    saved = json.loads((result.run_dir / "config.json").read_text())["train"]
    assert saved["backend"] == "torch" and saved["device"] == "cpu"
    gym_run = rlpg.train("ppo", "Acrobot-v1", backend="gymnasium", logdir=str(tmp_path), run_name="g", **SHORT)
    assert json.loads((gym_run.run_dir / "config.json").read_text())["train"]["backend"] == "gymnasium"


def test_periodic_evaluations_start_from_other_states_each_time_reproducibly(tmp_path, monkeypatch):
    from rlpg import trainer

    seeds = []
    real = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda env, policy, n, seed: seeds.append(seed) or real(env, policy, n,
                                                                                                      seed=seed))
    kw = dict(SHORT, eval_interval=256, seed=7)
    rlpg.train("ppo", "CartPole-v1", backend="torch", logdir=str(tmp_path), run_name="a", **kw)
    first, seeds[:] = list(seeds), []
    rlpg.train("ppo", "CartPole-v1", backend="torch", logdir=str(tmp_path), run_name="b", **kw)
    assert seeds == first  # reproducible
    periodic, final = first[:-1], first[-1]
    assert len(periodic) == 3 and len(set(periodic)) == 3  # 256, 512, 768: each from its own start states
    assert final == 7 + 10_000  # the final policy is always scored on the run's fixed evaluation seed


def test_discrete_spaces_that_do_not_start_at_zero(tmp_path):
    # RlpgTestOffsetSpaces-v0: observations 10..14, actions -1..1; the env asserts every action it gets
    result = rlpg.train("ppo", "RlpgTestOffsetSpaces-v0", logdir=str(tmp_path), run_name="o",
                        **dict(SHORT, total_steps=2048))
    policy = rlpg.load_policy(result.run_dir / "last.pt")
    obs = np.arange(10, 15)
    actions = policy.predict(obs)
    assert set(actions.tolist()) <= {-1, 0, 1}
    with torch.no_grad():  # the policy's own index, shifted by the space's start
        index = result.policy.dist(torch.as_tensor(obs)).mode
    assert actions.tolist() == (index - 1).tolist()
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from rlpg.export import export_onnx

    out = export_onnx(result.run_dir / "last.pt", tmp_path / "o.onnx")
    onnx_actions = ort.InferenceSession(str(out)).run(None, {"obs": obs.astype(np.float32)})[0]
    assert onnx_actions.tolist() == actions.tolist()


def test_continuous_tasks_without_a_preset_normalise_observations_and_rewards_by_default():
    from rlpg.trainer import resolve_configs

    cfg, _ = resolve_configs("ppo", "MountainCarContinuous-v0", {})  # Box actions, nothing tuned
    assert cfg.normalize_obs is True and cfg.normalize_reward is True
    cfg, _ = resolve_configs("trpo", "InvertedPendulum-v5", {})  # a Gymnasium (MuJoCo) task
    assert cfg.normalize_obs is True and cfg.normalize_reward is True
    cfg, _ = resolve_configs("ppo", "MountainCarContinuous-v0", {"normalize_reward": False})  # the user decides
    assert cfg.normalize_obs is True and cfg.normalize_reward is False
    cfg, _ = resolve_configs("ppo", "Acrobot-v1", {})  # discrete actions
    assert cfg.normalize_obs is False and cfg.normalize_reward is False
    cfg, _ = resolve_configs("ppo", "Pendulum-v1", {})  # a preset tuned without normalisation keeps it off
    assert cfg.normalize_obs is False and cfg.normalize_reward is False
    cfg, _ = resolve_configs("trpo", "CartPole-v1", {})  # a preset that turns it on
    assert cfg.normalize_reward is True


def test_the_start_line_says_which_preset_and_backend_apply(capsys, tmp_path):
    from rlpg.cli import main

    flags = ["--total-steps", "256", "--num-eval-envs", "1", "--eval-episodes", "1", "--progress", "false",
             "--logdir", str(tmp_path)]
    assert main(["train", *flags]) == 0
    out = capsys.readouterr().out
    assert "(torch backend, preset ppo/CartPole-v1 + ppo/CartPole-v1/torch, 64 envs" in out
    assert main(["train", "--algo", "reinforce", "--env", "MountainCarContinuous-v0", "--num-envs", "2",
                 "--num-steps", "128", *flags]) == 0
    out = capsys.readouterr().out
    assert "(torch backend, no preset: defaults, observation and reward normalisation on, 2 envs" in out
    assert main(["train", "--env", "MountainCarContinuous-v0", "--num-envs", "2", "--num-steps", "128", *flags]) == 0
    assert "(torch backend, preset ppo/MountainCarContinuous-v0, 2 envs" in capsys.readouterr().out


def test_all_finite_tells_nan_and_inf_weights_and_passes_an_overflowing_norm():
    """The check after each update (a non-finite weight undoes it): its quick norm test and, where a norm is not
    finite, the exact element test."""
    from rlpg.trainer import all_finite

    ok = [torch.randn(3, 4), torch.randn(5)]
    assert all_finite(ok) and all_finite([])
    for bad in (float("nan"), float("inf"), -float("inf")):
        poisoned = [ok[0], ok[1].clone()]
        poisoned[1][2] = bad
        assert not all_finite(poisoned)
    huge = [torch.full((4,), 3e38), torch.ones(2)]  # finite, but its norm overflows float32
    assert not torch.isfinite(torch.linalg.vector_norm(huge[0])) and all_finite(huge)
