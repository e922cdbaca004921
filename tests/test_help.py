"""`rlpg train --help` shows the value each flag will take and where it comes from; `rlpg presets` lists them."""

import re

import pytest

from rlpg.cli import main
from rlpg.config import TrainConfig, flag_value
from rlpg.envs import resolve_backend
from rlpg.presets import PRESETS
from rlpg.runs import resolve_configs

NOTE = re.compile(r"^(--[a-z0-9-]+) .*\((set|preset (\S+)|default|this run): ([^()]*)\)$")


def help_of(capsys, monkeypatch, *argv):
    """The help text (one line per flag: a wide terminal) and, per field, (source, preset name, value shown)."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out = capsys.readouterr().out
    assert e.value.code == 0
    entries = []  # one per flag: its line, and the next one where argparse moves the help of a long flag
    for line in out.splitlines():
        if line.startswith("  -"):
            entries.append(line.strip())
        elif line.startswith("      ") and entries:
            entries[-1] += " " + line.strip()
    notes = {}
    for entry in entries:
        if m := NOTE.match(entry):
            flag, source, name, value = m.groups()
            notes[flag[2:].replace("-", "_")] = (source.split()[0], name, value)
    return out, notes


def assert_notes_match_the_run(notes, algo, env_id, overrides):
    """Every value the help shows is the one resolve_configs gives the run (derived ones as `auto = X`)."""
    cfg, agent_cfg = resolve_configs(algo, env_id, overrides)
    fields = {**vars(cfg), **vars(agent_cfg)}
    assert set(notes) == set(fields)
    for name, (_, _, shown) in notes.items():
        if shown == "auto":  # the env's spaces are unknown: nothing is claimed
            continue
        value = shown.removeprefix("auto = ").split(" for ")[0]
        if name == "backend" and shown.startswith("auto = "):  # the config keeps "auto"; the trainer resolves it
            assert value == resolve_backend(env_id, "auto")
        else:
            assert value == flag_value(fields[name]), name


def test_cartpole_help_shows_the_torch_preset_values(capsys, monkeypatch):
    out, notes = help_of(capsys, monkeypatch, "train", "--algo", "ppo", "--env", "CartPole-v1", "--help")
    top = out.split("\n\n")[1]  # the first paragraph after the usage line
    assert top.startswith("Training ppo on CartPole-v1 (torch backend): preset ppo/CartPole-v1 + "
                          "ppo/CartPole-v1/torch applies.")
    assert notes["num_envs"] == ("preset", "ppo/CartPole-v1/torch", "64")  # the torch entry wins over rl-zoo's 8
    assert notes["gamma"] == ("preset", "ppo/CartPole-v1", "0.98")
    assert notes["seed"] == ("default", None, "1")
    assert notes["env_id"] == ("set", None, "CartPole-v1")
    assert notes["backend"] == ("default", None, "auto = torch for CartPole-v1")
    assert notes["normalize_obs"] == ("default", None, "auto = false for CartPole-v1")
    assert_notes_match_the_run(notes, "ppo", "CartPole-v1", {})
    # without --env: the default env, the same preset
    out, default_notes = help_of(capsys, monkeypatch, "train", "--help")
    assert "preset ppo/CartPole-v1 + ppo/CartPole-v1/torch applies" in out
    assert default_notes["num_envs"] == notes["num_envs"] and default_notes["env_id"] == ("default", None,
                                                                                          "CartPole-v1")
    # --backend on the command line picks the preset entries of that backend
    out, notes = help_of(capsys, monkeypatch, "train", "--env", "CartPole-v1", "--backend", "gymnasium", "--help")
    assert "(gymnasium backend): preset ppo/CartPole-v1 applies" in out
    assert notes["num_envs"] == ("preset", "ppo/CartPole-v1", "8") and notes["backend"] == ("set", None, "gymnasium")
    assert_notes_match_the_run(notes, "ppo", "CartPole-v1", {"backend": "gymnasium"})


def test_pendulum_help_shows_both_preset_entries_and_no_normalisation(capsys, monkeypatch):
    out, notes = help_of(capsys, monkeypatch, "train", "--env", "Pendulum-v1", "--help")
    assert "preset ppo/Pendulum-v1 + ppo/Pendulum-v1/torch applies" in out
    assert notes["num_envs"] == ("preset", "ppo/Pendulum-v1/torch", "16")
    assert notes["num_steps"] == ("preset", "ppo/Pendulum-v1/torch", "256")
    assert notes["update_epochs"] == ("preset", "ppo/Pendulum-v1", "10")  # the torch entry leaves it to the first
    assert notes["total_steps"] == ("preset", "ppo/Pendulum-v1", "500000")
    # a Box-action task, but tuned: the derived normalisation is off
    assert notes["normalize_obs"] == ("default", None, "auto = false for Pendulum-v1")
    assert_notes_match_the_run(notes, "ppo", "Pendulum-v1", {})
    out, notes = help_of(capsys, monkeypatch, "train", "--algo", "trpo", "--env", "Pendulum-v1", "--help")
    assert notes["max_kl"] == ("preset", "trpo/Pendulum-v1", "0.02") and notes["gamma"][2] == "0.9"
    assert_notes_match_the_run(notes, "trpo", "Pendulum-v1", {})


def test_help_without_a_preset_shows_defaults_and_the_derived_normalisation(capsys, monkeypatch):
    out, notes = help_of(capsys, monkeypatch, "train", "--algo", "reinforce", "--env", "MountainCarContinuous-v0",
                         "--help")
    assert "Training reinforce on MountainCarContinuous-v0 (torch backend): no preset, the defaults apply (with " \
           "observation and reward normalisation: a Box-action task)." in out
    assert notes["num_envs"] == ("default", None, str(TrainConfig.num_envs))
    assert notes["normalize_obs"] == ("default", None, "auto = true for MountainCarContinuous-v0")
    assert notes["normalize_reward"] == ("default", None, "auto = true for MountainCarContinuous-v0")
    assert not any(source == "preset" for source, _, _ in notes.values())
    assert_notes_match_the_run(notes, "reinforce", "MountainCarContinuous-v0", {})
    # an env that cannot be made here: its derived settings are not guessed
    out, notes = help_of(capsys, monkeypatch, "train", "--env", "NoSuchEnv-v0", "--help")
    assert "NoSuchEnv-v0 cannot be made here" in out and notes["normalize_obs"] == ("default", None, "auto")


def test_help_of_a_resumed_run_shows_its_own_settings(capsys, monkeypatch, tmp_path):
    assert main(["train", "--logdir", str(tmp_path), "--run-name", "r", "--total-steps", "256", "--num-envs", "4",
                 "--num-steps", "64", "--eval-episodes", "1", "--num-eval-envs", "1", "--progress", "false"]) == 0
    out, notes = help_of(capsys, monkeypatch, "train", "--resume", str(tmp_path / "r"), "--help")
    assert f"Resuming {tmp_path / 'r'} (ppo on CartPole-v1, step 256)" in out
    assert notes["num_envs"] == ("this", None, "4") and notes["learning_rate"] == ("this", None, "0.002")


def blocks(text):
    """`rlpg presets` output -> {entry name: {flag: value}}."""
    out = {}
    for block in text.strip().split("\n\n"):
        head, *lines = block.splitlines()
        out[head.split()[0]] = dict(line.split(maxsplit=1) for line in lines)
    return out


def test_presets_lists_every_entry_with_its_settings_and_filters(capsys):
    assert main(["presets"]) == 0
    listed = blocks(capsys.readouterr().out)
    assert set(listed) == {"/".join(key) for key in PRESETS}
    for key, settings in PRESETS.items():
        assert listed["/".join(key)] == {f"--{k.replace('_', '-')}": flag_value(v) for k, v in settings.items()}
    assert main(["presets", "--algo", "trpo"]) == 0
    assert set(blocks(capsys.readouterr().out)) == {"/".join(k) for k in PRESETS if k[0] == "trpo"}
    assert main(["presets", "--env", "Pendulum-v1"]) == 0
    assert set(blocks(capsys.readouterr().out)) == {"/".join(k) for k in PRESETS if k[1] == "Pendulum-v1"}
    assert main(["presets", "--algo", "ppo", "--env", "CartPole-v1"]) == 0
    assert list(blocks(capsys.readouterr().out)) == ["ppo/CartPole-v1", "ppo/CartPole-v1/torch"]  # as they apply
    assert main(["presets", "--env", "Ant-v5"]) == 0
    assert capsys.readouterr().out.startswith("rlpg: no preset for --env Ant-v5: a run takes the defaults")
    assert main(["presets", "--algo", "ppo2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlpg: error: unknown algorithm 'ppo2'; did you mean 'ppo'") and len(err.splitlines()) == 1


def test_main_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    from rlpg.cli import COMMANDS

    assert "presets" in COMMANDS and all(f"\n  {name} " in out for name in COMMANDS)


def test_help_shows_every_repeated_env_package(capsys, monkeypatch):
    _, notes = help_of(capsys, monkeypatch, "train", "--env-package", "json", "--env-package", "csv", "--env",
                       "CartPole-v1", "--help")
    assert notes["env_packages"] == ("set", None, "json csv")
