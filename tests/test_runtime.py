"""rlpg.runtime: glibc malloc settings for fast CPU training, and the trainer's use of them."""

import platform
import sys

import pytest
import torch

import rlpg
from rlpg import runtime


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="needs Linux with glibc"
)
def test_glibc_takes_the_settings():
    assert runtime.keep_heap_memory() is True


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.keep_heap_memory() is False


@pytest.mark.parametrize("keep_heap", [True, False])
def test_the_command_line_applies_it_unless_turned_off_and_train_never_does(tmp_path, monkeypatch, keep_heap):
    from rlpg.cli import main

    calls = []
    monkeypatch.setattr(runtime, "keep_heap_memory", lambda: calls.append(1) or True)
    small = ["--total-steps", "1024", "--eval-episodes", "1", "--num-eval-envs", "1", "--progress", "false"]
    assert main(["train", *small, "--logdir", str(tmp_path), "--keep-heap", str(keep_heap).lower()]) == 0
    assert calls == ([1] if keep_heap else [])
    calls.clear()
    rlpg.train(total_steps=1024, eval_episodes=1, num_eval_envs=1, progress=False, logdir=str(tmp_path),
               keep_heap=True)
    assert calls == []  # a notebook's process keeps its allocator settings


def test_train_leaves_torch_threads_as_it_found_them(tmp_path):
    torch.set_num_threads(2)
    try:
        result = rlpg.train(total_steps=1024, eval_episodes=1, num_eval_envs=1, progress=False, logdir=str(tmp_path),
                            torch_threads=1)
        assert torch.get_num_threads() == 2
        assert result.global_step == 1024
    finally:
        torch.set_num_threads(1)
