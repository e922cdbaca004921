"""Real signals to a training subprocess: SIGTERM, SIGINT (once, twice, during start-up), SIGUSR1 and SIGKILL.
Each stops cleanly (exit 128 + signal, no traceback), every checkpoint left behind loads, and --resume goes on."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlpg import checkpoint
from rlpg.cli import main

LONG = ["--total-steps", "50000000", "--progress", "false", "--eval-interval", "0"]


def start(tmp_path, name, *flags):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rlpg.cli", "train", "--logdir", str(tmp_path), "--run-name", name, *LONG, *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_updates(run: Path, proc, min_bytes=20_000, timeout=120):
    """Until a few more updates' scalars have been flushed to the event files."""

    def size():
        return sum(p.stat().st_size for p in run.glob("events.out.tfevents*")) if run.is_dir() else 0

    deadline, base = time.time() + timeout, size()
    while time.time() < deadline and proc.poll() is None:
        if size() - base >= min_bytes:
            return
        time.sleep(0.1)
    raise AssertionError(f"no training progress in {timeout} s: {proc.stderr.read() if proc.poll() else ''}")


def wait_for_handler(pid: int, sig: int, timeout: float = 60) -> None:
    """Until process `pid` catches `sig` (Linux: the SigCgt mask in /proc/PID/status)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught >> (sig - 1) & 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never installed a handler for signal {sig}")


def resume_briefly(capsys, run: Path) -> int:
    """`rlpg train --resume RUN` for 2 more updates; returns the step it ended at."""
    saved = checkpoint.load(run / "last.pt")
    target = saved["global_step"] + 2048
    code = main(["train", "--resume", str(run), "--total-steps", str(target), "--progress", "false"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"resuming ppo on CartPole-v1 at step {saved['global_step']:,}" in out
    after = checkpoint.load(run / "last.pt")
    assert after["global_step"] == target
    assert not list(run.glob(".*.tmp"))
    return target


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGUSR1, 138)])
def test_a_stop_signal_saves_last_pt_and_resume_continues(tmp_path, capsys, sig, code):
    proc = start(tmp_path, "run", "--checkpoint-seconds", "0", "--checkpoint-interval", "0")
    run = tmp_path / "run"
    wait_for_updates(run, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"stopped by {signal.Signals(sig).name}" in err and f"rlpg train --resume {run}" in err
    saved = checkpoint.load(run / "last.pt")
    assert saved["global_step"] > 0 and saved["global_step"] % 1024 == 0  # at an iteration boundary
    assert not list(run.glob(".*.tmp"))
    resume_briefly(capsys, run)


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path):
    proc = start(tmp_path, "twice", "--checkpoint-seconds", "0", "--checkpoint-interval", "0", "--num-envs", "4096")
    run = tmp_path / "twice"
    wait_for_updates(run, proc, min_bytes=4_000)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopped by SIGINT" in err
    if (run / "last.pt").exists():  # whatever last.pt is there is whole and loads
        checkpoint.load(run / "last.pt")
    else:
        assert "no checkpoint was written yet" in err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_start_up_exits_quietly(tmp_path, sig, code):
    proc = start(tmp_path, "early")
    wait_for_handler(proc.pid, signal.SIGTERM)  # rlpg's main() has started (it takes SIGTERM over first thing)
    proc.send_signal(sig)  # while torch and the envs are still being imported and built
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "nothing was saved" in err


def test_sigkill_at_any_point_leaves_loadable_checkpoints_that_resume(tmp_path, capsys):
    # a checkpoint after every update, so the kills land before, between and during writes
    run = tmp_path / "kill"
    for delay in (0.0, 0.35, 0.8):
        if (run / "last.pt").exists():
            proc = subprocess.Popen(
                [sys.executable, "-m", "rlpg.cli", "train", "--resume", str(run), "--total-steps", "50000000",
                 "--checkpoint-seconds", "0", "--checkpoint-interval", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        else:
            proc = start(tmp_path, "kill", "--checkpoint-seconds", "0", "--checkpoint-interval", "1")
        wait_for_updates(run, proc, min_bytes=8_000)
        time.sleep(delay)
        proc.kill()
        proc.communicate(timeout=60)
        for name in ("last.pt", "best.pt"):
            if (run / name).exists():
                checkpoint.load(run / name)
    steps = checkpoint.load(run / "last.pt")["global_step"]
    assert steps > 0
    assert resume_briefly(capsys, run) == steps + 2048


def test_a_start_up_signal_that_a_library_swallowed_still_stops_the_run(tmp_path, capsys, monkeypatch):
    """The StopNow of a signal during start-up can be swallowed by a bare `except:` in some library's import; the run
    must still stop, before training, with the signal's exit code and nothing left behind."""
    from rlpg import cli
    from rlpg.trainer import Trainer

    build = Trainer.__init__

    def build_then_swallow_a_signal(self, *args, **kwargs):
        build(self, *args, **kwargs)
        try:
            cli._stop_during_start_up(signal.SIGTERM, None)
        except BaseException:  # noqa: B036 - what the library does
            pass

    monkeypatch.setattr(Trainer, "__init__", build_then_swallow_a_signal)
    code = cli.main(["train", "--total-steps", "4096", "--logdir", str(tmp_path), "--run-name", "r",
                     "--progress", "false"])
    err = capsys.readouterr().err
    assert code == 143 and "interrupted (SIGTERM); nothing was saved" in err
    assert not (tmp_path / "r").exists()
    monkeypatch.undo()
    assert cli.main(["presets", "--algo", "npg"]) == 0  # the next command starts clean


def test_sigterm_stops_a_k_seed_run_with_every_seed_saved_at_one_step(tmp_path, capsys):
    proc = start(tmp_path, "group", "--seeds", "1-3", "--checkpoint-seconds", "0", "--checkpoint-interval", "0")
    group = tmp_path / "group"
    wait_for_updates(group / "seed_3", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and f"rlpg train --resume {group}" in err
    steps = {checkpoint.load(group / f"seed_{s}" / "last.pt")["global_step"] for s in (1, 2, 3)}
    assert len(steps) == 1 and steps.pop() % 1024 == 0
    assert not list(group.rglob("*.tmp")) and not list(group.rglob("*seeds-tmp"))
    saved = checkpoint.load(group / "seed_1" / "last.pt")["global_step"]
    code = main(["train", "--resume", str(group), "--total-steps", str(saved + 2048), "--progress", "false"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "seeds 1 2 3" in out and "summary.json" in out
    assert {checkpoint.load(group / f"seed_{s}" / "last.pt")["global_step"] for s in (1, 2, 3)} == {saved + 2048}
