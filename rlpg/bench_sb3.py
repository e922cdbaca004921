"""The Stable-Baselines3 side of `rlpg bench`: SB3's PPO and sb3-contrib's TRPO with rl-zoo's tuned settings.

    python -m rlpg.bench_sb3 --algo ppo --env Hopper-v5 --seed 1 --total-steps 300000 --run-dir DIR

One run per process, like an rlpg run, scored the way `rlpg bench` scores rlpg runs: deterministic evaluation over
the same number of episodes on the same evaluation seed, of the final policy and of the best periodic evaluation's
policy. The run checkpoints its model (and VecNormalize statistics) at every periodic evaluation, so an interrupted
benchmark continues it (SB3 restarts the rollout it was collecting; the learning-rate schedule continues where it
stopped). It writes config.json and TensorBoard events (`eval/mean_return`) so `rlpg plot` draws it next to the
rlpg runs, and result.json when it is done. Needs the `bench` extra (stable-baselines3, sb3-contrib).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rlpg.checkpoint import atomic_write
from rlpg.errors import RLPGError, install_line

SB3_ALGOS = ("ppo", "trpo")
"""the algorithms with an SB3 / sb3-contrib counterpart (NPG and REINFORCE have none)"""

_PI_VF_256 = dict(log_std_init=-2, ortho_init=False, activation_fn="relu", net_arch=dict(pi=[256, 256], vf=[256, 256]))
_TRPO_MUJOCO: dict[str, Any] = dict(normalize=True, n_envs=2, batch_size=128, n_steps=1024, gamma=0.99,
                                    gae_lambda=0.95, sub_sampling_factor=1, cg_max_steps=25, cg_damping=0.1,
                                    n_critic_updates=20, learning_rate=1e-3)
_LUNAR_PPO: dict[str, Any] = dict(n_envs=16, n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999, n_epochs=4,
                                  ent_coef=0.01)

ZOO: dict[tuple[str, str], dict[str, Any]] = {
    # rl-baselines3-zoo hyperparams/ppo.yml and trpo.yml (the -v4 MuJoCo entries for the -v5 tasks, LunarLander-v2's
    # for LunarLander-v3). "lin_X" is a linear schedule from X to 0; n_timesteps is the benchmark's budget instead
    ("ppo", "CartPole-v1"): dict(n_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                                 ent_coef=0.0, learning_rate="lin_0.001", clip_range="lin_0.2"),
    ("ppo", "Pendulum-v1"): dict(n_envs=4, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10, ent_coef=0.0,
                                 learning_rate=1e-3, clip_range=0.2, use_sde=True, sde_sample_freq=4),
    ("ppo", "Acrobot-v1"): dict(normalize=True, n_envs=16, n_steps=256, gae_lambda=0.94, gamma=0.99, n_epochs=4,
                                ent_coef=0.0),
    ("ppo", "MountainCarContinuous-v0"): dict(normalize=True, n_envs=1, batch_size=256, n_steps=8, gamma=0.9999,
                                              learning_rate=7.77e-05, ent_coef=0.00429, clip_range=0.1, n_epochs=10,
                                              gae_lambda=0.9, max_grad_norm=5, vf_coef=0.19, use_sde=True,
                                              policy_kwargs=dict(log_std_init=-3.29, ortho_init=False)),
    ("ppo", "LunarLander-v3"): _LUNAR_PPO,
    ("ppo", "LunarLanderContinuous-v3"): _LUNAR_PPO,
    ("ppo", "BipedalWalker-v3"): dict(normalize=True, n_envs=32, n_steps=2048, batch_size=64, gae_lambda=0.95,
                                      gamma=0.999, n_epochs=10, ent_coef=0.0, learning_rate=3e-4, clip_range=0.18),
    ("ppo", "Hopper-v5"): dict(normalize=True, n_envs=1, batch_size=32, n_steps=512, gamma=0.999,
                               learning_rate=9.80828e-05, ent_coef=0.00229519, clip_range=0.2, n_epochs=5,
                               gae_lambda=0.99, max_grad_norm=0.7, vf_coef=0.835671, policy_kwargs=_PI_VF_256),
    ("ppo", "HalfCheetah-v5"): dict(normalize=True, n_envs=1, batch_size=64, n_steps=512, gamma=0.98,
                                    learning_rate=2.0633e-05, ent_coef=0.000401762, clip_range=0.1, n_epochs=20,
                                    gae_lambda=0.92, max_grad_norm=0.8, vf_coef=0.58096, policy_kwargs=_PI_VF_256),
    ("ppo", "Walker2d-v5"): dict(normalize=True, n_envs=1, batch_size=32, n_steps=512, gamma=0.99,
                                 learning_rate=5.05041e-05, ent_coef=0.000585045, clip_range=0.1, n_epochs=20,
                                 gae_lambda=0.95, max_grad_norm=1, vf_coef=0.871923),
    ("trpo", "CartPole-v1"): dict(n_envs=2, n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99,
                                  learning_rate=1e-3, n_critic_updates=20),
    ("trpo", "Pendulum-v1"): dict(n_envs=2, n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True,
                                  sde_sample_freq=4),
    ("trpo", "LunarLander-v3"): dict(n_envs=2, n_steps=512, cg_damping=0.01, gae_lambda=0.98, gamma=0.99,
                                     learning_rate=1e-3, n_critic_updates=15),
    ("trpo", "LunarLanderContinuous-v3"): dict(normalize=True, n_envs=2, n_steps=1024, n_critic_updates=20),
    ("trpo", "Acrobot-v1"): dict(normalize=True, n_envs=2, n_steps=1024),
    ("trpo", "MountainCarContinuous-v0"): dict(normalize=True, n_envs=2, use_sde=True, sde_sample_freq=4),
    ("trpo", "Hopper-v5"): _TRPO_MUJOCO,
    ("trpo", "Walker2d-v5"): _TRPO_MUJOCO,
    ("trpo", "HalfCheetah-v5"): dict(_TRPO_MUJOCO, target_kl=0.04),
    ("trpo", "BipedalWalker-v3"): _TRPO_MUJOCO,
}


def available() -> bool:
    """Whether stable-baselines3 and sb3-contrib are installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("stable_baselines3", "sb3_contrib"))


def settings(algo: str, env_id: str) -> tuple[dict[str, Any], str]:
    """rl-zoo's settings for (algo, env_id) and where they come from; SB3's defaults where rl-zoo tunes none."""
    if algo not in SB3_ALGOS:
        raise RLPGError(f"SB3 has no {algo}; the SB3 side of rlpg bench covers {', '.join(SB3_ALGOS)}")
    if (algo, env_id) in ZOO:
        return dict(ZOO[(algo, env_id)]), "rl-zoo"
    return {}, "sb3 defaults"


def _schedule(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])
        return lambda progress_remaining: progress_remaining * start
    return value


def _policy_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    import torch.nn as nn

    out = dict(kwargs)
    if "activation_fn" in out:
        out["activation_fn"] = {"relu": nn.ReLU, "tanh": nn.Tanh}[out["activation_fn"]]
    return out


class Run:
    """One SB3 run in `run_dir`: train (or continue) to `total_steps`, evaluating every `eval_interval` steps."""

    def __init__(self, algo: str, env_id: str, seed: int, total_steps: int, run_dir: Path, eval_interval: int,
                 eval_episodes: int, eval_seed: int) -> None:
        if not available():
            raise RLPGError(f"the SB3 side of rlpg bench needs stable-baselines3 and sb3-contrib: "
                            f"{install_line('bench')}")
        self.algo, self.env_id, self.seed, self.total_steps = algo, env_id, seed, total_steps
        self.run_dir, self.eval_interval = run_dir, eval_interval
        self.eval_episodes, self.eval_seed = eval_episodes, eval_seed
        self.hyper, self.source = settings(algo, env_id)
        self.stop = False

    def _make_env(self, n: int, seed: int, training: bool, stats: Any = None) -> Any:
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize

        env = make_vec_env(self.env_id, n_envs=n, seed=seed)
        if not self.hyper.get("normalize"):
            return env
        if stats is not None and training:
            return VecNormalize.load(str(stats), env)
        env = VecNormalize(env, gamma=self.hyper.get("gamma", 0.99), training=training, norm_reward=training)
        return env

    def _cls(self) -> Any:
        if self.algo == "ppo":
            from stable_baselines3 import PPO

            return PPO
        from sb3_contrib import TRPO

        return TRPO

    def _model(self, env: Any) -> Any:
        kwargs = {k: _schedule(v) for k, v in self.hyper.items() if k not in ("normalize", "n_envs")}
        if "policy_kwargs" in kwargs:
            kwargs["policy_kwargs"] = _policy_kwargs(kwargs["policy_kwargs"])
        return self._cls()("MlpPolicy", env, seed=self.seed, device="cpu", verbose=0, **kwargs)

    def evaluate(self, model: Any, train_env: Any) -> float:
        """Mean deterministic return over eval_episodes on eval_seed, observations normalised with the training
        statistics (frozen), rewards raw."""
        from stable_baselines3.common.evaluation import evaluate_policy

        env = self._make_env(min(10, self.eval_episodes), self.eval_seed, training=False)
        try:
            if self.hyper.get("normalize"):
                env.obs_rms = train_env.obs_rms.copy()
            mean, _ = evaluate_policy(model, env, n_eval_episodes=self.eval_episodes, deterministic=True)
        finally:
            env.close()
        return float(mean)

    def _save(self, model: Any, env: Any, name: str) -> None:
        tmp = self.run_dir / f".{name}.tmp.zip"
        model.save(str(tmp))
        tmp.replace(self.run_dir / f"{name}.zip")
        if self.hyper.get("normalize"):
            tmp_stats = self.run_dir / f".{name}.tmp.pkl"
            env.save(str(tmp_stats))
            tmp_stats.replace(self.run_dir / f"{name}_vecnormalize.pkl")

    def _progress(self) -> dict[str, Any]:
        path = self.run_dir / "progress.json"
        return json.loads(path.read_text()) if path.is_file() else {"steps": 0, "seconds": 0.0, "best": None}

    def _write_progress(self, progress: dict[str, Any]) -> None:
        atomic_write(self.run_dir / "progress.json", lambda f: f.write(json.dumps(progress).encode()))

    def train(self) -> dict[str, Any]:
        import torch
        from stable_baselines3.common.callbacks import BaseCallback
        from torch.utils.tensorboard import SummaryWriter

        torch.set_num_threads(1)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = {"train": {"algo": self.algo, "env_id": self.env_id, "seed": self.seed, "library": "sb3",
                            "total_steps": self.total_steps}, "sb3": {"settings": self.source, **{
                                k: str(v) for k, v in self.hyper.items()}}}
        (self.run_dir / "config.json").write_text(json.dumps(config, indent=2))
        progress = self._progress()
        n_envs = int(self.hyper.get("n_envs", 1))
        resumed = progress["steps"] > 0 and (self.run_dir / "last.zip").is_file()
        stats = self.run_dir / "last_vecnormalize.pkl"
        env = self._make_env(n_envs, self.seed, training=True, stats=stats if resumed else None)
        if resumed:
            model = self._cls().load(str(self.run_dir / "last.zip"), env=env, device="cpu")
        else:
            model = self._model(env)
        writer = SummaryWriter(str(self.run_dir))
        run = self
        start = time.perf_counter()
        spent = float(progress["seconds"])

        class Evaluate(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.next = (progress["steps"] // run.eval_interval + 1) * run.eval_interval

            def _on_step(self) -> bool:
                if self.num_timesteps >= self.next:
                    self.next += run.eval_interval
                    mean = run.evaluate(self.model, env)
                    writer.add_scalar("eval/mean_return", mean, self.num_timesteps)
                    writer.flush()
                    if progress["best"] is None or mean > progress["best"]:
                        progress["best"] = mean
                        run._save(self.model, env, "best")
                    self._checkpoint()
                elif run.stop:  # a stop signal: keep the steps so far (SB3 collects the interrupted rollout again)
                    self._checkpoint()
                return not run.stop

            def _checkpoint(self) -> None:
                run._save(self.model, env, "last")
                progress["steps"] = self.num_timesteps
                progress["seconds"] = spent + time.perf_counter() - start
                run._write_progress(progress)

        remaining = self.total_steps - int(progress["steps"])
        if remaining > 0:
            model.learn(remaining, callback=Evaluate(), reset_num_timesteps=not resumed)
        writer.close()
        if self.stop:
            return {}
        seconds = spent + time.perf_counter() - start
        self._save(model, env, "last")
        final = self.evaluate(model, env)
        env.close()
        # the periodic evaluations ran on the same seed and episodes as this score, so the best of them is best.zip's
        best = final if progress["best"] is None else max(progress["best"], final)
        result = {"steps": int(model.num_timesteps), "final_return": final, "best_return": best,
                  "train_minutes": seconds / 60, "settings": self.source}
        atomic_write(self.run_dir / "result.json", lambda f: f.write(json.dumps(result).encode()))
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlpg.bench_sb3", description=__doc__.splitlines()[0])
    parser.add_argument("--algo", required=True, choices=SB3_ALGOS)
    parser.add_argument("--env", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--total-steps", type=int, required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--eval-interval", type=int, required=True)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--eval-seed", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        run = Run(args.algo, args.env, args.seed, args.total_steps, Path(args.run_dir), args.eval_interval,
                  args.eval_episodes, args.eval_seed)

        def stop(signum: int, frame: object) -> None:
            run.stop = True  # leave learn() at the next step; the last periodic checkpoint is where it continues

        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, stop)
        result = run.train()
    except RLPGError as e:
        print(f"rlpg bench: {e}", file=sys.stderr)
        return 2
    return 0 if result else 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
