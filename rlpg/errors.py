"""Errors rlpg raises for bad input. The command line prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RLPGError(Exception):
    """Base class: a problem with the user's input, reported without a traceback by the CLI."""


class ConfigError(RLPGError, ValueError):
    """A hyperparameter is non-positive, out of range or inconsistent with another."""


class UnknownNameError(RLPGError, KeyError):
    """An unknown algorithm or environment id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnsupportedSpaceError(RLPGError, TypeError):
    """An observation or action space rlpg has no policy head for."""


class CheckpointError(RLPGError, OSError):
    """A checkpoint is missing, unreadable or not an rlpg checkpoint."""


class NonFiniteError(RLPGError, FloatingPointError):
    """A loss or gradient became NaN or infinite; the parameters were left untouched."""


def install_line(extra: str) -> str:
    """How to install one of rlpg's extras, as the README does it (rlpg installs from its clone, not from PyPI)."""
    return f"pip install -e '.[{extra}]' in rlpg's clone (.venv/bin/pip after the README's set-up)"


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build an UnknownNameError that suggests the closest known names."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if not close:
        close = [k for k in known if name.lower().split("-")[0] in k.lower()][:3]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}{hint}")


class StopNow(BaseException):
    """A stop signal (SIGTERM, SIGINT, SIGUSR1) that cannot wait for the end of the current iteration: a second
    signal, or one that arrives while nothing is half done. A BaseException, like KeyboardInterrupt, so no
    `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
