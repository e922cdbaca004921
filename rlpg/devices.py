"""Devices and memory: `--device` checked to exist, and sizes checked against free memory before allocating."""

from __future__ import annotations

import os

import torch

from rlpg.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The torch device of `--device`: auto, cpu, cuda, cuda:N or mps, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} was asked for but no CUDA device is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("--device mps was asked for but MPS is not available here; use --device cpu")
        return device
    raise ConfigError(f"--device {name}: rlpg trains on cpu, cuda or mps, not on {device.type!r} devices")


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device` (None when unknown): MemAvailable for the CPU, the driver's free
    memory for CUDA."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# bytes per sub-env besides the rollout: a torch-native env holds a few state tensors; a Gymnasium env is a Python
# object (a classic-control one takes a few kB, a MuJoCo one its model and data)
ENV_BYTES = {"torch": 256, "gymnasium": 64 * 1024}


def check_memory(what: str, need: int, device: torch.device, fix: str) -> None:
    """ConfigError before an allocation of ~`need` bytes that cannot fit (a clear line instead of an allocator
    traceback, or the machine swapping for minutes)."""
    free = available_memory(device)
    if free is not None and need > free:
        raise ConfigError(f"{what} needs about {need / 2**30:.3g} GiB but only {free / 2**30:.3g} GiB is free on "
                          f"{device}; {fix}")
