"""The `rlpg` command: train, eval and export. `rlpg` alone trains the default (PPO on CartPole-v1).

Bad input (unknown algorithm or env, unsupported space, bad hyperparameter, missing or corrupt
checkpoint, non-finite loss) prints one line `rlpg: error: ...` and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rlpg.errors import RLPGError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _train(argv: Sequence[str]) -> int:
    from rlpg.agents import ALGOS
    from rlpg.config import TrainConfig, add_arguments
    from rlpg.errors import unknown_name
    from rlpg.trainer import Trainer, resolve_configs

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo", default="ppo")
    known, _ = pre.parse_known_args(argv)
    if known.algo not in ALGOS:
        raise unknown_name("algorithm", known.algo, ALGOS)
    _, agent_cls = ALGOS[known.algo]
    parser = argparse.ArgumentParser(
        prog="rlpg train",
        description=f"Train {known.algo} on a Gymnasium environment. "
        "Unset flags take the tuned preset for the (algo, env) pair, then the defaults.",
    )
    parser.add_argument("--env", dest="env_id", default=argparse.SUPPRESS, metavar="ENV_ID", help="alias of --env-id")
    add_arguments(parser, TrainConfig, "training")
    add_arguments(parser, agent_cls, f"{known.algo} hyperparameters")
    args = vars(parser.parse_args(argv))
    algo = args.pop("algo", known.algo)
    cfg, agent_cfg = resolve_configs(algo, args.pop("env_id", None), args)
    trainer = Trainer(cfg, agent_cfg)
    print(
        f"rlpg: training {cfg.algo} on {cfg.env_id} ({trainer.backend} backend, "
        f"{cfg.num_envs} envs, device {trainer.device}) -> {trainer.run_dir}",
        file=sys.stderr,
    )
    result = trainer.run()
    if result.interrupted:
        print(
            f"rlpg: interrupted at step {result.global_step}; checkpoint saved to {result.run_dir / 'last.pt'}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(
        f"rlpg: done: {result.global_step} steps, deterministic eval return {result.eval_mean_return:.2f} "
        f"+/- {result.eval_std_return:.2f} over {cfg.eval_episodes} episodes; run dir {result.run_dir}"
    )
    print(f"rlpg: watch it with: tensorboard --logdir {cfg.logdir}")
    return 0


def _eval(argv: Sequence[str]) -> int:
    from rlpg import checkpoint
    from rlpg.envs import load_normalizer_state, make, set_training
    from rlpg.rollout import evaluate
    from rlpg.trainer import resolve_device

    parser = argparse.ArgumentParser(
        prog="rlpg eval", description="Run the deterministic policy of a run or checkpoint."
    )
    parser.add_argument("path", help="run directory (uses best.pt, else last.pt) or checkpoint file")
    parser.add_argument("--episodes", type=int, default=20, help="episodes to run (default: 20)")
    parser.add_argument("--num-envs", type=int, default=10, help="parallel evaluation environments (default: 10)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the evaluation environments")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--backend", default=None, help="environment backend (default: the run's)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.episodes <= 0 or args.num_envs <= 0:
        raise RLPGError("--episodes and --num-envs must be > 0")
    device = resolve_device(args.device)
    path = checkpoint.resolve(args.path)
    payload = checkpoint.load(path, map_location=device)
    cfg = payload["config"]["train"]
    env = make(
        payload["env_id"],
        min(args.num_envs, args.episodes),
        device=device,
        backend=args.backend or cfg["backend"],
        normalize_obs=cfg["normalize_obs"],
        clip_obs=cfg["clip_obs"],
    )
    load_normalizer_state(env, payload.get("normalizer", {}))
    set_training(env, False)
    policy = checkpoint.build_policy(payload, device)
    returns = evaluate(env, policy, args.episodes, seed=args.seed, deterministic=not args.stochastic)
    env.close()
    mean, std = float(returns.mean()), float(returns.std(correction=0))
    if args.json:
        print(
            json.dumps(
                {
                    "mean_return": mean,
                    "std_return": std,
                    "episodes": args.episodes,
                    "checkpoint": str(path),
                    "env_id": payload["env_id"],
                    "algo": payload["algo"],
                }
            )
        )
    else:
        print(
            f"{payload['algo']} on {payload['env_id']} ({path}): mean return {mean:.2f} +/- {std:.2f} "
            f"over {args.episodes} episodes"
        )
    return 0


def _export(argv: Sequence[str]) -> int:
    from rlpg.export import export_onnx

    parser = argparse.ArgumentParser(prog="rlpg export", description="Export the deterministic policy to ONNX.")
    parser.add_argument("path", help="run directory or checkpoint file")
    parser.add_argument("--output", "-o", default=None, help="output .onnx file (default: <checkpoint>.onnx)")
    parser.add_argument("--raw-actions", action="store_true",
                        help="export the raw Gaussian mean, not clipped to the Box action space's bounds")
    args = parser.parse_args(argv)
    out = export_onnx(args.path, args.output, clip_actions=not args.raw_actions)
    print(f"rlpg: wrote {out}")
    return 0


COMMANDS = {"train": _train, "eval": _eval, "export": _export}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["train", *argv]  # `rlpg` alone, or `rlpg --flags`, trains
    if argv[0] in ("-h", "--help"):
        print(
            "usage: rlpg {train,eval,export} ...\n\n  train   train an agent (default: PPO on CartPole-v1)\n"
            "  eval    evaluate a run directory or checkpoint\n  export  export a policy to ONNX\n\n"
            "rlpg COMMAND --help for the options of each."
        )
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"rlpg: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[command](rest)
    except RLPGError as e:
        print(f"rlpg: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rlpg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
