"""Learning curves from run directories: read back from their TensorBoard event files, grouped by environment and
algorithm, drawn as the mean over seeds with the min-max spread shaded (`rlpg plot`, and `rlpg bench`'s curves).

Needs matplotlib (the `plot` extra) only to draw; reading curves needs nothing more than rlpg.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlpg.errors import RLPGError, install_line

TAGS = ("eval/mean_return", "rollout/episodic_return")
"""the curve drawn: the first of these a run has logged at more than one step"""


@dataclass
class Curve:
    """One run's curve: steps [K] and values [K], with the run's algorithm, environment and seed."""

    run_dir: Path
    algo: str
    env_id: str
    seed: int
    tag: str
    steps: np.ndarray
    values: np.ndarray


def run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run directories (holding config.json) given directly or anywhere below the given directories."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise RLPGError(f"{p} does not exist; pass run directories or a --logdir that holds them")
        found += [p] if (p / "config.json").is_file() else sorted(c.parent for c in p.rglob("config.json"))
    if not found:
        raise RLPGError(f"no run directories (with a config.json) in {', '.join(map(str, paths))}")
    return found


def read_curve(run_dir: Path, tags: tuple[str, ...] = TAGS) -> Curve | None:
    """The run's curve of the first tag in `tags` it has logged, or None when it logged none of them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = json.loads((run_dir / "config.json").read_text())["train"]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {tag: acc.Scalars(tag) for tag in tags if tag in acc.Tags()["scalars"]}
    # a run that evaluated only at its end has one eval point: then its training returns make the curve
    usable = [tag for tag, events in logged.items() if len(events) > 1] or list(logged)
    if not usable:
        return None
    events = logged[usable[0]]
    library = config.get("library", "rlpg")  # rlpg bench's SB3 runs are drawn beside rlpg's, named apart
    algo = config["algo"] if library == "rlpg" else f"{config['algo']} ({library})"
    return Curve(run_dir, algo, config["env_id"], int(config["seed"]), usable[0],
                 np.array([e.step for e in events], dtype=np.int64),
                 np.array([e.value for e in events], dtype=np.float64))


def group(curves: list[Curve]) -> dict[str, dict[str, list[Curve]]]:
    """env id -> algorithm -> that pair's curves (one per seed)."""
    out: dict[str, dict[str, list[Curve]]] = defaultdict(lambda: defaultdict(list))
    for c in curves:
        out[c.env_id][c.algo].append(c)
    return out


def mean_and_spread(curves: list[Curve], points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over seeds on a common grid: each curve interpolated linearly between its own points,
    up to the shortest run's last step (so every seed counts at every point drawn)."""
    end = min(int(c.steps[-1]) for c in curves)
    start = max(int(c.steps[0]) for c in curves)
    grid = np.linspace(start, end, points) if end > start else np.array([float(end)])
    values = np.stack([np.interp(grid, c.steps, c.values) for c in curves])
    return grid, values.mean(0), values.min(0), values.max(0)


def plot(paths: list[str | Path], output: str | Path, title: str | None = None) -> Path:
    """Draw the curves of every run under `paths` into a PNG: one panel per environment, one line per algorithm."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RLPGError(f"plotting needs matplotlib: {install_line('plot')}") from None
    out = Path(output)
    if out.suffix.lower() != ".png":
        raise RLPGError(f"-o {out} must end in .png")
    if not out.parent.is_dir():
        raise RLPGError(f"-o {out}: directory {out.parent} does not exist; create it first")
    curves = [c for c in (read_curve(d) for d in run_dirs(paths)) if c is not None and len(c.steps)]
    if not curves:
        raise RLPGError(f"no run under {', '.join(map(str, paths))} has logged {' or '.join(TAGS)} yet")
    groups = group(curves)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (env_id, by_algo) in zip(axes[0], sorted(groups.items()), strict=True):
        for algo, runs in sorted(by_algo.items()):
            steps, mean, lo, hi = mean_and_spread(runs)
            line = ax.plot(steps, mean, label=f"{algo} ({len(runs)} seed{'s' * (len(runs) > 1)})")[0]
            if len(runs) > 1:
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(runs[0].tag)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
