"""`rlpg train --seeds`: K seeds trained in one process write K single-run directories; seed k of the batched run is
a single run of seed k (parameters, optimizer state, normalisers, evaluation), resumes bit for bit, and each seed's
directory works with eval and --resume as a single run's."""

import json
import shutil
import signal

import pytest
import torch
from conftest import one_line_error, run_cli

import rlpg
from rlpg import checkpoint
from rlpg.errors import ConfigError
from rlpg.logger import read_csv
from rlpg.seeds import SeedsTrainer, parse_seeds, seed_agent_state, stack_agent_states
from rlpg.trainer import resolve_configs

# 4 updates of 256 steps, an evaluation after the second (best.pt chosen along the way)
RUN = dict(total_steps=1024, num_envs=8, num_steps=32, eval_episodes=4, num_eval_envs=2, progress=False,
           eval_interval=512)
SMALL = {"ppo": dict(num_minibatches=4, update_epochs=2), "reinforce": dict(num_minibatches=2),
         "trpo": dict(vf_epochs=2, vf_minibatches=2), "npg": dict(vf_epochs=2, vf_minibatches=2)}


def close_trees(a, b, where="", rtol=1e-4, atol=1e-5):
    """Two checkpoint trees with the same structure and (within float tolerance) the same tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        if a.dtype == torch.uint8 or not a.is_floating_point():
            assert torch.equal(a, b), where
        else:
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=where)
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: {sorted(map(str, a))} != {sorted(map(str, b))}"
        for key in a:
            close_trees(a[key], b[key], f"{where}/{key}", rtol, atol)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close_trees(x, y, f"{where}[{i}]", rtol, atol)


@pytest.mark.parametrize("algo, env_id, extra", [
    ("ppo", "Pendulum-v1", dict(normalize_obs=True, normalize_reward=True)),
    ("reinforce", "CartPole-v1", {}),
    ("trpo", "CartPole-v1", dict(normalize_obs=True)),
    ("npg", "Acrobot-v1", {}),
])
def test_each_seed_of_a_batched_run_is_the_single_run_of_that_seed(tmp_path, algo, env_id, extra):
    kw = dict(RUN, backend="torch", logdir=str(tmp_path), **SMALL[algo], **extra)
    many = rlpg.train(algo, env_id, seeds=[3, 5], run_name="many", **kw)
    one = rlpg.train(algo, env_id, seed=5, run_name="one", **kw)
    assert [p.name for p in many.run_dirs] == ["seed_3", "seed_5"] and many.global_step == one.global_step == 1024
    mine, single = (checkpoint.load(d / "last.pt") for d in (many.run_dirs[1], one.run_dir))
    # the same checkpoint, key for key: weights, optimizer state, normalisers, env state and the random stream
    for key in ("policy", "agent", "normalizer", "spaces", "global_step", "iteration", "algo", "env_id"):
        close_trees(mine[key], single[key], key)
    close_trees(mine["resume"]["env"], single["resume"]["env"], "env")
    close_trees(mine["resume"]["obs"], single["resume"]["obs"], "obs")
    assert torch.equal(mine["rng"]["torch"], single["rng"]["torch"])  # as many draws, in the same order
    assert many.eval_mean_returns[1] == pytest.approx(one.eval_mean_return, abs=1e-3)
    assert many.best_eval_returns[1] == pytest.approx(one.best_eval_return, abs=1e-3)
    # config.json: the single run's settings, with its seed, and the group it came from
    config = json.loads((many.run_dirs[1] / "config.json").read_text())
    assert config["train"]["seed"] == 5 and config["seeds"] == {"group": "many", "seeds": [3, 5]}
    assert config["agent"] == json.loads((one.run_dir / "config.json").read_text())["agent"]
    # the other seed is another run altogether
    other = checkpoint.load(many.run_dirs[0] / "last.pt")["policy"]
    assert not torch.allclose(other["critic.0.weight"], mine["policy"]["critic.0.weight"])
    summary = json.loads((many.run_dir / "summary.json").read_text())
    assert summary["final_eval_return"]["per_seed"] == {"3": many.eval_mean_returns[0], "5": many.eval_mean_returns[1]}
    assert summary["final_eval_return"]["mean"] == pytest.approx(sum(many.eval_mean_returns) / 2)


def test_one_seed_through_seeds_is_the_single_run(tmp_path):
    kw = dict(RUN, backend="torch", logdir=str(tmp_path), **SMALL["ppo"])
    many = rlpg.train("ppo", "CartPole-v1", seeds="7", run_name="many", **kw)
    one = rlpg.train("ppo", "CartPole-v1", seed=7, run_name="one", **kw)
    assert [p.name for p in many.run_dirs] == ["seed_7"]
    close_trees(checkpoint.load(many.run_dirs[0] / "last.pt")["policy"], one.policy.state_dict(), "policy")
    assert many.eval_mean_returns[0] == pytest.approx(one.eval_mean_return, abs=1e-3)


def test_gymnasium_envs_train_as_one_vector_env_per_seed(tmp_path):
    kw = dict(RUN, backend="gymnasium", logdir=str(tmp_path), normalize_obs=True, **SMALL["ppo"])
    many = rlpg.train("ppo", "CartPole-v1", seeds=[1, 2], run_name="many", **kw)
    one = rlpg.train("ppo", "CartPole-v1", seed=2, run_name="one", **kw)
    mine, single = (checkpoint.load(d / "last.pt") for d in (many.run_dirs[1], one.run_dir))
    for key in ("policy", "agent", "normalizer"):
        close_trees(mine[key], single[key], key)
    assert mine["resume"]["env"]["base"] is None and mine["resume"]["backend"] == "gymnasium"
    assert many.eval_mean_returns[1] == pytest.approx(one.eval_mean_return, abs=1e-3)


def stopped(tmp_path, algo, env_id, stop_after, **kw):
    """A K-seed run stopped (as by SIGTERM) once `stop_after` updates are done."""
    cfg, agent_cfg = resolve_configs(algo, env_id, dict(RUN, logdir=str(tmp_path), run_name="part", **kw))
    trainer = SeedsTrainer(cfg, agent_cfg, [1, 2, 3])
    update = trainer.agent.update

    def update_then_stop(batch, progress):
        out = update(batch, progress)
        if trainer.iteration + 1 == stop_after:
            trainer.request_stop(signal.SIGTERM)
        return out

    trainer.agent.update = update_then_stop
    return trainer.run()


@pytest.mark.parametrize("algo, env_id", [("ppo", "CartPole-v1"), ("trpo", "CartPole-v1")])
def test_a_stopped_batched_run_resumes_as_each_seed_alone(tmp_path, algo, env_id):
    kw = dict(backend="torch", normalize_obs=True, normalize_reward=True, **SMALL[algo])
    full = rlpg.train(algo, env_id, seeds=[1, 2, 3], logdir=str(tmp_path), run_name="full", **RUN, **kw)
    part = stopped(tmp_path, algo, env_id, 1, **kw)
    assert part.interrupted and part.signal == signal.SIGTERM and part.saved_step == 256
    assert {checkpoint.load(d / "last.pt")["global_step"] for d in part.run_dirs} == {256}
    assert not (part.run_dir / "summary.json").exists()
    # seed 2 alone, as a single run, from the group's checkpoint
    alone = rlpg.train(resume=part.run_dirs[1])
    close_trees(alone.policy.state_dict(), full.policy.state_dict_of(1), "seed 2 resumed alone")
    assert alone.eval_mean_return == pytest.approx(full.eval_mean_returns[1], abs=1e-3)
    # the seeds now stand at different steps: the group cannot resume as one
    with pytest.raises(ConfigError, match="different steps"):
        rlpg.train(resume=part.run_dir)


def test_a_group_resumes_bit_for_bit(tmp_path):
    kw = dict(backend="torch", normalize_obs=True, normalize_reward=True, **SMALL["ppo"])
    full = rlpg.train("ppo", "Pendulum-v1", seeds=[1, 2, 3], logdir=str(tmp_path), run_name="full", **RUN, **kw)
    part = stopped(tmp_path, "ppo", "Pendulum-v1", 3, **kw)
    resumed = rlpg.train(resume=part.run_dir)
    assert not resumed.interrupted and resumed.global_step == 1024 and resumed.run_dir == part.run_dir
    for name, p in full.policy.named_parameters():
        assert torch.equal(p, dict(resumed.policy.named_parameters())[name]), name
    assert resumed.eval_mean_returns == full.eval_mean_returns
    assert resumed.best_eval_returns == full.best_eval_returns
    assert json.loads((part.run_dir / "summary.json").read_text())["global_step"] == 1024


def test_cli_trains_seeds_and_each_seed_directory_is_an_ordinary_run(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--seeds", "1-2", "4", "--total-steps", "1024", "--num-envs", "8",
                             "--num-steps", "32", "--num-minibatches", "4", "--logdir", str(tmp_path), "--run-name",
                             "g", "--progress", "false", "--eval-episodes", "2")
    assert code == 0, err
    assert "3 seeds in one process" in out and "summary.json" in out
    group = tmp_path / "g"
    assert sorted(p.name for p in group.iterdir()) == ["seed_1", "seed_2", "seed_4", "seeds.json", "summary.json"]
    assert {p.name for p in (group / "seed_4").iterdir()} >= {"config.json", "last.pt", "best.pt", "progress.csv"}
    tags = (group / "seed_4" / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"rollout/episodic_return", "train/policy_loss", "grad_norm/total", "grad_norm/actor.net.0.weight",
            "eval/mean_return"} <= set(tags)
    code, out, err = run_cli(capsys, "eval", str(group / "seed_4"), "--episodes", "2")
    assert code == 0 and "mean return" in out, err
    one_line_error(capsys, "eval", str(group), match="pass one of them, e.g.")  # the group itself
    from rlpg.plot import read_curve, run_dirs

    assert [p.name for p in run_dirs([group])] == ["seed_1", "seed_2", "seed_4"]
    assert read_curve(group / "seed_4").seed == 4


@pytest.mark.parametrize("argv, match", [
    (["--seeds", "1-3", "--seed", "2"], "not both"),
    (["--seeds", "3-1"], "runs backwards"),
    (["--seeds", "1", "x"], "1-16 or 1 2 5"),
    (["--seeds", "1-3", "2"], "twice"),
    (["--seeds", "1-2", "--nproc", "2"], "--nproc"),
])
def test_bad_seeds_are_one_line_errors(tmp_path, capsys, argv, match):
    one_line_error(capsys, "train", *argv, "--logdir", str(tmp_path), match=match)


def test_parse_seeds():
    assert parse_seeds("1-4") == [1, 2, 3, 4]
    assert parse_seeds(["1", "2", "5"]) == [1, 2, 5]
    assert parse_seeds("7,3") == [7, 3]
    assert parse_seeds([0, 2]) == [0, 2]
    with pytest.raises(ConfigError, match="at least one"):
        parse_seeds([])


def test_agent_state_splits_per_seed_and_stacks_back():
    state = {"optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.arange(6.0).reshape(3, 2)}},
                           "param_groups": [{"lr": 0.1, "params": [0]}]}}
    parts = [seed_agent_state(state, k) for k in range(3)]
    assert torch.equal(parts[1]["optimizer"]["state"][0]["exp_avg"], torch.tensor([2.0, 3.0]))
    assert parts[1]["optimizer"]["state"][0]["step"] == 3
    close_trees(stack_agent_states(parts), state)
    parts[2]["optimizer"]["state"][0]["step"] = torch.tensor(4.0)  # seeds whose epochs stopped at other times
    assert torch.equal(stack_agent_states(parts)["optimizer"]["state"][0]["step"], torch.tensor([3.0, 3.0, 4.0]))
    parts[2]["optimizer"]["param_groups"][0]["lr"] = 0.2
    parts[2]["optimizer"]["state"][0]["other"] = 1
    parts[1]["optimizer"]["state"][0]["other"] = 2
    parts[0]["optimizer"]["state"][0]["other"] = 2
    with pytest.raises(Exception, match="not trained together"):
        stack_agent_states(parts)


def test_target_kl_stops_each_seed_alone_and_the_group_resumes_bit_for_bit(tmp_path):
    kw = dict(RUN, backend="torch", logdir=str(tmp_path), num_minibatches=4, update_epochs=8, target_kl=0.004,
              learning_rate=3e-3)
    many = rlpg.train("ppo", "CartPole-v1", seeds=[1, 2], run_name="many", **kw)
    one = rlpg.train("ppo", "CartPole-v1", seed=2, run_name="one", **kw)
    mine, single = (checkpoint.load(d / "last.pt") for d in (many.run_dirs[1], one.run_dir))
    close_trees(mine["policy"], single["policy"], "policy")
    close_trees(mine["agent"], single["agent"], "agent")  # Adam's step count: the steps seed 2 took
    _, rows = read_csv(many.run_dirs[0] / "progress.csv")
    epochs = [float(r["train/epochs"]) for r in rows if r.get("train/epochs")]
    assert min(epochs) < 8  # the KL stop bit
    part = stopped(tmp_path, "ppo", "CartPole-v1", 2, backend="torch", num_minibatches=4, update_epochs=8,
                   target_kl=0.004, learning_rate=3e-3)
    full = rlpg.train("ppo", "CartPole-v1", seeds=[1, 2, 3], run_name="full", **kw)
    resumed = rlpg.train(resume=part.run_dir)
    for name, p in full.policy.named_parameters():
        assert torch.equal(p, dict(resumed.policy.named_parameters())[name]), name


def test_a_gymnasium_group_resumes_from_fresh_episodes_as_each_seed_alone_would(tmp_path):
    """A Gymnasium env cannot save its state: a resumed group restarts each seed's episodes from that seed's own new
    seed, as `--resume` of that seed alone does, so the two continue alike."""
    kw = dict(backend="gymnasium", normalize_obs=True, **SMALL["ppo"])
    part = stopped(tmp_path, "ppo", "CartPole-v1", 2, **kw)
    assert part.saved_step == 512
    alone_dir = tmp_path / "alone"
    shutil.copytree(part.run_dirs[1], alone_dir)  # seed 2's run directory, continued by itself
    group = rlpg.train(resume=part.run_dir)
    alone = rlpg.train(resume=alone_dir)
    assert group.global_step == alone.global_step == 1024
    close_trees(alone.policy.state_dict(), group.policy.state_dict_of(1), "seed 2")
    assert alone.eval_mean_return == pytest.approx(group.eval_mean_returns[1], abs=1e-3)
