"""rlpg bench's SB3 side: SB3's PPO and sb3-contrib's TRPO with rl-zoo's settings, run and scored beside rlpg's runs,
continued after an interruption."""

import csv
import json
import pickle

import pytest

from rlpg import bench_sb3
from rlpg.bench import EVAL_SEED, Bench
from rlpg.cli import main
from rlpg.errors import ConfigError, RLPGError

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")


def test_bench_runs_sb3_beside_rlpg_and_scores_it_alike(tmp_path, capsys):
    out = tmp_path / "b"
    argv = ["bench", "--algos", "ppo", "npg", "--envs", "CartPole-v1", "--seeds", "1", "--total-steps", "2048",
            "--eval-points", "2", "--eval-episodes", "3", "--sb3", "on", "--jobs", "2", "--out", str(out), "--",
            "--num-envs", "8", "--num-steps", "64"]
    assert main(argv) == 0
    assert "rl-zoo's settings" in capsys.readouterr().out
    with (out / "results.csv").open() as f:
        rows = {(r["library"], r["algo"]): r for r in csv.DictReader(f)}
    assert sorted(rows) == [("rlpg", "npg"), ("rlpg", "ppo"), ("sb3", "ppo")]  # SB3 has no NPG
    sb3 = rows[("sb3", "ppo")]
    result = json.loads((out / "runs" / "CartPole-v1__ppo__1__sb3" / "result.json").read_text())
    assert int(sb3["steps"]) == result["steps"] == 2048 and result["settings"] == "rl-zoo"
    assert float(sb3["final_return"]) == pytest.approx(result["final_return"], abs=0.01)
    assert 8 <= result["final_return"] <= result["best_return"] <= 500
    table = (out / "results.md").read_text()
    assert "| CartPole-v1 | ppo | sb3 | 2048 | 1 |" in table and "| CartPole-v1 | ppo | rlpg | 2048 | 1 |" in table
    config = json.loads((out / "runs" / "CartPole-v1__ppo__1__sb3" / "config.json").read_text())
    assert config["sb3"]["n_epochs"] == "20" and config["train"]["library"] == "sb3"  # rl-zoo's CartPole PPO
    from rlpg.plot import read_curve

    assert read_curve(out / "runs" / "CartPole-v1__ppo__1__sb3").algo == "ppo (sb3)"


def test_an_sb3_run_continues_from_its_checkpoint(tmp_path):
    run_dir = tmp_path / "r"

    def run(total):
        return bench_sb3.Run("trpo", "Acrobot-v1", 1, total, run_dir, 1024, 2, EVAL_SEED).train()

    def stats_count():
        with (run_dir / "last_vecnormalize.pkl").open("rb") as f:
            return pickle.load(f).obs_rms.count

    first = run(2048)
    assert first["steps"] == 2048 and json.loads((run_dir / "progress.json").read_text())["steps"] == 2048
    count = stats_count()
    second = run(4096)  # the same run directory: continues from last.zip and its normaliser
    assert second["steps"] == 4096
    assert stats_count() == pytest.approx(count + 2048, abs=4)  # the statistics went on, not restarted
    assert second["train_minutes"] > first["train_minutes"]


def test_sb3_settings_and_bad_requests():
    hyper, source = bench_sb3.settings("ppo", "Hopper-v5")
    assert source == "rl-zoo" and hyper["n_steps"] == 512 and hyper["policy_kwargs"]["log_std_init"] == -2
    assert bench_sb3.settings("trpo", "Ant-v5") == ({}, "sb3 defaults")
    with pytest.raises(RLPGError, match="SB3 has no npg"):
        bench_sb3.settings("npg", "Hopper-v5")
    with pytest.raises(ConfigError, match="--sb3 must be on, off or auto"):
        Bench(["ppo"], ["CartPole-v1"], [1], 100, None, sb3="maybe")


def test_sb3_on_without_sb3_names_the_extra(monkeypatch):
    monkeypatch.setattr(bench_sb3, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[bench\]'"):
        Bench(["ppo"], ["CartPole-v1"], [1], 100, None, sb3="on")
    assert Bench(["ppo"], ["CartPole-v1"], [1], 100, None, sb3="auto").sb3 == "off"
