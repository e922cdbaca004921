"""Process-wide settings for fast CPU training: glibc's malloc (torch threads are set by the trainer).

torch allocates CPU tensors with malloc. glibc serves a block above its mmap threshold (128 KiB at start,
raised adaptively only up to 32 MiB) with a fresh mmap, and trims freed heap memory back to the OS, so the
multi-megabyte activations of a large-batch update or a rollout's batched critic pass are page-faulted in
again on every allocation. Measured on the 2-core dev machine (torch 2.13, 1 thread): `x.mul(2)` on
131072 x 64 float32 took 17.7 ms with glibc's defaults and 3.1 ms with the settings below, and PPO on 4096
torch-native CartPoles trained ~25% faster end to end. This is what preloading jemalloc or tcmalloc, as
torch's CPU performance guide suggests, achieves; mallopt needs nothing installed.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_heap_memory(threshold: int = 1 << 30) -> bool:
    """Serve blocks up to `threshold` bytes from malloc's heap and keep freed memory for reuse instead of
    returning it to the OS (glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD). The process then holds on to its
    peak heap size until it exits. Returns whether glibc took both settings: False where libc is not glibc
    (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the libc this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    int_max = (1 << 31) - 1  # mallopt takes an int
    threshold = min(threshold, int_max)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, min(2 * threshold, int_max)))
