"""rlpg bench: runs every (algo, env, seed) once, scores final and best policies, survives being stopped, and draws
curves; rlpg plot draws the same curves from any run directories."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from rlpg import checkpoint
from rlpg.bench import Bench, Runner, score, summary_table
from rlpg.cli import main
from rlpg.errors import ConfigError

SMALL = ["--num-envs", "8", "--num-steps", "64"]


def rows(out):
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def event_times(run_dir):
    """(first, last) wall time of a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    times = [Event.FromString(r).wall_time for p in run_dir.glob("events.out.tfevents.*")
             for r in RawEventFileLoader(str(p)).Load()]
    return min(times), max(times)


def test_a_benchmark_records_every_run_once_with_final_and_best_scores(tmp_path, capsys):
    out = tmp_path / "b"
    argv = ["bench", "--algos", "ppo", "npg", "--envs", "CartPole-v1", "--seeds", "1", "--total-steps", "2048",
            "--eval-points", "4", "--eval-episodes", "5", "--jobs", "2", "--sb3", "off", "--out", str(out), "--",
            *SMALL]
    assert main(argv) == 0
    recorded = rows(out)  # two at a time: recorded in the order they finish
    assert sorted((r["algo"], r["seed"], r["steps"]) for r in recorded) == [("npg", "1", "2048"), ("ppo", "1", "2048")]
    for r in recorded:  # the scores are the deterministic returns of last.pt and best.pt on the benchmark's seed
        assert float(r["final_return"]) == pytest.approx(score(out / "runs" / f"CartPole-v1__{r['algo']}__1" /
                                                               "last.pt", 5))
        assert 8 <= float(r["best_return"]) <= 500
    spans = [event_times(out / "runs" / f"CartPole-v1__{a}__1") for a in ("ppo", "npg")]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # --jobs 2: the two runs trained side by side
    table = (out / "results.md").read_text()
    assert "| CartPole-v1 | npg | rlpg | 2048 | 1 |" in table and "| CartPole-v1 | ppo | rlpg | 2048 | 1 |" in table
    assert (out / "curves.png").stat().st_size > 10_000
    # periodic evaluations every 2048 / 4 steps drew the curve
    saved = checkpoint.load(out / "runs" / "CartPole-v1__ppo__1" / "last.pt")
    assert saved["config"]["train"]["eval_interval"] == 512
    capsys.readouterr()
    assert main(argv) == 0  # everything is recorded: nothing runs again
    assert "0 run(s) recorded" in capsys.readouterr().out and len(rows(out)) == 2


def test_a_stopped_benchmark_resumes_its_unfinished_run(tmp_path):
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "rlpg.cli", "bench", "--envs", "CartPole-v1", "--seeds", "1", "--total-steps",
           "3000000", "--sb3", "off", "--out", str(out), "--", "--checkpoint-interval", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    last = out / "runs" / "CartPole-v1__ppo__1" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not last.exists():
        time.sleep(0.2)
    time.sleep(1.0)
    if sys.platform != "win32":  # a second benchmark on the same OUT while this one runs is refused, not run twice
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines()[-1] == (f"rlpg: error: another rlpg bench is running on {out}; wait "
                                                          "for it to end (it records every run it finishes) or give "
                                                          "this one another --out")
        assert proc.poll() is None  # and the first goes on
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "continues on the next rlpg bench" in stdout and "Traceback" not in stderr
    saved = checkpoint.load(last)["global_step"]
    assert 0 < saved < 3_000_000
    assert not (out / "results.csv").exists()
    first_stretch = float((out / "runs" / "CartPole-v1__ppo__1.seconds").read_text())
    assert first_stretch > 1.0
    # the next benchmark continues that run (shortened here through Bench's own API) and records it
    bench = Bench(["ppo"], ["CartPole-v1"], [1], 3_000_000, out)
    runner = Runner(bench)
    assert runner.command("ppo", "CartPole-v1", 1)[-4:] == ["--resume", str(last.parent), "--progress", "false"]
    bench.total_steps = saved + 4096
    runner.command = lambda *a: [sys.executable, "-m", "rlpg.cli", "train", "--resume", str(last.parent),
                                 "--total-steps", str(saved + 4096), "--progress", "false"]
    assert runner.run() == 1
    assert rows(out)[0]["steps"] == str(saved + 4096)
    assert float(rows(out)[0]["train_minutes"]) * 60 > first_stretch  # both stretches of the run, not the last one
    assert "resuming ppo on CartPole-v1" in (out / "runs" / "CartPole-v1__ppo__1.log").read_text()


def test_a_run_trained_but_not_yet_scored_is_scored_without_training_again(tmp_path, capsys):
    """A benchmark stopped between a run's last update and its scores: the next one scores that run; resuming it
    would be refused (the run has no steps left)."""
    out = tmp_path / "b"
    argv = ["bench", "--envs", "CartPole-v1", "--seeds", "1", "--total-steps", "2048", "--eval-points", "2",
            "--eval-episodes", "3", "--sb3", "off", "--out", str(out), "--", *SMALL]
    assert main(argv) == 0
    first = rows(out)
    log = out / "runs" / "CartPole-v1__ppo__1.log"
    trained_log = log.read_text()
    (out / "results.csv").unlink()  # as if stopped before recording
    assert main(argv) == 0, capsys.readouterr().err
    again = rows(out)
    assert log.read_text() == trained_log  # no `rlpg train` was started for it
    assert [(r["steps"], r["final_return"], r["best_return"]) for r in again] == [
        (r["steps"], r["final_return"], r["best_return"]) for r in first]
    assert 0 < float(again[0]["train_minutes"]) <= float(first[0]["train_minutes"])  # the span of its events


def test_summary_table_gives_mean_and_spread_over_seeds():
    recorded = [{"library": "rlpg", "algo": "ppo", "env_id": "Hopper-v5", "seed": str(s), "steps": "1000",
                 "final_return": str(f), "best_return": str(b), "train_minutes": "2.0", "run_dir": "x"}
                for s, f, b in ((2, 300.0, 500.0), (1, 100.0, 400.0))]
    table = summary_table(recorded)
    assert ("| Hopper-v5 | ppo | rlpg | 1000 | 1, 2 | 200.0 +- 100.0 (100 / 300) | 450.0 +- 50.0 (400 / 500) | 2.0 |"
            in table)
    small = [{**r, "env_id": "MinAtar/Breakout-v1", "final_return": str(f), "best_return": str(f)}
             for r, f in zip(recorded, (6.9, 6.55), strict=True)]
    assert "| 6.7 +- 0.2 (6.5 / 6.9) |" in summary_table(small)  # small returns keep their tenths


def test_bad_benchmark_settings_are_refused():
    with pytest.raises(ConfigError, match="at least one"):
        Bench([], ["CartPole-v1"], [1], 100, None)
    with pytest.raises(ConfigError, match="must be > 0"):
        Bench(["ppo"], ["CartPole-v1"], [1], 0, None)
    with pytest.raises(ConfigError, match="--jobs must be >= 1"):
        Runner(Bench(["ppo"], ["CartPole-v1"], [1], 100, None), jobs=0)


def test_rlpg_plot_draws_runs_and_refuses_bad_paths(tmp_path, capsys):
    import rlpg

    for seed in (1, 2):
        rlpg.train("ppo", "CartPole-v1", total_steps=1024, num_envs=4, num_steps=64, eval_interval=256,
                   eval_episodes=2, num_eval_envs=2, progress=False, logdir=str(tmp_path / "runs"), seed=seed)
    assert main(["plot", str(tmp_path / "runs"), "-o", str(tmp_path / "c.png"), "--title", "t"]) == 0
    assert (tmp_path / "c.png").stat().st_size > 10_000
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert main(["plot", str(tmp_path / "runs"), "-o", str(tmp_path / "c.jpg")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "must end in .png" in err
