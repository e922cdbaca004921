"""What a run would use, in words: the value `rlpg train --help` shows beside each flag, and `rlpg presets`.

The help's values come from the resolution a run goes through (rlpg.runs.resolve_configs: defaults < presets < the
flags given), so the help cannot disagree with the run it describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from rlpg.config import TrainConfig, default_of, flag_value
from rlpg.errors import RLPGError
from rlpg.presets import PRESETS, preset_name


def applied_presets(algo: str, env_id: str, backend: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, settings) of each preset entry a run of `algo` on `env_id` and `backend` takes, in the order they
    apply (later wins), e.g. [("ppo/CartPole-v1", ...), ("ppo/CartPole-v1/torch", ...)]."""
    names = (preset_name(algo, env_id, backend) or "").split(" + ")
    entries = [("/".join(key), settings) for key, settings in PRESETS.items() if "/".join(key) in names]
    return sorted(entries, key=lambda entry: names.index(entry[0]))


def help_notes(algo: str, config_cls: type, given: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The line that says which preset applies, and per field the note `rlpg.config.add_arguments` shows: "set: X"
    (`given` on the command line: algo, env_id, backend, env_packages), "preset NAME: X", "default: auto = X for
    ENV" (a None default the run derives from the env's spaces; "auto" when they cannot be known here), or
    "default: X"."""
    from rlpg.envs import resolve_backend, spaces_of
    from rlpg.runs import resolve_configs

    env_id = given.get("env_id", TrainConfig.env_id)
    overrides = {k: v for k, v in given.items() if k in ("backend", "env_packages")}
    try:
        backend = resolve_backend(env_id, overrides.get("backend", "auto"))
        cfg, agent_cfg = resolve_configs(algo, env_id, overrides)
    except RLPGError as e:
        return f"The settings of {algo} on {env_id} cannot be resolved ({e}); the defaults are shown.", {}
    spaces_known = spaces_of(env_id, backend, cfg.env_packages) is not None
    sources = {k: name for name, settings in applied_presets(algo, env_id, backend) for k in settings}
    notes: dict[str, str] = {}
    for obj in (cfg, agent_cfg):
        for f in fields(obj):
            value = flag_value(getattr(obj, f.name))
            if f.name in given:
                notes[f.name] = f"set: {value}"
            elif f.name in sources:
                notes[f.name] = f"preset {sources[f.name]}: {value}"
            elif f.name == "backend" and value == "auto":
                notes[f.name] = f"default: auto = {backend} for {env_id}"
            elif default_of(f) is None and getattr(obj, f.name) is not None:
                notes[f.name] = f"default: auto = {value} for {env_id}" if spaces_known else "default: auto"
            else:
                notes[f.name] = f"default: {value}"
    tuned = preset_name(algo, env_id, backend)
    if tuned:
        line = f"Training {algo} on {env_id} ({backend} backend): preset {tuned} applies."
    else:
        norm = [n for n, on in (("observation", cfg.normalize_obs), ("reward", cfg.normalize_reward)) if on]
        line = f"Training {algo} on {env_id} ({backend} backend): no preset, the defaults apply" + (
            f" (with {' and '.join(norm)} normalisation: a Box-action task)." if norm else ".")
    if not spaces_known:
        line += f" {env_id} cannot be made here, so the settings derived from its spaces show as auto."
    return (f"{line} Each flag below ends with the value this run takes and where it comes from; --env, --backend "
            f"and --algo change them (rlpg presets lists every preset).", notes)


def resume_notes(run_dir: str, payload: dict[str, Any], resumable: Sequence[str]) -> tuple[str, dict[str, str]]:
    """`help_notes` for `rlpg train --resume RUN_DIR --help`: the run's own settings."""
    saved = {**payload["config"]["train"], **payload["config"]["agent"]}
    notes = {k: f"this run: {flag_value(v)}" for k, v in saved.items()}
    flags = ", ".join("--" + k.replace("_", "-") for k in resumable)
    return (f"Resuming {run_dir} ({payload['algo']} on {payload['env_id']}, step {payload['global_step']:,}): its "
            f"own settings apply, shown below; only {flags} may change.", notes)


def presets_text(algo: str | None = None, env_id: str | None = None) -> str:
    """Every preset entry (or those of `algo`, and those a run on `env_id` takes on some backend), one block each:
    its name, when it applies, its settings as flags."""
    blocks = []
    for key, settings in PRESETS.items():
        name = "/".join(key)
        if algo is not None and key[0] != algo:
            continue
        if env_id is not None and not any(name in (preset_name(key[0], env_id, b) or "").split(" + ")
                                          for b in ("torch", "gymnasium")):
            continue
        if len(key) > 2:
            where = f"the {key[2]} backend, over {'/'.join(key[:2])}"
        else:
            where = (f"every {key[1].removesuffix('*')}... id, " if key[1].endswith("*") else "") + "every backend"
        flags = {f"--{k.replace('_', '-')}": flag_value(v) for k, v in settings.items()}
        width = max(map(len, flags), default=0)
        lines = [f"{name}  ({where})", *(f"  {flag:<{width}}  {value}" for flag, value in flags.items())]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
