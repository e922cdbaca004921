"""Environment ids (envs/ids.py): `module:EnvId`, `--env-packages`, ALE and MinAtar ids, flattened Dict / Tuple
observations, run directory names; every bad case is one `rlpg: error:` line and exit code 2."""

import itertools
import json
import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import one_line_error, run_cli

from rlpg import checkpoint
from rlpg.envs import make, spaces_of
from rlpg.runs import check_spaces, default_run_name

FAST = ["--total-steps", "256", "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2", "--update-epochs",
        "2", "--eval-episodes", "2", "--num-eval-envs", "2", "--eval-interval", "0", "--progress", "false"]

MODULE = '''
"""Test envs registered on import: GoLeft{n}-v0 (reward 1 for action 0; asserts its action range), its Dict and
Tuple observation variants, and a Dict holding an image."""
import gymnasium as gym
import numpy as np


class GoLeft(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0.0
        return self._obs(), {{}}

    def _obs(self):
        return np.array([self.x, 1.0], np.float32)

    def step(self, action):
        assert action in (0, 1), f"action {{action!r}} outside Discrete(2)"
        self.x = float(np.clip(self.x + (-0.1 if action == 0 else 0.1), -1, 1))
        return self._obs(), float(action == 0), False, False, {{}}


class GoLeftDict(GoLeft):
    observation_space = gym.spaces.Dict({{"pos": gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
                                         "phase": gym.spaces.Discrete(3)}})

    def _obs(self):
        return {{"pos": np.array([self.x], np.float32), "phase": 1}}


class GoLeftTuple(GoLeft):
    observation_space = gym.spaces.Tuple((gym.spaces.Box(-1.0, 1.0, (1,), np.float32), gym.spaces.Discrete(2)))

    def _obs(self):
        return (np.array([self.x], np.float32), 0)


class GoLeftPixels(GoLeft):
    observation_space = gym.spaces.Dict({{"pos": gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
                                         "pixels": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)}})


for name, cls in (("GoLeft", GoLeft), ("GoLeftDict", GoLeftDict), ("GoLeftTuple", GoLeftTuple),
                  ("GoLeftPixels", GoLeftPixels)):
    gym.register(f"{{name}}{n}-v0", entry_point=cls, max_episode_steps=16)
'''

_counter = itertools.count()


@pytest.fixture
def env_module(tmp_path, monkeypatch):
    """A fresh module (not yet imported) on sys.path that registers GoLeft<n>-v0 and its variants when imported;
    returns (module name, n). Its ids and the module are removed afterwards."""
    n = next(_counter)
    name = f"rlpg_test_envs_{os.getpid()}_{n}"
    (tmp_path / f"{name}.py").write_text(MODULE.format(n=n))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, n
    sys.modules.pop(name, None)
    for key in [k for k in gym.envs.registry if k.endswith(f"{n}-v0") and k.startswith("GoLeft")]:
        del gym.envs.registry[key]


def run_dir_of(out: str):
    return next(line.split("run dir ")[1].strip() for line in out.splitlines() if "run dir " in line)


def test_module_prefixed_id_imports_the_module_trains_and_evaluates_in_a_fresh_process(capsys, env_module, tmp_path):
    module, n = env_module
    env_id = f"{module}:GoLeft{n}-v0"
    assert module not in sys.modules
    code, out, err = run_cli(capsys, "train", "--env", env_id, "--logdir", str(tmp_path / "runs"), *FAST)
    assert code == 0, err
    run_dir = run_dir_of(out)
    assert os.path.basename(run_dir).startswith(f"{module}-GoLeft{n}-v0__ppo__1__")  # one path component
    assert json.loads((tmp_path / "runs" / os.path.basename(run_dir) / "config.json").read_text())["train"][
        "env_id"] == env_id
    # `rlpg eval` in a new interpreter imports the module again from the id the run recorded
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "rlpg.cli", "eval", run_dir, "--episodes", "2", "--num-envs", "2",
                           "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mean_return"] >= 0


def test_env_packages_are_imported_first_and_recorded_for_eval_and_resume(capsys, env_module, tmp_path):
    module, n = env_module
    code, out, err = run_cli(capsys, "train", "--env-packages", module, "--env", f"GoLeft{n}-v0", "--logdir",
                             str(tmp_path / "runs"), *FAST)
    assert code == 0, err
    run_dir = run_dir_of(out)
    cfg = json.loads((tmp_path / "runs" / os.path.basename(run_dir) / "config.json").read_text())["train"]
    assert cfg["env_packages"] == [module]
    assert checkpoint.load(os.path.join(run_dir, "last.pt"))["config"]["train"]["env_packages"] == [module]
    # `--env-package` is repeatable, and adds to `--env-packages` lists
    code, _, err = run_cli(capsys, "train", "--env-package", "json", "--env-package", module, "--env-packages",
                           "csv", "--env", f"GoLeft{n}-v0", "--logdir", str(tmp_path / "runs"), "--run-name", "two",
                           *FAST)
    assert code == 0, err
    two = json.loads((tmp_path / "runs" / "two" / "config.json").read_text())["train"]
    assert two["env_packages"] == ["json", module, "csv"]
    # a fresh interpreter has not imported the module: make() and spaces_of() import the recorded packages
    script = textwrap.dedent(f"""
        import torch
        from rlpg.envs import make, spaces_of
        env = make("GoLeft{n}-v0", 2, env_packages={cfg['env_packages']!r})
        env.reset(seed=0)
        env.step(torch.zeros(2, dtype=torch.long))
        print(spaces_of("GoLeft{n}-v0", env_packages={cfg['env_packages']!r})[0])
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Box(-1.0, 1.0, (2,), float32)" in proc.stdout
    # and so does `rlpg eval` of the run, from its recorded env_packages
    proc = subprocess.run([sys.executable, "-m", "rlpg.cli", "eval", run_dir, "--episodes", "2", "--num-envs", "2",
                           "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mean_return"] >= 0
    # a resumed run makes its envs with the recorded packages (in this process they are imported already: the resume
    # reads them from last.pt)
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--total-steps", "512")
    assert code == 0, err


# the first observation flattened: a Dict in sorted key order ("phase" one-hot of 1, then "pos" 0), a Tuple in its own
# order ("pos" 0, then the Discrete one-hot of 0)
@pytest.mark.parametrize("variant, first", [("GoLeftDict", [0, 1, 0, 0]), ("GoLeftTuple", [0, 1, 0])])
def test_dict_and_tuple_observations_are_flattened_for_training_and_eval(capsys, env_module, tmp_path, variant, first):
    module, n = env_module
    env_id = f"{module}:{variant}{n}-v0"
    obs_space, _ = spaces_of(env_id)
    assert isinstance(obs_space, gym.spaces.Box) and obs_space.shape == (len(first),)
    env = make(env_id, 2)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == torch.float32 and obs.tolist() == [first, first]
    env.close()
    code, out, err = run_cli(capsys, "train", "--env", env_id, "--logdir", str(tmp_path / "runs"), *FAST)
    assert code == 0, err
    run_dir = run_dir_of(out)
    payload = checkpoint.load(os.path.join(run_dir, "last.pt"))
    eval_env = make(payload["env_id"], 2)
    check_spaces(payload, eval_env, "last.pt")  # the recorded spaces are what an evaluation builds
    eval_env.close()
    code, out, err = run_cli(capsys, "eval", run_dir, "--episodes", "2", "--num-envs", "2")
    assert code == 0, err
    assert "mean return" in out


def test_run_directory_names_stay_one_path_component():
    assert default_run_name("ALE/Pong-v5", "ppo", 1, 7) == "ALE-Pong-v5__ppo__1__7"
    assert default_run_name("my_pkg.envs:Maze-v0", "trpo", 2, 7) == "my_pkg.envs-Maze-v0__trpo__2__7"
    assert default_run_name("a/b:c\\d", "ppo", 1, 7) == "a-b-c-d__ppo__1__7"
    assert "/" not in default_run_name("x" * 300 + "/y", "ppo", 1, 7)


# -------------------------------------------------------------------------------------------------- bad cases
def test_a_module_that_is_not_there_is_one_line(capsys, tmp_path):
    line = one_line_error(capsys, "train", "--env", "rlpg_no_such_module:GoLeft-v0", "--logdir", str(tmp_path),
                          match="cannot import module 'rlpg_no_such_module'")
    assert "ModuleNotFoundError" in line and "PYTHONPATH" in line and "did you mean" not in line
    one_line_error(capsys, "train", "--env-packages", "rlpg_no_such_module", "--logdir", str(tmp_path),
                   match="--env-packages rlpg_no_such_module: cannot import module 'rlpg_no_such_module'")
    one_line_error(capsys, "train", "--env-packages", "not a module", "--logdir", str(tmp_path),
                   match="is not a module name")
    one_line_error(capsys, "train", "--env", "json:", "--logdir", str(tmp_path), match="no environment id after")
    assert not any(tmp_path.iterdir())  # nothing was created


def test_a_module_that_fails_on_import_names_its_error(capsys, tmp_path, monkeypatch):
    (tmp_path / "rlpg_broken_envs.py").write_text("raise RuntimeError('the registry is down\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = one_line_error(capsys, "train", "--env", "rlpg_broken_envs:X-v0", "--logdir", str(tmp_path / "runs"),
                          match="cannot import module 'rlpg_broken_envs' (RuntimeError: the registry is down)")
    assert "second line" not in line
    sys.modules.pop("rlpg_broken_envs", None)


def test_an_id_the_module_does_not_register_is_unknown(capsys, env_module, tmp_path):
    module, n = env_module
    line = one_line_error(capsys, "train", "--env", f"{module}:GoLeftt{n}-v0", "--logdir", str(tmp_path / "runs"),
                          match=f"unknown environment id 'GoLeftt{n}-v0'")
    assert f"GoLeft{n}-v0" in line  # the module was imported: its ids are suggested


def test_a_dict_holding_an_image_is_refused(capsys, env_module, tmp_path):
    module, n = env_module
    one_line_error(capsys, "train", "--env", f"{module}:GoLeftPixels{n}-v0", "--logdir", str(tmp_path / "runs"),
                   match="holds an image at 'pixels'")


@pytest.mark.parametrize("env_id, blocked, extra", [
    ("ALE/Breakout-v5", ("ale_py",), ".[atari]"),
    ("ALE/NoSuchGame-v5", ("ale_py",), ".[atari]"),
    ("MinAtar/Breakout-v1", ("minatar", "minatar.gym"), ".[minatar]"),
    ("LunarLander-v3", ("Box2D",), ".[box2d]"),
    ("BipedalWalker-v3", ("Box2D",), ".[box2d]"),
    ("Hopper-v5", ("mujoco",), ".[mujoco]"),
])
def test_a_missing_family_package_names_its_extra_not_a_guess(capsys, tmp_path, monkeypatch, env_id, blocked, extra):
    for name in [m for m in sys.modules if m.startswith(("gymnasium.envs.box2d", "gymnasium.envs.mujoco"))]:
        monkeypatch.delitem(sys.modules, name)  # imported again, now without the blocked package
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError, as when not installed
    line = one_line_error(capsys, "train", "--env", env_id, "--logdir", str(tmp_path),
                          match=f"pip install -e '{extra}'")
    assert line.startswith(f"rlpg: error: {env_id} needs an extra package") and "did you mean" not in line


# -------------------------------------------------------------------------------------------- ALE and MinAtar
def test_minatar_ids_register_themselves_and_get_a_time_limit():
    pytest.importorskip("minatar")
    env = make("MinAtar/Breakout-v1", 2)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (2, 10, 10, 4) and obs.dtype == torch.bool
        assert env.max_episode_steps == 1000  # gymnax's limit: evaluation cannot hang
    finally:
        env.close()
    freeway = make("MinAtar/Freeway-v1", 1)
    assert freeway.max_episode_steps == 2500  # Freeway's own length
    freeway.close()


def test_a_short_ale_run_trains_and_evaluates_whole_games(capsys, tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    code, out, err = run_cli(capsys, "train", "--env", "ALE/Breakout-v5", "--logdir", str(tmp_path), "--total-steps",
                             "128", "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2",
                             "--update-epochs", "1", "--eval-episodes", "1", "--num-eval-envs", "1", "--progress",
                             "false")
    assert code == 0, err
    assert "preset ppo/ALE/*" in out and "ALE-Breakout-v5__ppo__1__" in out
    payload = checkpoint.load(os.path.join(run_dir_of(out), "last.pt"))
    assert checkpoint.space_from_dict(payload["spaces"]["observation"]) == gym.spaces.Box(0, 255, (4, 84, 84),
                                                                                          np.uint8)
