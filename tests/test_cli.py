"""The command line: bad input gives one clear line and exit code 2; eval, export."""

import importlib.util
import json
import sys

import pytest
import torch
from conftest import one_line_error, run_cli

from rlpg import checkpoint

FAST = [
    "--total-steps",
    "512",
    "--num-envs",
    "4",
    "--num-steps",
    "64",
    "--eval-episodes",
    "2",
    "--num-eval-envs",
    "2",
    "--progress",
    "false",
]


def test_unknown_algorithm_suggests(capsys):
    one_line_error(capsys, "train", "--algo", "ppo2", match="did you mean 'ppo'")


def test_gae_lambda_is_refused_for_reinforce(capsys, tmp_path):
    one_line_error(capsys, "train", "--algo", "reinforce", "--gae-lambda", "0.9", "--logdir", str(tmp_path),
                   match="--gae-lambda 0.9 does not apply to reinforce")


def test_unknown_env_suggests_closest_ids(capsys, tmp_path):
    line = one_line_error(
        capsys, "train", "--env", "CartPol-v1", "--logdir", str(tmp_path), match="unknown environment"
    )
    assert "CartPole-v1" in line


def test_unsupported_space_names_supported_ones(capsys, tmp_path):
    one_line_error(
        capsys,
        "train",
        "--env",
        "RlpgTestUnsupportedObs-v0",
        "--logdir",
        str(tmp_path),
        match="rlpg supports observations: Box, Discrete",
    )


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--num-minibatches", "7"], "does not divide the batch size"),
        (["--learning-rate", "-1"], "--learning-rate must be > 0"),
        (["--num-envs", "0"], "--num-envs must be > 0"),
        (["--gamma", "1.5"], "--gamma must lie in [0.0, 1.0]"),
        (["--optimizer", "adagrad"], "--optimizer must be one of"),
        (["--backend", "torch", "--env", "LunarLander-v3"], "torch-native environment"),
        (["--freeze", "actor.bogus"], "matches no parameter"),
    ],
)
def test_bad_hyperparameters(capsys, tmp_path, flags, match):
    one_line_error(capsys, "train", "--logdir", str(tmp_path), *FAST, *flags, match=match)


def test_missing_and_corrupt_checkpoints(capsys, tmp_path):
    one_line_error(capsys, "eval", str(tmp_path / "missing.pt"), match="does not exist")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    one_line_error(capsys, "eval", str(bad), match="corrupt")
    one_line_error(capsys, "train", "--init-from", str(bad), "--logdir", str(tmp_path), *FAST, match="corrupt")


def test_non_finite_reward_names_the_env_index_and_step(capsys, tmp_path):
    line = one_line_error(
        capsys,
        "train",
        "--env",
        "RlpgTestNaNReward-v0",
        "--logdir",
        str(tmp_path),
        "--run-name",
        "nan",
        *FAST,
        match="RlpgTestNaNReward-v0 returned a non-finite reward",
    )
    assert "sub-env 0 at step 1" in line
    # the error came before any update: no checkpoint was written, so none can hold NaN
    assert not (tmp_path / "nan" / "last.pt").exists()


def test_train_eval_json_and_export(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "train", "--env", "CartPole-v1", "--logdir", str(tmp_path), "--run-name", "ok", *FAST
    )
    assert code == 0 and "the final policy (last.pt) scores" in out
    run = tmp_path / "ok"
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file() and (run / "config.json").is_file()
    code, out, _ = run_cli(capsys, "eval", str(run), "--episodes", "3", "--json")
    result = json.loads(out)
    assert code == 0 and set(result) >= {"mean_return", "std_return", "episodes"} and result["episodes"] == 3
    assert 8 <= result["mean_return"] <= 500


def test_export_onnx_matches_torch(capsys, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    code, _, _ = run_cli(
        capsys,
        "train",
        "--env",
        "Pendulum-v1",
        "--normalize-obs",
        "true",
        "--logdir",
        str(tmp_path),
        "--run-name",
        "x",
        *FAST,
    )
    assert code == 0
    code, out, _ = run_cli(capsys, "export", str(tmp_path / "x"), "-o", str(tmp_path / "pi.onnx"))
    assert code == 0 and (tmp_path / "pi.onnx").is_file()
    import rlpg

    policy = rlpg.load_policy(tmp_path / "x")
    obs = torch.randn(6, 3).numpy() * 3
    onnx_action = ort.InferenceSession(str(tmp_path / "pi.onnx")).run(None, {"obs": obs})[0]
    torch.testing.assert_close(torch.as_tensor(onnx_action), torch.as_tensor(policy.predict(obs)), rtol=1e-4, atol=1e-5)


def test_flags_can_set_none(capsys, tmp_path):
    code, _, _ = run_cli(capsys, "train", "--logdir", str(tmp_path), "--run-name", "n", *FAST,
                         "--max-grad-norm", "none", "--target-kl", "0.5")
    saved = checkpoint.load(tmp_path / "n" / "last.pt")
    assert code == 0 and saved["config"]["agent"]["max_grad_norm"] is None
    assert saved["config"]["agent"]["target_kl"] == 0.5


def test_export_clips_actions_unless_raw_actions(capsys, out_of_bounds_checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import rlpg

    policy = rlpg.load_policy(out_of_bounds_checkpoint)
    obs = torch.randn(32, 3, generator=torch.Generator().manual_seed(3)).numpy()
    for flags, clip in (((), True), (("--raw-actions",), False)):
        out = tmp_path / f"pi_{clip}.onnx"
        code, _, _ = run_cli(capsys, "export", str(out_of_bounds_checkpoint), "-o", str(out), *flags)
        assert code == 0
        action = ort.InferenceSession(str(out)).run(None, {"obs": obs})[0]
        torch.testing.assert_close(torch.as_tensor(action), torch.as_tensor(policy.predict(obs, clip=clip)))
    assert not torch.equal(torch.as_tensor(action), torch.as_tensor(policy.predict(obs)))  # raw leaves the bounds


def test_eval_falls_back_to_last_pt_when_best_pt_is_unreadable(capsys, tmp_path):
    code, _, _ = run_cli(capsys, "train", "--logdir", str(tmp_path), "--run-name", "fb", *FAST)
    assert code == 0
    (tmp_path / "fb" / "best.pt").write_bytes(b"half a file")
    code, out, err = run_cli(capsys, "eval", str(tmp_path / "fb"), "--episodes", "2", "--json")
    assert code == 0, err
    assert "best.pt" in err and "evaluating last.pt instead" in err and len(err.strip().splitlines()) == 1
    assert json.loads(out)["checkpoint"].endswith("last.pt")


def test_train_prints_progress_on_stdout_and_nothing_on_stderr(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--logdir", str(tmp_path), "--run-name", "quiet", *FAST)
    assert code == 0 and err == ""
    assert out.startswith("rlpg: training ppo on CartPole-v1 (torch backend, preset ppo/CartPole-v1 + ")


def test_eval_records_videos_of_the_first_episodes(capsys, tmp_path):
    pytest.importorskip("moviepy")
    pytest.importorskip("pygame")
    imageio = pytest.importorskip("imageio.v3")
    code, _, _ = run_cli(capsys, "train", "--logdir", str(tmp_path), "--run-name", "v", *FAST)
    assert code == 0
    videos = tmp_path / "videos"
    code, out, err = run_cli(capsys, "eval", str(tmp_path / "v"), "--episodes", "3", "--video", str(videos),
                             "--video-episodes", "2", "--json")
    assert code == 0 and err == "", err  # nothing from pygame or SDL on a headless machine
    result = json.loads(out)
    files = sorted(videos.glob("*.mp4"))
    assert [f.name for f in files] == ["CartPole-v1__ppo-episode-0.mp4", "CartPole-v1__ppo-episode-1.mp4"]
    assert result["videos"] == [str(f) for f in files] and all(f.stat().st_size > 0 for f in files)
    assert len(result["returns"]) == 3 and result["mean_return"] == pytest.approx(sum(result["returns"]) / 3)
    for f, ret in zip(files, result["returns"], strict=False):
        frames = list(imageio.imiter(f, plugin="FFMPEG"))
        # a CartPole return counts the steps: the video shows that episode (the reset frame and one per step;
        # moviepy may drop the last one)
        assert len(frames) in (ret, ret + 1) and frames[0].shape == (400, 600, 3)
        assert frames[0].std() > 0  # a drawing, not a blank frame
    (tmp_path / "a_file").write_text("")
    one_line_error(capsys, "eval", str(tmp_path / "v"), "--video", str(tmp_path / "a_file"), match="is a file")


def test_eval_video_needs_moviepy_and_pygame(capsys, tmp_path, monkeypatch):
    code, _, _ = run_cli(capsys, "train", "--logdir", str(tmp_path), "--run-name", "v", *FAST)
    assert code == 0
    monkeypatch.setitem(sys.modules, "moviepy", None)  # as if it were not installed
    one_line_error(capsys, "eval", str(tmp_path / "v"), "--video", str(tmp_path / "out"),
                   match="--video needs moviepy (and pygame to render the classic-control tasks): pip install -e "
                   "'.[video]'")
    if importlib.util.find_spec("moviepy") is None:
        return
    monkeypatch.delitem(sys.modules, "moviepy")
    monkeypatch.setitem(sys.modules, "pygame", None)
    line = one_line_error(capsys, "eval", str(tmp_path / "v"), "--video", str(tmp_path / "out"), match="pip install "
                          "-e '.[video]'")
    assert "pygame" in line
    one_line_error(capsys, "eval", str(tmp_path / "v"), "--video-episodes", "2", match="--video-episodes N needs "
                   "--video DIR")


def test_eval_runs_with_the_runs_thread_count_not_one_per_core(capsys, tmp_path, monkeypatch):
    import rlpg.rollout

    code, _, _ = run_cli(capsys, "train", "--logdir", str(tmp_path), "--run-name", "t", *FAST)
    assert code == 0
    seen = []
    evaluate = rlpg.rollout.evaluate

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(rlpg.rollout, "evaluate", spy)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # as torch starts on a 2-core machine
        for flags, threads in (((), 1), (("--torch-threads", "2"), 2)):  # the run's setting (1), or the flag's
            code, _, err = run_cli(capsys, "eval", str(tmp_path / "t"), "--episodes", "2", *flags)
            assert code == 0, err
            assert seen.pop() == threads
    finally:
        torch.set_num_threads(previous)


def test_video_evaluation_acts_as_the_batched_evaluation(capsys, tmp_path):
    """The same episode played on the Gymnasium backend (one env, the same seed) and on the rendering env of
    --video gives the same return: the run's observation normalisation and the action clipping apply in both.
    MountainCarContinuous charges the action as the policy gave it (the env clips only the force), so an unclipped
    action would cost more."""
    pytest.importorskip("moviepy")
    from rlpg.checkpoint import policy_from_payload
    from rlpg.video import evaluate_with_video

    code, _, _ = run_cli(capsys, "train", "--env", "MountainCarContinuous-v0", "--normalize-obs", "true", "--logdir",
                         str(tmp_path), "--run-name", "mc", *FAST)
    assert code == 0
    payload = checkpoint.load(tmp_path / "mc" / "last.pt")
    assert payload["normalizer"]["obs_rms"]["count"] > 1  # statistics that change what the policy sees
    oob = {**payload, "policy": {**payload["policy"], "actor.net.4.weight": payload["policy"]["actor.net.4.weight"]
                                 * 300.0}}  # actions far outside [-1, 1]
    assert policy_from_payload(oob).predict(torch.tensor([[-0.5, 0.0]]), clip=False).abs().max() > 1.5
    for name, p in (("trained", payload), ("oob", oob)):
        checkpoint.save(tmp_path / f"{name}.pt", {k: v for k, v in p.items() if k != "format"})
        code, out, err = run_cli(capsys, "eval", str(tmp_path / f"{name}.pt"), "--backend", "gymnasium", "--num-envs",
                                 "1", "--episodes", "1", "--seed", "7", "--json")
        assert code == 0, err
        # no episode recorded: the rendering env plays without drawing a frame
        returns, videos = evaluate_with_video(policy_from_payload(p), "MountainCarContinuous-v0", 1, tmp_path / "v", 0,
                                              seed=7)
        assert videos == [] and returns.tolist() == pytest.approx(json.loads(out)["returns"], rel=1e-5), name
