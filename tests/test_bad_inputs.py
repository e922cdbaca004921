"""Every malformed input gets one line on stderr naming the problem, exit code 2, no traceback, and leaves no run
directory or file behind: flags, configs, paths, env ids, spaces, checkpoints, eval and export."""

import shutil

import gymnasium
import pytest
import torch

import rlpg
from rlpg import checkpoint
from rlpg.cli import main
from rlpg.policies import ActorCritic

FAST = ["--total-steps", "512", "--num-envs", "4", "--num-steps", "64", "--eval-episodes", "2",
        "--num-eval-envs", "2", "--progress", "false"]

# (argv, what the error line must say). In argv, {logdir} is an empty directory for runs, {run} a finished
# CartPole PPO run, {pendulum} a finished Pendulum run, {files}/<name> a prepared file (see `files` below).
T = "train"
CASES = [
    # non-finite and out-of-range floats
    ([T, "--learning-rate", "nan"], "--learning-rate must be a finite number"),
    ([T, "--learning-rate", "inf"], "--learning-rate must be a finite number"),
    ([T, "--learning-rate", "-1"], "--learning-rate must be > 0"),
    ([T, "--learning-rate", "0"], "--learning-rate must be > 0"),
    ([T, "--learning-rate", "abc"], "invalid float value: 'abc'"),
    ([T, "--max-grad-norm", "nan"], "--max-grad-norm must be a finite number"),
    ([T, "--max-grad-norm", "-1"], "--max-grad-norm must be > 0"),
    ([T, "--max-grad-norm", "inf"], "--max-grad-norm must be a finite number"),
    ([T, "--gamma", "1.5"], "--gamma must lie in [0.0, 1.0]"),
    ([T, "--gamma", "nan"], "--gamma must be a finite number"),
    ([T, "--gamma", "-0.1"], "--gamma must lie in"),
    ([T, "--gae-lambda", "2"], "--gae-lambda must lie in"),
    ([T, "--clip-coef", "0"], "--clip-coef must be > 0"),
    ([T, "--clip-coef", "nan"], "--clip-coef must be a finite number"),
    ([T, "--ent-coef", "-1"], "--ent-coef must be >= 0"),
    ([T, "--vf-coef", "inf"], "--vf-coef must be a finite number"),
    ([T, "--target-kl", "-0.1"], "--target-kl must be > 0"),
    ([T, "--norm-type", "0.5"], "--norm-type must be >= 1"),
    ([T, "--norm-type", "nan"], "--norm-type must be a finite number"),
    ([T, "--norm-type=-inf"], "--norm-type must be a finite number"),
    ([T, "--clip-value", "0"], "--clip-value must be > 0"),
    ([T, "--momentum", "1.5"], "--momentum must lie in"),
    ([T, "--momentum", "nan"], "--momentum must be a finite number"),
    ([T, "--log-std-init", "nan"], "--log-std-init must be a finite number"),
    ([T, "--clip-obs", "0"], "--clip-obs must be > 0"),
    ([T, "--clip-reward", "nan"], "--clip-reward must be a finite number"),
    ([T, "--checkpoint-seconds", "nan"], "--checkpoint-seconds must be a finite number"),
    ([T, "--checkpoint-seconds", "-1"], "--checkpoint-seconds must be >= 0"),
    # integers
    ([T, "--seed", "-1"], "--seed must lie in [0, 2**32 - 1]"),
    ([T, "--seed", "4294967296"], "--seed must lie in [0, 2**32 - 1]"),
    ([T, "--seed", "1.5"], "invalid int value: '1.5'"),
    ([T, "--num-envs", "0"], "--num-envs must be > 0"),
    ([T, "--num-envs", "-3"], "--num-envs must be > 0"),
    ([T, "--num-envs", "1e12"], "invalid int value: '1e12'"),
    ([T, "--num-envs", "1000000000000"], "GiB is free"),
    ([T, "--num-envs", "100000000", "--backend", "gymnasium"], "GiB is free"),
    ([T, "--num-steps", "0"], "--num-steps must be > 0"),
    ([T, "--num-steps", "100000000000"], "GiB is free"),
    ([T, "--num-steps", "99999999999999999999999"], "--num-steps is out of range"),
    ([T, "--total-steps", "0"], "--total-steps must be > 0"),
    ([T, "--total-steps", "-5"], "--total-steps must be > 0"),
    ([T, "--num-minibatches", "7"], "does not divide the batch size"),
    ([T, "--num-minibatches", "0"], "--num-minibatches must be > 0"),
    ([T, "--num-minibatches", "512"], "does not divide the batch size"),
    ([T, "--update-epochs", "0"], "--update-epochs must be > 0"),
    ([T, "--eval-episodes", "0"], "--eval-episodes must be > 0"),
    ([T, "--num-eval-envs", "0"], "--num-eval-envs must be > 0"),
    ([T, "--log-interval", "0"], "--log-interval must be > 0"),
    ([T, "--histogram-interval", "-1"], "--histogram-interval must be >= 0"),
    ([T, "--checkpoint-interval", "-1"], "--checkpoint-interval must be >= 0"),
    ([T, "--eval-interval", "-1"], "--eval-interval must be >= 0"),
    ([T, "--max-skipped-updates", "0"], "--max-skipped-updates must be > 0"),
    ([T, "--torch-threads", "-1"], "--torch-threads must be >= 0"),
    ([T, "--torch-threads", "100000"], "--torch-threads must be <= 4096"),
    ([T, "--hidden-sizes", "0"], "--hidden-sizes must be one or more integers"),
    ([T, "--hidden-sizes"], "--hidden-sizes must be one or more integers"),
    ([T, "--hidden-sizes", "64", "-1"], "--hidden-sizes must be one or more integers"),
    ([T, "--hidden-sizes", "100000000"], "--hidden-sizes must be one or more integers"),
    ([T, "--hidden-sizes", "1000000", "1000000"], "--hidden-sizes 1000000 1000000 needs about"),
    ([T, "--hidden-sizes", "a"], "invalid int value: 'a'"),
    # choices, booleans, unknown flags
    ([T, "--activation", "swish"], "unknown activation 'swish'"),
    ([T, "--optimizer", "adagrad"], "--optimizer must be one of"),
    ([T, "--backend", "jax"], "--backend must be one of"),
    ([T, "--normalize-obs", "maybe"], "expected true or false, got 'maybe'"),
    ([T, "--progress", "2"], "expected true or false, got '2'"),
    ([T, "--no-such-flag", "1"], "unrecognized arguments: --no-such-flag"),
    ([T, "--gamma"], "argument --gamma: expected one argument"),
    (["fly"], "unknown command 'fly'"),
    # devices
    ([T, "--device", "meta"], "rlpg trains on cpu, cuda or mps, not on 'meta' devices"),
    ([T, "--device", "cuda:7"], "--device cuda:7"),
    ([T, "--device", "tpu"], "--device 'tpu' is not a torch device"),
    ([T, "--device", "mps"], "--device mps was asked for but MPS is not available"),
    ([T, "--device", "xla"], "not on 'xla' devices"),
    ([T, "--device", ""], "not a torch device"),
    # algorithms, environments, spaces
    ([T, "--algo", "ppo2"], "did you mean 'ppo'"),
    ([T, "--algo", ""], "unknown algorithm ''"),
    ([T, "--env", "CartPol-v1"], "unknown environment id 'CartPol-v1'"),
    ([T, "--env", "rlpg/CartPole-v1"], "here use --env CartPole-v1"),
    ([T, "--env", ""], "--env must name an environment"),
    ([T, "--env", "RlpgTestUnsupportedObs-v0"], "rlpg supports observations: Box, Discrete"),
    ([T, "--backend", "torch", "--env", "LunarLander-v3"], "torch-native environment"),
    ([T, "--env", "ALE/Pongg-v5"], "ALE/Pongg-v5"),  # unknown id, or without ale-py: the install hint
    ([T, "--env", "FrozenLake-v1", "--normalize-obs", "true"], "--normalize-obs needs a Box observation space"),
    ([T, "--env", "RlpgTestNaNReward-v0"], "returned a non-finite reward (NaN or inf) in sub-env 0 at step 1"),
    ([T, "--env", "RlpgTestNaNObs-v0"], "returned a non-finite observation (NaN or inf) in sub-env 0 at step 3"),
    ([T, "--freeze", "actor.bogus"], "matches no parameter"),
    ([T, "--freeze", "actor", "critic"], "no trainable parameters left"),
    # algorithm-specific
    ([T, "--algo", "trpo", "--kl-guard", "0.5"], "unrecognized arguments: --kl-guard"),
    ([T, "--algo", "npg", "--kl-guard", "0.5"], "--kl-guard must be >= 1"),
    ([T, "--algo", "trpo", "--max-kl", "0"], "--max-kl must be > 0"),
    ([T, "--algo", "trpo", "--cg-iters", "0"], "--cg-iters must be > 0"),
    ([T, "--algo", "trpo", "--backtrack-coef", "1.5"], "--backtrack-coef must lie in"),
    ([T, "--algo", "trpo", "--vf-minibatches", "7"], "--vf-minibatches 7 does not divide"),
    ([T, "--algo", "trpo", "--max-kl", "nan"], "--max-kl must be a finite number"),
    ([T, "--algo", "reinforce", "--num-minibatches", "3"], "does not divide the batch size"),
    # run directories and paths
    ([T, "--run-name", "../x"], "--run-name must be a single directory name"),
    ([T, "--run-name", "a/b"], "--run-name must be a single directory name"),
    ([T, "--run-name", "/abs"], "--run-name must be a single directory name"),
    ([T, "--run-name", ".."], "--run-name must be a single directory name"),
    ([T, "--run-name", " x"], "--run-name must be a single directory name"),
    ([T, "--run-name", "x" * 300], "--run-name is 300 characters long"),
    ([T, "--logdir", "{files}/a_file"], "is a file, not a directory"),
    ([T, "--run-name", "existing"], "already exists; continue it with --resume"),
    ([T, "--run-name", "notarun", "--overwrite"], "not an rlpg run directory"),
    ([T, "--logdir", ""], "--logdir must not be empty"),
    # resume
    ([T, "--resume", "{logdir}/missing"], "no last.pt there"),
    ([T, "--resume", "{files}"], "no last.pt there"),
    ([T, "--resume", "{run}", "--learning-rate", "0.1"], "--learning-rate cannot change when resuming"),
    ([T, "--resume", "{run}", "--num-envs", "8"], "--num-envs cannot change when resuming"),
    ([T, "--resume", "{run}", "--overwrite"], "--resume and --overwrite exclude each other"),
    ([T, "--resume", "{run}"], "already finished its 512 steps"),
    ([T, "--resume", "{run}", "--algo", "trpo"], "trained with ppo"),
    ([T, "--resume", "{run}", "--env", "Acrobot-v1"], "trained on CartPole-v1"),
    ([T, "--resume", "{files}/old_run"], "lacks the state a resumed run needs"),
    # checkpoints given to training
    ([T, "--init-from", "{logdir}/missing.pt"], "does not exist"),
    ([T, "--init-from", "{files}/garbage.pt"], "corrupt"),
    ([T, "--init-from", "{pendulum}"], "was made for Pendulum-v1 with observation space"),
    ([T, "--init-from", "{files}/nan.pt"], "holds non-finite values"),
    # eval
    (["eval", "{logdir}/missing.pt"], "does not exist"),
    (["eval", "{files}/garbage.pt"], "corrupt"),
    (["eval", "{files}/foreign.pt"], "not an rlpg checkpoint"),
    (["eval", "{files}/no_policy.pt"], "lacks policy"),
    (["eval", "{files}/no_spaces.pt"], "lacks spaces"),
    (["eval", "{files}/no_config.pt"], "lacks config"),
    (["eval", "{files}/bad_arch.pt"], "description of its policy is incomplete"),
    (["eval", "{files}/nan.pt"], "holds non-finite values"),
    (["eval", "{files}/unsafe.pt"], "refused to load"),
    (["eval", "{files}/other_env.pt"], "was made for Acrobot-v1 with observation space"),
    (["eval", "{files}"], "no checkpoint in"),
    (["eval", "{run}", "--episodes", "0"], "--episodes must lie in"),
    (["eval", "{run}", "--num-envs", "-1"], "--num-envs in [1, 100000]"),
    (["eval", "{run}", "--seed", "-1"], "--seed must lie in"),
    (["eval", "{run}", "--device", "meta"], "not on 'meta' devices"),
    (["eval", "{run}", "--backend", "jax"], "invalid choice: 'jax'"),
    (["eval", "{run}", "--episodes", "x"], "invalid int value"),
    (["eval", "{files}/no_time_limit.pt", "--episodes", "1", "--num-envs", "1"], "has no time limit|needs one"),
    # export
    (["export", "{run}", "-o", "{logdir}/nodir/sub/x.onnx"], "does not exist; create it first"),
    (["export", "{run}", "-o", "{run}/best.pt"], "must end in .onnx"),
    (["export", "{run}", "-o", "{run}/config.json"], "must end in .onnx"),
    (["export", "{run}", "-o", "{files}/adir.onnx"], "is a directory"),
    (["export", "{logdir}/missing"], "does not exist"),
    (["export", "{files}/garbage.pt"], "corrupt"),
]


def _save_raw(path, payload):
    torch.save({"format": checkpoint.FORMAT, **payload}, path)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Two finished runs and a directory of broken or mismatched files."""
    base = tmp_path_factory.mktemp("prepared")
    kw = dict(total_steps=512, num_envs=4, num_steps=64, eval_episodes=2, num_eval_envs=2, progress=False,
              logdir=str(base / "runs"))
    run = rlpg.train("ppo", "CartPole-v1", run_name="cp", **kw).run_dir
    pendulum = rlpg.train("ppo", "Pendulum-v1", run_name="pd", **kw).run_dir
    files = base / "files"
    files.mkdir()
    (files / "a_file").write_text("not a directory")
    (files / "garbage.pt").write_bytes(b"\x00garbage" * 10)
    (files / "adir.onnx").mkdir()
    torch.save({"state_dict": {}}, files / "foreign.pt")
    good = {k: v for k, v in checkpoint.load(run / "last.pt").items() if k != "format"}
    for key in ("policy", "spaces", "config"):
        _save_raw(files / f"no_{key}.pt", {k: v for k, v in good.items() if k != key})
    train_cfg = good["config"]["train"]
    bad_arch = {**good["config"], "train": {**train_cfg, "hidden_sizes": "x"}}
    _save_raw(files / "bad_arch.pt", {**good, "config": bad_arch})
    nan_policy = {k: (v.clone().fill_(float("nan")) if k.endswith("bias") else v) for k, v in good["policy"].items()}
    _save_raw(files / "nan.pt", {**good, "policy": nan_policy})
    _save_raw(files / "unsafe.pt", {**good, "x": ValueError("a Python object")})
    _save_raw(files / "other_env.pt", {**good, "env_id": "Acrobot-v1"})
    # a 3-dim Box observation for the env without a time limit, with a policy of that shape
    obs_space = gymnasium.spaces.Box(-1.0, 1.0, (3,))
    policy = ActorCritic(obs_space, checkpoint.space_from_dict(good["spaces"]["action"]))
    _save_raw(files / "no_time_limit.pt", {
        **good, "env_id": "RlpgTestNoTimeLimit-v0", "policy": policy.state_dict(),
        "spaces": {**good["spaces"], "observation": checkpoint.space_to_dict(obs_space)},
        "config": {**good["config"], "train": {**train_cfg, "backend": "gymnasium"}},
    })
    old = files / "old_run"
    old.mkdir()
    _save_raw(old / "last.pt", {k: v for k, v in good.items() if k != "resume"})
    return {"run": run, "pendulum": pendulum, "files": files}


@pytest.mark.parametrize("argv, match", CASES, ids=[f"{i:03d}" for i in range(len(CASES))])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_behind(capsys, tmp_path, prepared, argv, match):
    logdir = tmp_path / "runs"
    logdir.mkdir()
    (logdir / "existing").mkdir()
    (logdir / "existing" / "config.json").write_text("{}")
    (logdir / "notarun").mkdir()
    (logdir / "notarun" / "holiday.jpg").write_bytes(b"x")
    runs = {"run": tmp_path / "run", "pendulum": tmp_path / "pendulum"}
    for key, path in runs.items():  # copies, so no case can touch the shared ones
        shutil.copytree(prepared[key], path)
    subs = {"logdir": str(logdir), "files": str(prepared["files"]), **{k: str(v) for k, v in runs.items()}}
    args = [a.format(**subs) for a in argv]
    if args[0] == "train" and "--logdir" not in args and "--resume" not in args:
        args += ["--logdir", str(logdir)]
    if args[0] == "train" and "--resume" not in args:
        args = args[:1] + FAST + args[1:]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    files_before = sorted(p.name for p in prepared["files"].rglob("*"))

    code = main(args)
    out, err = capsys.readouterr()

    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("rlpg: error: "), err
    assert any(m in lines[0] for m in match.split("|")), lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no run directory, no file
    assert sorted(p.name for p in prepared["files"].rglob("*")) == files_before


def test_the_table_is_large():
    assert len(CASES) >= 90
