"""Runs that last: resume equals the uninterrupted run bit for bit on torch-native envs, TensorBoard curves continue
without duplicates, periodic checkpoints, run-directory rules, and non-finite updates skipped."""

import json
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlpg
from rlpg import checkpoint
from rlpg.errors import ConfigError, NonFiniteError
from rlpg.trainer import Trainer, resolve_configs

# 8 updates, evaluations at 1024 and 2048 steps (best.pt chosen along the way), both normalisers on
RUN = dict(total_steps=4096, num_envs=8, num_steps=64, eval_episodes=2, num_eval_envs=2, progress=False,
           eval_interval=1024, backend="torch", normalize_obs=True, normalize_reward=True)


def scalars(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def stopped_run(algo, env_id, logdir, stop_after, **kw):
    """A run stopped (as by SIGTERM) once `stop_after` updates are done."""
    cfg, agent_cfg = resolve_configs(algo, env_id, dict(RUN, logdir=str(logdir), run_name="part", **kw))
    trainer = Trainer(cfg, agent_cfg)
    update = trainer.agent.update

    def update_then_stop(batch, progress):
        out = update(batch, progress)
        if trainer.iteration + 1 == stop_after:  # the trainer counts this update once it returns
            trainer.request_stop()
        return out

    trainer.agent.update = update_then_stop
    return trainer.run()


@pytest.mark.parametrize("algo, env_id", [("ppo", "CartPole-v1"), ("trpo", "Pendulum-v1"), ("npg", "Acrobot-v1"),
                                          ("reinforce", "CartPole-v1")])
def test_resumed_run_equals_the_uninterrupted_one_bit_for_bit(tmp_path, algo, env_id):
    full = rlpg.train(algo, env_id, logdir=str(tmp_path), run_name="full", **RUN)
    part = stopped_run(algo, env_id, tmp_path, stop_after=3)
    assert part.interrupted and part.global_step == 3 * 512 and part.saved_step == 3 * 512
    assert checkpoint.load(part.run_dir / "last.pt")["iteration"] == 3
    resumed = rlpg.train(resume=part.run_dir)
    assert not resumed.interrupted and resumed.run_dir == part.run_dir and resumed.global_step == 4096
    for (name, p), (_, q) in zip(full.policy.named_parameters(), resumed.policy.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    assert resumed.eval_mean_return == full.eval_mean_return and resumed.best_eval_return == full.best_eval_return
    a, b = scalars(full.run_dir), scalars(resumed.run_dir)
    assert set(a) == set(b)
    for tag in a:
        steps = [s for s, _ in b[tag]]
        assert steps == sorted(set(steps)), tag  # continued: no duplicated or rewound point
        if not tag.startswith("time/"):
            assert a[tag] == b[tag], tag  # the same logged values at the same steps
    # the optimizer state went on too (Adam's step count, NPG/TRPO's critic optimizer)
    sa = checkpoint.load(full.run_dir / "last.pt")["agent"]
    sb = checkpoint.load(resumed.run_dir / "last.pt")["agent"]
    for (_, x), (_, y) in zip(checkpoint.tensors(sa), checkpoint.tensors(sb), strict=True):
        assert torch.equal(x, y)


def test_a_finished_run_continues_with_more_steps_and_events_are_purged(tmp_path):
    first = rlpg.train("ppo", "CartPole-v1", logdir=str(tmp_path), run_name="r", **dict(RUN, total_steps=1024))
    with pytest.raises(ConfigError, match="already finished its 1024 steps"):
        rlpg.train(resume=first.run_dir)
    # simulate a crash after step 1024 had logged more points: they must not survive the resume
    with torch.utils.tensorboard.SummaryWriter(str(first.run_dir)) as w:
        w.add_scalar("train/value_loss", 123.0, 1536)
    longer = rlpg.train(resume=first.run_dir, total_steps=2048)
    assert longer.global_step == 2048
    tags = scalars(longer.run_dir)
    assert [s for s, _ in tags["train/value_loss"]] == [512, 1024, 1536, 2048]
    assert 123.0 not in [v for _, v in tags["train/value_loss"]]
    # the hparams summary describes the finished run once, at its new end
    assert [s for s, _ in tags["hparam/eval_mean_return"]] == [2048]
    saved = checkpoint.load(longer.run_dir / "last.pt")
    assert saved["config"]["train"]["total_steps"] == 2048 and saved["global_step"] == 2048


def test_resume_refuses_to_change_what_the_run_learns_from(tmp_path):
    part = stopped_run("ppo", "CartPole-v1", tmp_path, stop_after=1)
    with pytest.raises(ConfigError, match="--learning-rate cannot change when resuming"):
        rlpg.train(resume=part.run_dir, learning_rate=0.1)
    with pytest.raises(ConfigError, match="trained with ppo"):
        rlpg.train("trpo", resume=part.run_dir)
    resumed = rlpg.train(resume=part.run_dir, eval_episodes=3, progress=False)  # logging settings may change
    assert resumed.global_step == 4096


def test_gymnasium_backend_resumes_from_the_saved_step_with_fresh_episodes(tmp_path):
    part = stopped_run("ppo", "CartPole-v1", tmp_path, stop_after=2, **{"backend": "gymnasium"})
    saved = checkpoint.load(part.run_dir / "last.pt")
    assert saved["resume"]["env"]["base"] is None and saved["config"]["train"]["backend"] == "gymnasium"
    resumed = rlpg.train(resume=part.run_dir)
    assert resumed.global_step == 4096
    steps = [s for s, _ in scalars(resumed.run_dir)["train/value_loss"]]
    assert steps == list(range(512, 4097, 512))


def test_last_pt_is_written_periodically_by_steps_and_by_time(tmp_path, monkeypatch):
    saves = []
    real = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda path, payload: saves.append((path.name, payload["global_step"]))
                        or real(path, payload))
    rlpg.train("ppo", "CartPole-v1", logdir=str(tmp_path), run_name="s", checkpoint_interval=1500,
               checkpoint_seconds=0, **dict(RUN, eval_interval=0))
    assert [s for name, s in saves if name == "last.pt"] == [1536, 3072, 4096]  # crossing 1500 and 3000, the end
    saves.clear()
    rlpg.train("ppo", "CartPole-v1", logdir=str(tmp_path), run_name="t", checkpoint_interval=0,
               checkpoint_seconds=1e-9, **dict(RUN, eval_interval=0))
    assert [s for name, s in saves if name == "last.pt"] == list(range(512, 4097, 512))


def test_an_existing_run_directory_is_never_reused_silently(tmp_path):
    kw = dict(RUN, total_steps=512, eval_interval=0, logdir=str(tmp_path), run_name="same")
    first = rlpg.train("ppo", "CartPole-v1", **kw)
    best = (first.run_dir / "best.pt").read_bytes()
    with pytest.raises(ConfigError, match="already exists; continue it with --resume"):
        rlpg.train("ppo", "CartPole-v1", **dict(kw, seed=2))
    assert (first.run_dir / "best.pt").read_bytes() == best
    second = rlpg.train("ppo", "CartPole-v1", overwrite=True, **dict(kw, seed=2))
    assert json.loads((second.run_dir / "config.json").read_text())["train"]["seed"] == 2
    assert len(list(second.run_dir.glob("events.out.tfevents.*"))) == 2  # its own events and hparams, no old ones
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(ConfigError, match="not an rlpg run directory"):
        rlpg.train("ppo", "CartPole-v1", overwrite=True, **dict(kw, run_name="photos"))
    assert (foreign / "cat.jpg").read_bytes() == b"meow"


def test_a_non_finite_update_is_skipped_with_weights_and_optimizer_untouched(tmp_path):
    cfg, agent_cfg = resolve_configs("ppo", "CartPole-v1", dict(RUN, logdir=str(tmp_path), run_name="nf",
                                                                eval_interval=0))
    trainer = Trainer(cfg, agent_cfg)
    update, seen = trainer.agent.update, {}

    def update_poisoned_once(batch, progress):
        if trainer.iteration == 2:  # half an update applied, then a NaN
            seen["before"] = [p.detach().clone() for p in trainer.policy.parameters()]
            seen["adam"] = checkpoint.tensors(trainer.agent.state_dict())
            seen["adam"] = [t.clone() for _, t in seen["adam"]]
            update(batch, progress)
            raise NonFiniteError("non-finite loss")
        if trainer.iteration == 3:
            seen["after"] = [p.detach().clone() for p in trainer.policy.parameters()]
            seen["adam_after"] = [t.clone() for _, t in checkpoint.tensors(trainer.agent.state_dict())]
        return update(batch, progress)

    trainer.agent.update = update_poisoned_once
    result = trainer.run()
    assert not result.interrupted and result.skipped_updates == 1
    for a, b in zip(seen["before"], seen["after"], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(seen["adam"], seen["adam_after"], strict=True):
        assert torch.equal(a, b)
    logged = scalars(result.run_dir)["train/skipped_updates"]
    assert [v for _, v in logged] == [0, 0, 1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("target_kl", [None, 0.5])
def test_a_non_finite_update_of_k_seeds_is_undone_with_every_optimizer_state(tmp_path, target_kl):
    """K seeds in one batch: Adam over the stacked parameters, or with target_kl SeedAdam, which replaces its step
    counts rather than updating them in place; undoing the third update must put those back too."""
    from rlpg.seeds import SeedsTrainer

    cfg, agent_cfg = resolve_configs("ppo", "CartPole-v1", dict(RUN, total_steps=2048, logdir=str(tmp_path),
                                                                run_name="k", eval_interval=0, target_kl=target_kl))
    trainer = SeedsTrainer(cfg, agent_cfg, [1, 2])
    update, seen = trainer.agent.update, {}

    def state():
        return ([p.detach().clone() for p in trainer.policy.parameters()],
                [t.clone() for _, t in checkpoint.tensors(trainer.agent.state_dict())])

    def update_poisoned_once(batch, progress):
        if trainer.iteration == 2:
            seen["before"] = state()
            update(batch, progress)
            raise NonFiniteError("non-finite loss")
        if trainer.iteration == 3:
            seen["after"] = state()
        return update(batch, progress)

    trainer.agent.update = update_poisoned_once
    assert trainer.run().skipped_updates == 1
    for before, after in zip(seen["before"], seen["after"], strict=True):
        assert len(before) == len(after) > 0
        for a, b in zip(before, after, strict=True):
            assert torch.equal(a, b)


def test_non_finite_updates_in_a_row_stop_the_run_keeping_the_last_good_checkpoint(tmp_path):
    kw = dict(RUN, logdir=str(tmp_path), run_name="huge", env_id="RlpgTestHugeReward-v0", backend="gymnasium",
              normalize_obs=False, normalize_reward=False, max_skipped_updates=3, eval_interval=0)
    cfg, agent_cfg = resolve_configs("ppo", None, kw)
    trainer = Trainer(cfg, agent_cfg)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    with pytest.raises(NonFiniteError, match="3 updates in a row had a non-finite loss or gradient"):
        trainer.run()
    assert trainer.skipped_updates == 3
    for a, b in zip(before, trainer.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not (trainer.run_dir / "last.pt").exists()  # nothing finite and consistent to save after the first update


def test_batch_of_one_advantages_are_not_normalised_to_zero():
    from rlpg.advantage import normalize

    one = torch.tensor([2.5])
    assert torch.equal(normalize(one), one)  # centring one sample would give 0 and the actor would never move
    x = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(normalize(x), (x - 2.0) / (math.sqrt(2.0) + 1e-8))


def test_minibatch_of_one_moves_the_actor(tmp_path):
    cfg, agent_cfg = resolve_configs("ppo", "CartPole-v1", dict(
        RUN, logdir=str(tmp_path), run_name="one", total_steps=64, num_envs=1, num_minibatches=64, update_epochs=1,
        eval_interval=0, normalize_reward=False, normalize_obs=False, max_grad_norm=None))
    trainer = Trainer(cfg, agent_cfg)
    initial = trainer.policy.actor.net[4].weight.detach().clone()
    trainer.run()
    assert not torch.equal(initial, trainer.policy.actor.net[4].weight)


def test_a_second_signal_mid_update_stops_at_once_and_keeps_the_last_consistent_checkpoint(tmp_path):
    import os
    import signal

    cfg, agent_cfg = resolve_configs("ppo", "CartPole-v1", dict(RUN, logdir=str(tmp_path), run_name="sig",
                                                                eval_interval=0, checkpoint_interval=512,
                                                                checkpoint_seconds=0))
    trainer = Trainer(cfg, agent_cfg)
    update = trainer.agent.update

    def update_interrupted(batch, progress):
        if trainer.iteration == 3:
            os.kill(os.getpid(), signal.SIGINT)  # first: finish this update, then stop
            os.kill(os.getpid(), signal.SIGINT)  # second: stop now, half way through the iteration
        return update(batch, progress)

    trainer.agent.update = update_interrupted
    # Python's own Ctrl-C handler during the run, whatever this process inherited (a shell starts background jobs
    # with SIGINT ignored): the run must give back exactly the handler it found
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = trainer.run()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert result.interrupted and result.signal == signal.SIGINT
    assert result.saved_step == 3 * 512  # the periodic last.pt before the half-done iteration is what remains
    assert checkpoint.load(result.run_dir / "last.pt")["global_step"] == 3 * 512
    resumed = rlpg.train(resume=result.run_dir)
    assert resumed.global_step == 4096
