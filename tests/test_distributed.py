"""Many processes, one agent (rlpg.distributed): two gloo ranks on the CPU, one torch thread each.

- The update of every algorithm over 2 ranks equals a single process's update on the same global batch (within float
  tolerance), and both ranks hold identical parameters after each update.
- A 2-process `rlpg train`: rank 0 alone logs and writes checkpoints, normalisers merged across ranks, the ranks'
  states in last.pt, a resumed job equal bit for bit to the uninterrupted one, SIGTERM on one rank stops both with a
  checkpoint, `rlpg train --nproc 2` through torchrun, and clear errors for inconsistent launches.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

from rlpg import checkpoint
from rlpg.agents import ALGOS
from rlpg.envs.wrappers import RunningMeanStd
from rlpg.policies import ActorCritic
from rlpg.types import Batch

HERE = Path(__file__).resolve().parent
B = 96  # global batch: 48 rows per rank
UPDATES = 3
AGENT = {
    "ppo": dict(update_epochs=3, num_minibatches=4, target_kl=None),
    "reinforce": dict(update_epochs=2, num_minibatches=3),
    "npg": dict(vf_epochs=2, vf_minibatches=4),
    "trpo": dict(vf_epochs=2, vf_minibatches=4),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun sets in a worker's environment."""
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------------- the update
def spaces(continuous: bool):
    obs = gymnasium.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    act = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32) if continuous else gymnasium.spaces.Discrete(3)
    return obs, act


def global_batch(policy: ActorCritic, update: int) -> Batch:
    """A batch of B rows drawn from a fixed seed, its log-probs and values those of the current policy."""
    g = torch.Generator().manual_seed(1000 + update)
    obs = torch.randn(B, 5, generator=g)
    with torch.no_grad():
        dist = policy.dist(obs)
        actions = dist.sample()  # the global RNG: every caller seeds it alike below
        logp = dist.log_prob(actions)
        values = policy.value(obs)
    advantages = torch.randn(B, generator=g) * 2 + 0.5
    return Batch(obs, actions, logp, values, advantages, values + advantages)


def train_updates(algo: str, continuous: bool, rank: int, world: int) -> list[list[torch.Tensor]]:
    """UPDATES updates of `algo` on rank `rank`'s share of each global batch; the parameters after each. In float64:
    float32 rounding, amplified by the conjugate gradient along ill-conditioned directions (the log-std), would
    hide a real difference at the 1e-5 level; in float64 the two sides agree to ~1e-15."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _train_updates(algo, continuous, rank, world)
    finally:
        torch.set_default_dtype(previous)


def _train_updates(algo: str, continuous: bool, rank: int, world: int) -> list[list[torch.Tensor]]:
    torch.manual_seed(0)
    obs_space, act_space = spaces(continuous)
    policy = ActorCritic(obs_space, act_space, (16, 16), "tanh", 0.0, False)
    agent_cls, config_cls = ALGOS[algo]
    agent = agent_cls(policy, config_cls(**AGENT[algo]))
    agent.shuffle = torch.Generator().manual_seed(5)
    share = B // world
    after = []
    for u in range(UPDATES):
        torch.manual_seed(100 + u)
        batch = global_batch(policy, u)
        agent.update(batch.index(torch.arange(rank * share, (rank + 1) * share)), u / UPDATES)
        after.append([p.detach().clone() for p in policy.parameters()])
    return after


CASES = [("ppo", False), ("ppo", True), ("trpo", True), ("trpo", False), ("npg", False), ("reinforce", True)]


def rank_main(out: str) -> None:
    """One rank of test_update_equals_the_single_process_update (run in a subprocess): every case in one job."""
    from rlpg import distributed

    torch.set_num_threads(1)
    ctx, _ = distributed.setup(torch.device("cpu"))
    results = {case: train_updates(*case, ctx.rank, ctx.world_size) for case in CASES}
    rms = RunningMeanStd((3,), torch.device("cpu"))
    for rows in normaliser_data(ctx.world_size):  # two rollouts, each rank seeing its own rows, merged after each
        rms.update(rows[ctx.rank][:7])
        rms.update(rows[ctx.rank][7:])
        rms.sync()
    results["rms"] = (rms.mean, rms.var, rms.count)
    torch.save(results, out)
    distributed.shutdown()


def normaliser_data(world: int) -> list[list[torch.Tensor]]:
    """Per rollout, each rank's observations: of other sizes, scales and offsets on each rank."""
    g = torch.Generator().manual_seed(9)
    return [[torch.randn(20 + 9 * r + 5 * k, 3, generator=g, dtype=torch.float64) * (r + 1) * 3 + 10 * r
             for r in range(world)] for k in range(2)]


def run_ranks(code: str, world: int = 2, timeout: float = 120) -> None:
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", code], env=rank_env(r, world, port), cwd=HERE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The parameters after each update of every case, on each of 2 ranks."""
    out = tmp_path_factory.mktemp("ranks") / "rank{}.pt"
    run_ranks(f"import test_distributed as t; import os; t.rank_main({str(out)!r}.format(os.environ['RANK']))")
    return [torch.load(str(out).format(r)) for r in range(2)]


@pytest.mark.parametrize("algo, continuous", CASES)
def test_update_equals_the_single_process_update(two_ranks, algo, continuous):
    single = train_updates(algo, continuous, 0, 1)
    ranks = [r[(algo, continuous)] for r in two_ranks]
    torch.manual_seed(0)
    start = [p.detach() for p in ActorCritic(*spaces(continuous), (16, 16), "tanh", 0.0, False).parameters()]
    for u in range(UPDATES):
        moved = max(float((a - b).abs().max()) for a, b in zip(single[u], start, strict=True))
        assert moved > 1e-3  # the update did something to compare
        for r in range(2):
            for a, b in zip(ranks[r][u], single[u], strict=True):
                torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-10, atol=1e-12)
        for a, b in zip(ranks[0][u], ranks[1][u], strict=True):
            assert torch.equal(a, b)  # every rank holds the same parameters, bit for bit


def test_normalisers_merged_across_ranks_equal_one_over_all_rows(two_ranks):
    """RunningMeanStd.sync: after each rollout both ranks hold the statistics of every rank's rows together."""
    rms = RunningMeanStd((3,), torch.device("cpu"))
    rms.update(torch.cat([x for rollout in normaliser_data(2) for x in rollout]))
    for mean, var, count in (r["rms"] for r in two_ranks):
        assert float(count) == pytest.approx(float(rms.count), abs=1e-9)  # 20 + 29 + 25 + 34 rows and the prior
        torch.testing.assert_close(mean, rms.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(var, rms.var, rtol=1e-12, atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(two_ranks[0]["rms"], two_ranks[1]["rms"], strict=True))


def test_deferred_stop_signals_never_stop_at_once():
    """A rank records every signal and stops at the iteration boundary the ranks agree on: raising StopNow at once
    (a single process's second signal, or one between iterations) would leave the other ranks waiting."""
    from rlpg.errors import StopNow
    from rlpg.runs import StopSignals

    single = StopSignals()
    with pytest.raises(StopNow):
        single._handle(signal.SIGTERM, None)  # between iterations: at once
    stop = StopSignals(deferred=True)
    stop._handle(signal.SIGTERM, None)
    stop.safe = False
    stop._handle(signal.SIGINT, None)
    assert stop.signum == signal.SIGTERM


def test_minibatches_split_the_global_permutation():
    """Rank r keeps exactly the rows of each global minibatch it holds, with the global size as the count."""
    from rlpg import distributed

    single = list(distributed.minibatches(12, 3, torch.device("cpu"), torch.Generator().manual_seed(3)))
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    assert [i.tolist() for i, _ in single] == [perm[k * 4:(k + 1) * 4].tolist() for k in range(3)]
    assert [c for _, c in single] == [4, 4, 4]
    try:  # as rank 1 of 2, each rank holding 6 rows
        distributed._ctx = distributed.Context(rank=1, world_size=2, local_rank=1, backend="gloo")
        parts = list(distributed.minibatches(6, 3, torch.device("cpu"), torch.Generator().manual_seed(3)))
        assert distributed.batch_mean(torch.ones(3), 4) == 3 / 4
    finally:
        distributed._ctx = None
    for (mine, count), k in zip(parts, range(3), strict=True):
        chunk = torch.randperm(12, generator=torch.Generator().manual_seed(3))[k * 4:(k + 1) * 4]
        assert count == 4
        assert sorted((mine + 6).tolist()) == sorted(i for i in chunk.tolist() if 6 <= i < 12)


# ------------------------------------------------------------------------------------------------ whole runs
RUN = ["--env", "CartPole-v1", "--num-envs", "8", "--num-steps", "32", "--eval-episodes", "2", "--num-eval-envs",
       "2", "--eval-interval", "0", "--progress", "false", "--anneal-lr", "false", "--anneal-clip", "false",
       "--normalize-obs", "true", "--normalize-reward", "true", "--torch-threads", "1"]


def launch(args: list[str], world: int = 2, per_rank: dict[int, list[str]] | None = None) -> list[subprocess.Popen]:
    port = free_port()
    return [subprocess.Popen([sys.executable, "-m", "rlpg", "train", *args, *(per_rank or {}).get(r, [])],
                             env=rank_env(r, world, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(world)]


def finish(procs: list[subprocess.Popen], timeout: float = 180) -> list[tuple[int, str, str]]:
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "last.pt")["policy"]


def test_two_process_run_logs_on_rank_0_merges_normalisers_and_resumes_bit_for_bit(tmp_path):
    full = finish(launch([*RUN, "--total-steps", "1024", "--logdir", str(tmp_path), "--run-name", "full"]))
    part = finish(launch([*RUN, "--total-steps", "512", "--logdir", str(tmp_path), "--run-name", "part"]))
    for code, _, err in full + part:
        assert code == 0, err
    (_, out0, _), (_, out1, err1) = full
    assert "8 envs over 2 processes (4 each, gloo)" in out0 and "rlpg: done: 1024 steps" in out0
    assert out1 == "" and "rlpg:" not in err1  # rank 1 says nothing
    run = tmp_path / "full"
    config = json.loads((run / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo", "num_envs_per_rank": 4,
                                     "batch_size_per_rank": 128, "global_batch_size": 256}
    pids = {name.name.split(".")[4] for name in run.glob("events.out.tfevents.*")}
    assert len(pids) == 1  # one process wrote events
    lines = (run / "progress.csv").read_text().splitlines()
    assert len(lines) == 1 + 4  # one row per update, from rank 0 alone
    payload = checkpoint.load(run / "last.pt")
    assert payload["global_step"] == 1024 and len(payload["resume"]["ranks"]) == 2
    ranks = [r["env"] for r in payload["resume"]["ranks"]]
    layers = [{layer["type"]: layer["state"] for layer in r["wrappers"]} for r in ranks]
    for kind in ("NormalizeObservation", "NormalizeReward"):
        a, b = layers[0][kind]["rms"], layers[1][kind]["rms"]
        assert all(torch.equal(a[k], b[k]) for k in a)  # merged: the same statistics on both ranks
    # every observation of both ranks counted once: 8 resets + 8 envs x 1024 / 8 steps, plus the 1e-4 prior
    assert float(layers[0]["NormalizeObservation"]["rms"]["count"]) == pytest.approx(8 + 1024 + 1e-4)
    assert not torch.equal(ranks[0]["base"]["state"], ranks[1]["base"]["state"])  # each rank its own envs

    resumed = finish(launch(["--resume", str(tmp_path / "part"), "--total-steps", "1024"]))
    for code, _, err in resumed:
        assert code == 0, err
    assert "resuming ppo on CartPole-v1 at step 512 of 1,024" in resumed[0][1]
    a, b = params(tmp_path / "full"), params(tmp_path / "part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    other = finish(launch(["--resume", str(tmp_path / "part"), "--total-steps", "2048"], world=3))
    for code, _, err in other:
        assert code == 2 and "trained by 2 process(es)" in err and "--nproc 2" in err, err


def test_sigterm_on_one_rank_stops_both_with_a_checkpoint(tmp_path):
    procs = launch([*RUN, "--total-steps", "10000000", "--logdir", str(tmp_path), "--run-name", "r"])
    progress = tmp_path / "r" / "progress.csv"
    deadline = time.monotonic() + 120
    while not (progress.is_file() and len(progress.read_text().splitlines()) > 2):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    results = finish(procs, timeout=120)
    assert [code for code, _, _ in results] == [143, 143], results
    assert "stopped by SIGTERM" in results[0][2] and "rlpg train --nproc 2 --resume" in results[0][2]
    assert "rlpg:" not in results[1][2]  # rank 1 says nothing
    payload = checkpoint.load(tmp_path / "r" / "last.pt")
    step = payload["global_step"]
    assert 0 < step < 10_000_000 and len(payload["resume"]["ranks"]) == 2
    resumed = finish(launch(["--resume", str(tmp_path / "r"), "--total-steps", str(step + 512)]))
    assert [code for code, _, _ in resumed] == [0, 0], resumed
    assert checkpoint.load(tmp_path / "r" / "last.pt")["global_step"] == step + 512


def test_inconsistent_launches_are_one_line_errors(tmp_path):
    uneven = finish(launch([*RUN, "--num-envs", "7", "--logdir", str(tmp_path)]))
    differ = finish(launch([*RUN, "--logdir", str(tmp_path)], per_rank={1: ["--seed", "7"]}))
    for (code, _, err), match in [(uneven[0], "--num-envs 7 is the global number"),
                                  (differ[0], "seed: 1 on rank 0, 7 on rank 1")]:
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and match in lines[0] and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())  # nothing left behind


def test_nproc_launches_torchrun(tmp_path):
    """`rlpg train --nproc 2` (torch.distributed.run underneath) with TRPO on Pendulum's Gymnasium env."""
    out = subprocess.run([sys.executable, "-m", "rlpg", "train", "--nproc", "2", "--algo", "trpo", "--env",
                          "Pendulum-v1", "--backend", "gymnasium", "--num-envs", "2", "--num-steps", "64",
                          "--total-steps", "256", "--eval-episodes", "1", "--num-eval-envs", "1", "--progress",
                          "false", "--logdir", str(tmp_path), "--run-name", "t"],
                         capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert "2 envs over 2 processes (1 each, gloo)" in out.stdout and "rlpg: done: 256 steps" in out.stdout
    payload = checkpoint.load(tmp_path / "t" / "last.pt")
    assert payload["config"]["train"]["num_envs"] == 2 and len(payload["resume"]["ranks"]) == 2
    bad = subprocess.run([sys.executable, "-m", "rlpg", "train", "--nproc", "0"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "rlpg: error: --nproc must lie in [1, 4096], got 0"
