"""The training scripts in scripts/ run as written: each is started as a user would, with a tiny budget on the CPU,
and what it promises (event files and their tags, checkpoints, an ONNX file that agrees with torch, frozen weights
left alone, the custom env used, a resumed run that continues) is checked from the outside.

Every script key=value it prints at the end is parsed; a run that fails prints its output in the assertion.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlpg

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
README = Path(__file__).resolve().parent.parent / "README.md"
TESTED = {"train_classic.py", "train_mujoco.py", "custom_env.py", "finetune.py", "inspect_gradients.py",
          "export_onnx.py"}
PARAMS = [f"{net}.{i}.{kind}" for net, idx in (("actor.net", (0, 2, 4)), ("critic", (0, 2, 4))) for i in idx
          for kind in ("weight", "bias")]  # the ActorCritic of a CartPole run, as named_parameters() names them


def run_script(name: str, *args: str, cwd: Path, timeout: float = 120) -> str:
    """Run scripts/<name> on the CPU with its output under `cwd`; returns stdout, fails with the output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPTS / name), *args, "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output}"
    return proc.stdout


def printed(stdout: str) -> dict[str, str]:
    """The key=value pairs a script printed (the last value of each key)."""
    return dict(re.findall(r"(\w+)=(\S+)", stdout))


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def logged_tags(run_dir: Path) -> set[str]:
    prefixes = ("rollout/", "train/", "grad_norm/", "time/", "eval/")
    return {t for t in events(run_dir).Tags()["scalars"] if t.startswith(prefixes)}


def test_every_script_is_tested_listed_in_the_readme_and_takes_the_common_flags() -> None:
    scripts = {p.name for p in SCRIPTS.glob("*.py") if not p.name.startswith("benchmark_")}
    assert scripts == TESTED
    readme = README.read_text()
    section = readme[readme.index("## Scripts") :].split("\n## ", 1)[0]
    for name in scripts:
        assert f"scripts/{name}" in section, f"README's Scripts section does not list {name}"
        source = (SCRIPTS / name).read_text()
        assert '"--total-steps"' in source and '"--device"' in source, name


@pytest.mark.parametrize("algo", ["ppo", "trpo", "npg", "reinforce"])
def test_train_classic_logs_what_the_trainer_logs(algo: str, tmp_path: Path) -> None:
    size = ["--num-envs", "8", "--num-steps", "32", "--total-steps", "512"]
    out = printed(run_script("train_classic.py", "--algo", algo, *size, "--eval-episodes", "4", "--logdir", "runs",
                             cwd=tmp_path))
    run_dir = tmp_path / out["run_dir"]
    assert int(out["global_step"]) == 512 and 1 <= float(out["eval_return"]) <= 500
    acc = events(run_dir)
    assert [e.step for e in acc.Scalars("train/policy_loss")] == [256, 512]
    trainer = rlpg.train(algo, "CartPole-v1", backend="torch", num_envs=8, num_steps=32, total_steps=512,
                         eval_episodes=4, logdir=str(tmp_path / "trainer"), progress=False)
    # train/skipped_updates counts the updates the trainer undid for a non-finite loss; the script has no such guard
    expected = logged_tags(trainer.run_dir) - {"train/skipped_updates"}
    total = {"grad_norm/total"} if algo in ("ppo", "reinforce") else {"grad_norm/actor_total", "grad_norm/critic_total"}
    assert {f"grad_norm/{p}" for p in PARAMS} | total | {"rollout/episodic_return"} <= expected
    assert logged_tags(run_dir) == expected


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    pytest.importorskip("mujoco", reason="train_mujoco.py needs MuJoCo: pip install -e '.[mujoco]'")
    cwd = tmp_path_factory.mktemp("mujoco")
    out = run_script("train_mujoco.py", "--total-steps", "2048", "--eval-episodes", "2", "--checkpoint-interval",
                     "2048", "--no-progress", "--logdir", "runs", cwd=cwd)
    return cwd / printed(out)["run_dir"], printed(out)


def test_train_mujoco_normalises_checkpoints_evaluates_and_loads(hopper_run: tuple[Path, dict[str, str]]) -> None:
    run_dir, out = hopper_run
    assert run_dir.name.startswith("Hopper-v5__ppo__") and int(out["global_step"]) == 2048
    assert (run_dir / "last.pt").is_file() and (run_dir / "best.pt").is_file()
    train_cfg = json.loads((run_dir / "config.json").read_text())["train"]
    assert train_cfg["normalize_obs"] and train_cfg["normalize_reward"] and train_cfg["checkpoint_interval"] == 2048
    assert math.isfinite(float(out["eval_return"])) and math.isfinite(float(out["episode_return"]))
    policy = rlpg.load_policy(run_dir)
    assert policy.obs_rms is not None and float(policy.obs_rms["var"].min()) > 0  # statistics of Hopper's obs
    assert policy.predict(np.zeros(11, np.float32)).shape == (3,)


def test_train_mujoco_resume_continues_from_the_saved_step(
    hopper_run: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    run_dir = tmp_path / hopper_run[0].name
    shutil.copytree(hopper_run[0], run_dir)  # the other test reads the original
    out = printed(run_script("train_mujoco.py", "--resume", str(run_dir), "--total-steps", "4096", "--no-progress",
                             cwd=tmp_path))
    assert Path(out["run_dir"]).resolve() == run_dir.resolve() and int(out["global_step"]) == 4096
    # one update logged by the first run at step 2048, one by the resumed run at 4096: it did not start again at 0
    assert sorted(e.step for e in events(run_dir).Scalars("train/policy_loss")) == [2048, 4096]
    assert torch.load(run_dir / "last.pt", weights_only=True)["global_step"] == 4096


def test_custom_env_is_registered_and_trained(tmp_path: Path) -> None:
    out = printed(run_script("custom_env.py", "--total-steps", "1024", "--eval-episodes", "4", "--logdir", "runs",
                             cwd=tmp_path))
    run_dir = tmp_path / out["run_dir"]
    assert json.loads((run_dir / "config.json").read_text())["train"]["env_id"] == "PointReach-v0"
    policy = rlpg.load_policy(run_dir)
    assert policy.policy.action_space == gym.spaces.Discrete(3) and policy.policy.obs_space.shape == (2,)
    # PointReach's rewards are -distance and its time limit 50 steps: no registered task gives these episodes
    acc = events(run_dir)
    assert all(-100 <= e.value < 0 for e in acc.Scalars("rollout/episodic_return"))
    assert all(1 <= e.value <= 50 for e in acc.Scalars("rollout/episodic_length"))
    assert -100 <= float(out["random_return"]) < 0 and -100 <= float(out["eval_return"]) < 0


def test_finetune_keeps_the_frozen_prefix_and_trains_the_rest(tmp_path: Path) -> None:
    stdout = run_script("finetune.py", "--pretrain-steps", "1024", "--total-steps", "1024", "--logdir", "runs",
                        cwd=tmp_path)
    heavy = re.search(r"heavy pole \(masspole=1.0, length=2.0\): before=(\S+) after=(\S+)", stdout)
    original = re.search(r"original pole: before=(\S+) after=(\S+)", stdout)
    assert heavy and original, stdout
    assert all(1 <= float(x) <= 500 for x in (*heavy.groups(), *original.groups()))
    finetuned = tmp_path / printed(stdout)["finetuned"]
    pretrained = rlpg.load_policy(finetuned.parent).policy.state_dict()  # best.pt of the pretraining run
    tuned = rlpg.load_policy(finetuned).policy.state_dict()
    frozen = {"actor.net.0.weight", "actor.net.0.bias"}
    assert all(torch.equal(tuned[n], pretrained[n]) for n in frozen)
    assert all(not torch.equal(tuned[n], pretrained[n]) for n in PARAMS if n not in frozen)


def test_inspect_gradients_prints_norms_that_agree_with_clipping_and_the_event_files(tmp_path: Path) -> None:
    stdout = run_script("inspect_gradients.py", "--total-steps", "2048", "--max-grad-norm", "0.5", "--logdir", "runs",
                        cwd=tmp_path)
    out = printed(stdout)
    assert "rollout.logp: requires_grad=False grad_fn=None" in stdout  # the Collector ran under no_grad
    assert "values: requires_grad=True; values.detach(): requires_grad=False" in stdout
    manual, _, table = stdout.partition("event files:")
    rows = {m[0]: (float(m[1]), float(m[2])) for m in re.findall(r"^(\S+) +\S+ +True +(\S+) +(\S+)$", manual, re.M)}
    assert sorted(rows) == sorted(PARAMS)
    total = float(out["grad_norm_total"])
    assert total == pytest.approx(math.sqrt(sum(b**2 for b, _ in rows.values())), rel=1e-3)
    scale = min(1.0, 0.5 / total)  # clip_grad_norm_ scales every gradient by the same factor
    assert all(a == pytest.approx(b * scale, rel=1e-3, abs=1e-4) for b, a in rows.values())
    acc = events(tmp_path / out["run_dir"])
    assert {f"grad_norm/{p}" for p in PARAMS} <= set(acc.Tags()["scalars"])
    assert {f"weights/{p}" for p in PARAMS} <= set(acc.Tags()["histograms"])
    read_back = {m[0]: float(m[2]) for m in re.findall(r"^(\S+) +(\S+) +(\S+) +\S+ +\S+ +\S+ +\S+$", table, re.M)
                 if m[0] in PARAMS}
    assert sorted(read_back) == sorted(PARAMS)
    for p, last in read_back.items():
        assert last == pytest.approx(acc.Scalars(f"grad_norm/{p}")[-1].value, abs=1e-4)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_export_onnx_matches_load_policy(env_id: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="export_onnx.py needs the onnx extra")
    out = printed(run_script("export_onnx.py", "--env-id", env_id, "--total-steps", "1024", "--logdir", "runs",
                             cwd=tmp_path))
    onnx_file = tmp_path / out["onnx"]
    assert onnx_file.is_file() and onnx_file.suffix == ".onnx"
    assert float(out["max_abs_diff"]) <= 1e-5 and math.isfinite(float(out["episode_return"]))
    policy = rlpg.load_policy(onnx_file.parent)
    obs = np.random.default_rng(0).uniform(-1, 1, size=(7, *policy.policy.obs_space.shape)).astype(np.float32)
    (actions,) = ort.InferenceSession(str(onnx_file)).run(None, {"obs": obs})
    np.testing.assert_allclose(actions, policy.predict(obs), rtol=0, atol=1e-5)
