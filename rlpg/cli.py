"""The `rlpg` command: train, eval, export, bench, plot and presets. `rlpg` alone trains the default (PPO on
CartPole-v1).

Exit codes: 0 done; 2 bad input (unknown algorithm or env, unsupported space, bad hyperparameter or flag, an
existing run directory, missing or damaged checkpoint, non-finite data), reported as one line `rlpg: error: ...`;
128 + the signal's number when SIGINT (130), SIGTERM (143) or SIGUSR1 (138) stopped the run, which saves
last.pt first (`rlpg train --resume RUN_DIR` continues it); 1 for an unexpected internal error (a bug: its
traceback is printed).

Process-wide speed settings (glibc's malloc, `--keep-heap`) are applied here, not by `rlpg.train()`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rlpg.errors import ConfigError, RLPGError, StopNow

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse whose errors are ConfigErrors, so a bad flag is one `rlpg: error:` line and exit 2 like any
    other bad input (argparse itself prints a usage block first)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see {self.prog} --help)")


def _train(argv: Sequence[str]) -> int:
    from rlpg.agents import ALGOS
    from rlpg.config import TrainConfig, add_arguments
    from rlpg.errors import unknown_name
    from rlpg.seeds import MANIFEST, is_group
    from rlpg.trainer import Trainer, resolve_configs, resume_configs

    pre = Parser(add_help=False, allow_abbrev=False)  # --seed is not --seeds
    pre.add_argument("--algo", default=None)
    pre.add_argument("--resume", default=None)
    pre.add_argument("--env", "--env-id", dest="env_id", default=None)
    pre.add_argument("--backend", default=None)
    pre.add_argument("--env-packages", "--env-package", nargs="*", action="extend", default=None)
    pre.add_argument("--nproc", type=int, default=None)
    pre.add_argument("--seeds", nargs="+", default=None)
    known, _ = pre.parse_known_args(argv)
    group = known.resume is not None and is_group(known.resume)
    if known.seeds is not None or group:
        if known.seeds is not None and known.resume is not None:
            raise ConfigError("--resume GROUP continues the seeds it was trained with; leave out --seeds")
        if known.nproc is not None:
            raise ConfigError("--seeds trains the seeds in this process; it does not combine with --nproc")
        if any(a == "--seed" or a.startswith("--seed=") for a in argv):
            raise ConfigError("pass either --seed (one run) or --seeds (one run per seed, trained together), not both")
    if known.nproc is not None and "-h" not in argv and "--help" not in argv:
        from rlpg.distributed import launched_world_size

        if not 1 <= known.nproc <= 4096:
            raise ConfigError(f"--nproc must lie in [1, 4096], got {known.nproc}")
        if launched_world_size() > 1:
            raise ConfigError("--nproc starts torchrun itself; under torchrun leave it out (--nproc-per-node sets "
                              "the number of processes)")
        if known.nproc > 1:
            return _launch(known.nproc, _without_nproc(argv))
    algo = known.algo
    if algo is not None and algo not in ALGOS:
        raise unknown_name("algorithm", algo, ALGOS)
    saved: dict[str, Any] | None = None
    if known.resume is not None:  # the resumed run's algorithm decides which flags exist
        from rlpg import checkpoint

        last = Path(known.resume) / "last.pt"
        if group:  # a K-seed run: its first seed's last.pt tells the algorithm
            runs = json.loads((Path(known.resume) / MANIFEST).read_text())["runs"]
            last = Path(known.resume) / runs[0] / "last.pt"
        if not last.is_file():
            raise ConfigError(f"--resume {known.resume}: no last.pt there; pass the run directory of an rlpg run")
        saved = checkpoint.load(last)
        algo = algo or saved["algo"]
    algo = algo or "ppo"
    if algo not in ALGOS:
        raise unknown_name("algorithm", algo, ALGOS)
    _, agent_cls = ALGOS[algo]
    about, notes = f"Train {algo}. Unset flags take the tuned preset for the (algo, env) pair, then the defaults.", {}
    if "-h" in argv or "--help" in argv:  # the values each flag will take, worked out only when they are shown
        from rlpg.describe import help_notes, resume_notes
        from rlpg.runs import RESUMABLE

        if saved is not None:
            about, notes = resume_notes(known.resume, saved, RESUMABLE)
        else:
            given = {"algo": known.algo, "env_id": known.env_id, "backend": known.backend,
                     "env_packages": None if known.env_packages is None else tuple(known.env_packages)}
            about, notes = help_notes(algo, agent_cls, {k: v for k, v in given.items() if v is not None})
    parser = Parser(
        prog="rlpg train",
        usage="%(prog)s [--algo ALGO] [--env ENV_ID] [--resume RUN_DIR] [--FLAG VALUE ...]",
        description=about,
    )
    parser.add_argument("--env", dest="env_id", default=argparse.SUPPRESS, metavar="ENV_ID", help="alias of --env-id")
    parser.add_argument(
        "--resume", default=argparse.SUPPRESS, metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last.pt with its own settings (only --total-steps and logging, "
        "evaluation and checkpoint settings may change). Torch-native envs continue exactly where they stopped "
        "(bit for bit); a Gymnasium env cannot save its state, so it restarts from fresh episodes with a new seed",
    )
    parser.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS,
                        help="replace the run directory --run-name if it exists (otherwise that is an error)")
    parser.add_argument(
        "--nproc", type=int, default=argparse.SUPPRESS, metavar="K",
        help="train on K processes of this machine (torchrun --standalone --nproc-per-node K -m rlpg train ...): "
        "each steps num_envs / K environments and every update is the one on the global batch num_envs * num_steps; "
        "without it the run trains in this process; for many machines call torchrun yourself (see the README)")
    parser.add_argument(
        "--seeds", nargs="+", default=argparse.SUPPRESS, metavar="SEED",
        help="train one run per seed in this process, as one batched computation (1-16, or 1 2 5): a group "
        "directory with a run directory per seed (seed_1, ...), each as a single run of that seed writes it, and "
        "summary.json; --resume GROUP continues all of them")
    add_arguments(parser, TrainConfig, "training", shown=notes)
    add_arguments(parser, agent_cls, f"{algo} hyperparameters", shown=notes)
    args = vars(parser.parse_args(argv))
    args.pop("nproc", None)
    resume = args.pop("resume", None)
    overwrite = args.pop("overwrite", False)
    seeds = args.pop("seeds", None)
    trainer: Any
    if group:
        from rlpg.seeds import SeedsTrainer

        trainer = SeedsTrainer.resumed(resume, args.pop("algo", None), args.pop("env_id", None), args)
        cfg = trainer.cfg
        what = (f"resuming {cfg.algo} on {cfg.env_id}, seeds {' '.join(map(str, trainer.seeds))}, at step "
                f"{trainer.resume_from[0]['global_step']:,} of {cfg.total_steps:,}")
    elif seeds is not None:
        from rlpg.seeds import SeedsTrainer, parse_seeds

        cfg, agent_cfg = resolve_configs(args.pop("algo", algo), args.pop("env_id", None), args)
        trainer = SeedsTrainer(cfg, agent_cfg, parse_seeds(seeds), overwrite=overwrite)
        cfg = trainer.cfg
        what = f"training {cfg.algo} on {cfg.env_id}, {trainer.k} seeds in one process"
    elif resume is not None:
        if overwrite:
            raise ConfigError("--resume and --overwrite exclude each other: continue the run or replace it")
        cfg, agent_cfg, payload = resume_configs(resume, args.pop("algo", None), args.pop("env_id", None), args)
        trainer = Trainer(cfg, agent_cfg, resume_from=payload)
        what = f"resuming {cfg.algo} on {cfg.env_id} at step {payload['global_step']:,} of {cfg.total_steps:,}"
    else:
        cfg, agent_cfg = resolve_configs(args.pop("algo", algo), args.pop("env_id", None), args)
        trainer = Trainer(cfg, agent_cfg, overwrite=overwrite)
        what = f"training {cfg.algo} on {cfg.env_id}"
    if cfg.keep_heap:
        from rlpg.runtime import keep_heap_memory

        keep_heap_memory()
    from rlpg.distributed import shutdown

    try:
        code = _run_trainer(trainer, cfg, what)
    except BaseException:
        shutdown(together=False)
        raise
    shutdown()
    return code


def _run_trainer(trainer: Any, cfg: Any, what: str) -> int:
    from rlpg.distributed import is_main
    from rlpg.presets import preset_name

    main = is_main()  # under torchrun rank 0 alone speaks
    tuned = preset_name(cfg.algo, cfg.env_id, trainer.backend)
    norm = [name for name, on in (("observation", cfg.normalize_obs), ("reward", cfg.normalize_reward)) if on]
    settings = f"preset {tuned}" if tuned else "no preset: defaults"
    if norm and not tuned:
        settings += f", {' and '.join(norm)} normalisation on"
    many = hasattr(trainer, "seeds")  # rlpg train --seeds: a rlpg.seeds.SeedsTrainer
    envs = f"{cfg.num_envs} envs" + (" per seed" if many else "")
    if trainer.ctx is not None:
        envs += f" over {trainer.ctx.world_size} processes ({trainer.num_envs} each, {trainer.ctx.backend})"
    # progress goes to stdout; stderr holds only errors, warnings and what stopped a run
    if main:
        print(f"rlpg: {what} ({trainer.backend} backend, {settings}, {envs}, device {trainer.device}) -> "
              f"{trainer.run_dir}", flush=True)
    if _start_up_signal:
        trainer.close_envs()
        raise StopNow(_start_up_signal[0])
    result = trainer.run()
    if not main:
        return 128 + result.signal if result.interrupted and result.signal else 0
    if result.interrupted:
        name = signal.Signals(result.signal).name if result.signal else "an interruption"
        nproc = f" --nproc {trainer.ctx.world_size}" if trainer.ctx is not None else ""
        holds = "every seed's last.pt holds" if many else "last.pt holds"
        saved = (f"{holds} step {result.saved_step:,}; continue with: rlpg train{nproc} --resume "
                 f"{result.run_dir}" if result.saved_step is not None else "no checkpoint was written yet")
        print(f"rlpg: stopped by {name} at step {result.global_step:,}; {saved}", file=sys.stderr)
        return 128 + (result.signal or signal.SIGINT)
    skipped = f"; {result.skipped_updates} update(s) skipped (non-finite)" if result.skipped_updates else ""
    if many:
        final, best_ = (result.summary()[key] for key in ("final_eval_return", "best_eval_return"))
        print(f"rlpg: done: {len(result.seeds)} seeds x {result.global_step} steps in {result.train_seconds:.1f} s; "
              f"the final policies (last.pt) score {final['mean']:.2f} +/- {final['std']:.2f} over seeds (min "
              f"{final['min']:.2f}, max {final['max']:.2f}; {cfg.eval_episodes} deterministic episodes each); best "
              f"periodic evaluations (best.pt) {best_['mean']:.2f} +/- {best_['std']:.2f}{skipped}; runs in "
              f"{result.run_dir} (summary.json)")
        print(f"rlpg: watch them with: tensorboard --logdir {result.run_dir}")
        return 0
    best = (f"; best periodic evaluation {result.best_eval_return:.2f} (best.pt, what rlpg eval scores)"
            if cfg.eval_interval and result.best_eval_return > result.eval_mean_return else "")
    print(
        f"rlpg: done: {result.global_step} steps; the final policy (last.pt) scores {result.eval_mean_return:.2f} "
        f"+/- {result.eval_std_return:.2f} over {cfg.eval_episodes} deterministic episodes{best}{skipped}; "
        f"run dir {result.run_dir}"
    )
    print(f"rlpg: watch it with: tensorboard --logdir {cfg.logdir}")
    return 0


def _without_nproc(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _launch(nproc: int, argv: Sequence[str]) -> int:
    """`rlpg train --nproc K ...`: torchrun --standalone --nproc-per-node K -m rlpg train ... on this machine. Returns
    the exit code of the ranks (2 for bad input, 128 + the signal that stopped them), as a single run's."""
    import os

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # rlpg sets each rank's threads (--torch-threads, default 1)
    args = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc), "--module", "rlpg",
                                         "train", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        codes = [f.exitcode for _, f in sorted(e.failures.items())]
        return next((c for c in codes if c > 0), 1)
    except SignalException as e:  # the launcher was signalled: the ranks got the signal, saved and stopped
        return 128 + int(e.sigval)
    return 0


def _load_for_eval(path: Path, device: Any) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to evaluate: a file as given; in a run directory best.pt, or last.pt when best.pt is
    missing or unreadable (said on stderr)."""
    from rlpg import checkpoint
    from rlpg.errors import CheckpointError

    if not path.is_dir():
        return checkpoint.resolve(path), checkpoint.load(path, map_location=device)
    best, last = path / "best.pt", path / "last.pt"
    if best.is_file():
        try:
            return best, checkpoint.load(best, map_location=device)
        except CheckpointError as e:
            if not last.is_file():
                raise
            print(f"rlpg: warning: {e}; evaluating last.pt instead", file=sys.stderr)
            return last, checkpoint.load(last, map_location=device)
    return checkpoint.resolve(path), checkpoint.load(path, map_location=device)


def _eval(argv: Sequence[str]) -> int:
    parser = Parser(prog="rlpg eval", description="Run the deterministic policy of a run or checkpoint.")
    parser.add_argument("path", help="run directory (uses best.pt, else last.pt) or checkpoint file")
    parser.add_argument("--episodes", type=int, default=20, help="episodes to run (default: 20)")
    parser.add_argument("--num-envs", type=int, default=10, help="parallel evaluation environments (default: 10)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the evaluation environments")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--backend", default=None, choices=("torch", "gymnasium"),
                        help="environment backend (default: the run's)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="CPU threads for torch ops (default: the run's --torch-threads, 1 unless it set another; "
                        "0: torch's default of one per core)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    parser.add_argument("--video", default=None, metavar="DIR",
                        help="record the first --video-episodes episodes to DIR/<env>__<algo>-episode-<i>.mp4 (needs "
                        "the video extra); the episodes then run one after another on one Gymnasium env that renders "
                        "(--num-envs and --backend do not apply), with the run's observation normalisation")
    parser.add_argument("--video-episodes", type=int, default=None, metavar="N",
                        help="episodes recorded with --video, the first N of --episodes (default: 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 0 < args.episodes <= 1_000_000 or not 0 < args.num_envs <= 100_000:
        raise ConfigError("--episodes must lie in [1, 1000000] and --num-envs in [1, 100000]")
    if not 0 <= args.seed < 2**32 or not 0 <= (args.torch_threads or 0) <= 4096:
        raise ConfigError("--seed must lie in [0, 2**32 - 1] and --torch-threads in [0, 4096]")
    if args.video_episodes is not None and (args.video is None or args.video_episodes < 1):
        raise ConfigError("--video-episodes N needs --video DIR and N >= 1")
    if args.video is not None:
        from rlpg.video import check_video_dependencies

        check_video_dependencies()
    import torch

    from rlpg.devices import resolve_device

    device = resolve_device(args.device)
    path, payload = _load_for_eval(Path(args.path), device)
    cfg = payload["config"]["train"]
    # the thread count before any tensor work (envs, policy): torch's default of one OpenMP thread per core runs this
    # small-batch loop many times slower on cores that other processes share
    threads = args.torch_threads if args.torch_threads is not None else int(cfg.get("torch_threads", 1))
    if threads:
        torch.set_num_threads(threads)
    videos: list[Path] = []
    if args.video is not None:
        returns, videos = _eval_video(payload, args, device)
    else:
        returns = _eval_batched(payload, args, path, device).numpy()
    mean, std = float(returns.mean()), float(returns.std())
    if args.json:
        print(json.dumps({"mean_return": mean, "std_return": std, "episodes": args.episodes, "checkpoint": str(path),
                          "env_id": payload["env_id"], "algo": payload["algo"], "returns": returns.tolist(),
                          "videos": [str(v) for v in videos]}))
    else:
        which = {"best.pt": "the best periodic evaluation's policy", "last.pt": "the final policy"}.get(path.name)
        what = f"{path} ({which}, step {payload['global_step']})" if which else str(path)
        recorded = f"; {len(videos)} video(s) in {args.video}" if args.video is not None else ""
        print(f"{payload['algo']} on {payload['env_id']}, {what}: mean return {mean:.2f} +/- {std:.2f} "
              f"over {args.episodes} episodes{recorded}")
    return 0


def _eval_batched(payload: dict[str, Any], args: argparse.Namespace, path: Path, device: Any) -> Any:
    """Returns [episodes] on `--num-envs` of rlpg's batched envs (the run's backend unless --backend)."""
    from rlpg import checkpoint
    from rlpg.envs import load_normalizer_state, make, set_training
    from rlpg.rollout import evaluate
    from rlpg.runs import check_spaces

    cfg = payload["config"]["train"]
    env = make(
        payload["env_id"],
        min(args.num_envs, args.episodes),
        device=device,
        backend=args.backend or cfg.get("backend", "auto"),
        normalize_obs=bool(cfg.get("normalize_obs", False)),
        clip_obs=float(cfg.get("clip_obs", 10.0)),
        env_packages=tuple(cfg.get("env_packages", ())),
    )
    try:
        check_spaces(payload, env, str(path))
        load_normalizer_state(env, payload.get("normalizer", {}))
        set_training(env, False)
        policy = checkpoint.build_policy(payload, device)
        return evaluate(env, policy, args.episodes, seed=args.seed, deterministic=not args.stochastic)
    finally:
        env.close()


def _eval_video(payload: dict[str, Any], args: argparse.Namespace, device: Any) -> tuple[Any, list[Path]]:
    """Returns [episodes] on one rendering Gymnasium env, and the videos of the first --video-episodes."""
    from rlpg.checkpoint import policy_from_payload
    from rlpg.video import evaluate_with_video

    env_id = payload["env_id"]
    prefix = f"{env_id}__{payload['algo']}".replace("/", "_").replace(":", "_")
    return evaluate_with_video(policy_from_payload(payload, device), env_id, args.episodes, Path(args.video),
                               args.video_episodes or 3, args.seed, not args.stochastic, prefix,
                               tuple(payload["config"]["train"].get("env_packages", ())))


def _export(argv: Sequence[str]) -> int:
    from rlpg.export import export_onnx

    parser = Parser(prog="rlpg export", description="Export the deterministic policy to ONNX.")
    parser.add_argument("path", help="run directory or checkpoint file")
    parser.add_argument("--output", "-o", default=None, help="output .onnx file (default: <checkpoint>.onnx)")
    parser.add_argument("--raw-actions", action="store_true",
                        help="export the raw Gaussian mean, not clipped to the Box action space's bounds")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # as rlpg eval and training: torch's default of a thread per core only adds contention
    out = export_onnx(args.path, args.output, clip_actions=not args.raw_actions)
    print(f"rlpg: wrote {out}")
    return 0


def _bench(argv: Sequence[str]) -> int:
    from rlpg.bench import Bench, Runner

    parser = Parser(prog="rlpg bench", description="Algorithms x environments x seeds at a step budget; resumable. "
                    "Flags after -- go to every `rlpg train` run.")
    parser.add_argument("--algos", nargs="+", default=["ppo"], help="algorithms (default: ppo)")
    parser.add_argument("--envs", nargs="+", required=True, help="Gymnasium environment ids")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds (default: 1 2 3)")
    parser.add_argument("--total-steps", type=int, required=True, help="environment steps per run")
    parser.add_argument("--out", required=True, help="directory of the runs, results.csv, results.md, curves.png")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes of each score (default: 20)")
    parser.add_argument("--eval-points", type=int, default=20, help="periodic evaluations per run (default: 20)")
    parser.add_argument("--sb3", choices=("auto", "on", "off"), default="auto",
                        help="also run SB3's PPO / sb3-contrib's TRPO with rl-zoo's settings, side by side "
                        "(auto: when the bench extra is installed)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at the same time (default: 1; at most one per core: each run uses one thread)")
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    bench = Bench(args.algos, args.envs, args.seeds, args.total_steps, Path(args.out), args.eval_episodes,
                  args.eval_points, extra, args.sb3)
    runner = Runner(bench, args.jobs)
    recorded = runner.run()
    print(f"rlpg bench: {recorded} run(s) recorded; results in {runner.results} and {bench.out / 'results.md'}")
    return 128 + runner.stopped if runner.stopped else 0


def _plot(argv: Sequence[str]) -> int:
    from rlpg.plot import plot

    parser = Parser(prog="rlpg plot", description="Learning curves of runs (mean and min-max over seeds, grouped "
                    "by environment and algorithm) from their event files.")
    parser.add_argument("paths", nargs="+", help="run directories or directories holding them (a --logdir)")
    parser.add_argument("--output", "-o", default="curves.png", help="the PNG to write (default: curves.png)")
    parser.add_argument("--title", default=None, help="a title over the panels")
    args = parser.parse_args(argv)
    print(f"rlpg: wrote {plot(args.paths, args.output, args.title)}")
    return 0


def _presets(argv: Sequence[str]) -> int:
    from rlpg.agents import ALGOS
    from rlpg.describe import presets_text
    from rlpg.errors import unknown_name

    parser = Parser(prog="rlpg presets", description="The tuned settings rlpg train applies per (algorithm, "
                    "environment[, backend]), under the flags given; later entries of a run win over earlier ones.")
    parser.add_argument("--algo", default=None, help="only this algorithm's presets")
    parser.add_argument("--env", default=None, metavar="ENV_ID",
                        help="only the presets a run on ENV_ID takes (on either backend)")
    args = parser.parse_args(argv)
    if args.algo is not None and args.algo not in ALGOS:
        raise unknown_name("algorithm", args.algo, ALGOS)
    text = presets_text(args.algo, args.env)
    which = " ".join(f"--{k} {v}" for k, v in (("algo", args.algo), ("env", args.env)) if v is not None)
    print(text or f"rlpg: no preset for {which}: a run takes the defaults (rlpg train {which} --help shows them)")
    return 0


COMMANDS = {"train": _train, "eval": _eval, "export": _export, "bench": _bench, "plot": _plot, "presets": _presets}


_start_up_signal: list[int] = []
"""a stop signal that arrived during start-up (see _stop_during_start_up)"""


def _stop_during_start_up(signum: int, frame: object) -> None:
    # remembered too: a library's bare `except:` around an import can swallow the StopNow, and the run must still stop
    # before it trains (checked in _run_trainer)
    _start_up_signal.append(signum)
    raise StopNow(signum)


def _leave_job() -> None:
    """Under torchrun, after an error that ended this rank before or outside its training loop (a bad setting every
    rank found): destroy the process group now rather than at interpreter exit, where tearing down gloo's threads
    unjoined aborts the process ("terminate called without an active exception", exit -6 instead of 2)."""
    dist = sys.modules.get("rlpg.distributed")
    if dist is not None:
        dist.shutdown(together=False)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["train", *argv]  # `rlpg` alone, or `rlpg --flags`, trains
    if argv[0] in ("-h", "--help"):
        print(
            "usage: rlpg {train,eval,export,bench,plot,presets} ...\n\n"
            "  train    train an agent (default: PPO on CartPole-v1)\n"
            "  eval     evaluate a run directory or checkpoint (--video DIR records episodes)\n"
            "  export   export a policy to ONNX\n"
            "  bench    algorithms x environments x seeds, resumable, with a results table and curves\n"
            "  plot     learning curves of runs to a PNG\n"
            "  presets  the tuned settings per (algorithm, environment, backend)\n\n"
            "rlpg COMMAND --help for the options of each."
        )
        return 0
    command, rest = argv[0], argv[1:]
    _start_up_signal.clear()
    if command not in COMMANDS:
        print(f"rlpg: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    # SIGINT / SIGTERM / SIGUSR1 before the training loop takes them over (importing torch, building envs): stop
    # quietly. SIGINT too raises StopNow rather than KeyboardInterrupt: now and then (under load, SIGINT during the
    # import of torch) a caught KeyboardInterrupt still ended the process with SIGINT at exit (status -2 instead of
    # 130), as CPython does when its "unhandled KeyboardInterrupt" flag is set; that flag is set by any nested run of
    # embedded Python code (PyRun_*, e.g. pybind11's exec) that a KeyboardInterrupt passes through, whoever catches it
    previous = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
            if s is not None:
                previous[s] = signal.signal(s, _stop_during_start_up)
    except ValueError:  # not the main thread (main() called from a thread): leave the handlers alone
        previous = {}
    try:
        return COMMANDS[command](rest)
    except RLPGError as e:
        print(f"rlpg: error: {e}", file=sys.stderr)
        _leave_job()
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rlpg: interrupted (SIGINT); nothing was saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StopNow as e:
        print(f"rlpg: interrupted ({signal.Signals(e.signum).name}); nothing was saved", file=sys.stderr)
        return 128 + e.signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
