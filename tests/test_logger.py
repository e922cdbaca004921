"""progress.csv: the event files' scalars, one row per step; a widening header; resumed runs drop what they redo."""

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlpg
from rlpg.logger import CSV_NAME, CSVWriter, read_csv
from rlpg.trainer import Trainer, resolve_configs

# 4 updates of 512 steps; periodic evaluation at 1024, so eval/* first appears in the second row
RUN = dict(total_steps=2048, num_envs=4, num_steps=128, eval_episodes=2, num_eval_envs=2, progress=False,
           eval_interval=1024, backend="torch")


def event_scalars(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
            if not tag.startswith("hparam/")}  # the hparams summary is not a curve (config.json holds the run's)


def csv_scalars(run_dir):
    header, rows = read_csv(run_dir / CSV_NAME)
    assert header[0] == "step"
    return header, rows, {tag: [(int(r["step"]), float(r[tag])) for r in rows if r[tag] != ""] for tag in header[1:]}


def assert_same_as_events(run_dir):
    header, rows, from_csv = csv_scalars(run_dir)
    events = event_scalars(run_dir)
    assert set(from_csv) == set(events) and header[1:] == sorted(events)
    for tag, points in events.items():
        # the event file holds float32, the CSV the float64 the logger was given
        assert [(s, np.float32(v)) for s, v in from_csv[tag]] == [(s, np.float32(v)) for s, v in points], tag
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps))  # one row per step, in order
    return steps, from_csv


def test_progress_csv_holds_every_event_scalar_one_row_per_step(tmp_path):
    result = rlpg.train("ppo", "CartPole-v1", logdir=str(tmp_path), run_name="r", **RUN)
    steps, from_csv = assert_same_as_events(result.run_dir)
    assert steps == [512, 1024, 1536, 2048]
    # evaluation logs at the step of the update before it: the same row, not a row of its own
    assert [s for s, _ in from_csv["eval/mean_return"]] == [1024, 2048]
    assert any(tag.startswith("grad_norm/actor.") for tag in from_csv) and "train/policy_loss" in from_csv


def test_a_resumed_run_has_no_duplicated_or_rewound_rows(tmp_path):
    full = rlpg.train("ppo", "CartPole-v1", logdir=str(tmp_path), run_name="full", **RUN)
    cfg, agent_cfg = resolve_configs("ppo", "CartPole-v1", dict(RUN, logdir=str(tmp_path), run_name="part"))
    trainer = Trainer(cfg, agent_cfg)
    update = trainer.agent.update

    def update_then_stop(batch, progress):
        out = update(batch, progress)
        if trainer.iteration + 1 == 3:  # stop (as by SIGTERM) after the third update: last.pt at step 1536
            trainer.request_stop()
        return out

    trainer.agent.update = update_then_stop
    part = trainer.run()
    assert part.interrupted and part.saved_step == 1536
    # as if the process had logged further before a kill: a whole row after the checkpoint, then a row cut short
    # in its last cell (its step, 1024, is not after the checkpoint's: only its missing newline gives it away)
    path = part.run_dir / CSV_NAME
    header, _ = read_csv(path)
    with open(path, "a") as f:
        f.write(",".join(["2048"] + ["123.0"] * (len(header) - 1)) + "\n" + ",".join(["1024"] * len(header))[:-2])
    resumed = rlpg.train(resume=part.run_dir)
    steps, from_csv = assert_same_as_events(resumed.run_dir)
    assert steps == [512, 1024, 1536, 2048]
    _, _, uninterrupted = csv_scalars(full.run_dir)
    assert set(from_csv) == set(uninterrupted)
    for tag, points in uninterrupted.items():
        if not tag.startswith("time/"):
            assert from_csv[tag] == points, tag  # the torch env resumes bit for bit: the same values, exactly


def test_csv_writer_widens_the_header_and_merges_late_values_of_a_flushed_step(tmp_path):
    path = tmp_path / CSV_NAME
    w = CSVWriter(path, flush_secs=0.0)  # closed rows reach the disk at once
    w.add({"train/b": 1.0, "train/nan": float("nan")}, 10)
    w.add({"train/b": 2.0}, 20)  # closes step 10: appended under the header it needs
    assert read_csv(path) == (["step", "train/b"], [{"step": "10", "train/b": "1.0"}])
    w.flush()  # the open row (step 20) too
    w.add({"eval/a": 0.5}, 20)  # a new tag for the step already on disk
    w.add({"train/b": 3.0}, 30)
    w.flush()
    header, rows = read_csv(path)
    assert header == ["step", "eval/a", "train/b"]
    assert rows == [{"step": "10", "eval/a": "", "train/b": "1.0"}, {"step": "20", "eval/a": "0.5", "train/b": "2.0"},
                    {"step": "30", "eval/a": "", "train/b": "3.0"}]
    # a resumed run's writer drops the rows at and after its purge step
    CSVWriter(path, purge_step=20)
    assert [r["step"] for r in read_csv(path)[1]] == ["10"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic rewrites leave no temporary files


def test_to_host_reads_every_kind_of_metric_as_its_float():
    from rlpg.logger import to_host

    per = torch.tensor([0.1, 2.5, -3.0], dtype=torch.float32)
    metrics = {"view": per[1], "whole": torch.tensor(7.25, dtype=torch.float64), "one": torch.tensor([4]),
               "flag": torch.tensor(True), "plain": 1.5, "int": 3}
    host = to_host(metrics)
    assert host == {"view": 2.5, "whole": 7.25, "one": 4.0, "flag": 1.0, "plain": 1.5, "int": 3.0}
    assert host["view"] == float(per[1]) and all(type(v) is float for v in host.values())
    assert to_host({"x": per[0]})["x"] == float(torch.tensor(0.1, dtype=torch.float32).double())
