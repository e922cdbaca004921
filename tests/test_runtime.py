"""rlpg.runtime: glibc malloc settings for fast CPU training, and the trainer's use of them."""

import platform
import sys

import pytest

import rlpg
from rlpg import runtime, trainer


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="needs Linux with glibc"
)
def test_glibc_takes_the_settings():
    assert runtime.keep_heap_memory() is True


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.keep_heap_memory() is False


@pytest.mark.parametrize("keep_heap", [True, False])
def test_trainer_applies_it_unless_turned_off(tmp_path, monkeypatch, keep_heap):
    calls = []
    monkeypatch.setattr(trainer, "keep_heap_memory", lambda: calls.append(1) or True)
    rlpg.train(total_steps=1024, eval_episodes=1, num_eval_envs=1, progress=False, logdir=str(tmp_path),
               keep_heap=keep_heap)
    assert calls == ([1] if keep_heap else [])
