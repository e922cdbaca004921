"""Export a trained policy to ONNX and run it with onnxruntime, checked against rlpg.load_policy.

The exported graph takes raw observations [B, D] (the run's observation normalisation is inside it) and returns
the deterministic action: the argmax for discrete actions, the mean for continuous ones. Needs the onnx extra
(`pip install -e '.[onnx]'` in rlpg's clone). Without --run it first trains a policy with rlpg.train.

    .venv/bin/python scripts/export_onnx.py --env-id Pendulum-v1 --total-steps 100000
    .venv/bin/python scripts/export_onnx.py --run runs/CartPole-v1__ppo__1__1795519120 --output policy.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort

import rlpg
from rlpg.export import export_onnx

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--run", metavar="RUN_DIR", default="", help="a trained run or .pt file (default: train one)")
parser.add_argument("--env-id", default="CartPole-v1", help="the task to train on without --run")
parser.add_argument("--total-steps", type=int, default=60_000, help="training steps without --run")
parser.add_argument("--output", default="", help="the .onnx file (default: next to the checkpoint)")
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--device", default="auto", help="training device: auto (cuda when present), cpu, cuda, ...")
parser.add_argument("--logdir", default="runs")
args = parser.parse_args()

# 1. A trained policy (a run directory: best.pt, else last.pt).
run = Path(args.run) if args.run else rlpg.train(
    "ppo", args.env_id, total_steps=args.total_steps, seed=args.seed, device=args.device, logdir=args.logdir,
    progress=False,
).run_dir

# 2. Export: torch.onnx traces the deterministic policy (normalisation + mode) with a dynamic batch dimension.
path = export_onnx(run, args.output or None)
print(f"onnx={path} ({path.stat().st_size / 1024:.1f} KiB)")

# 3. Run it with onnxruntime on observations from the task's own Gymnasium env.
policy = rlpg.load_policy(run)  # the same checkpoint, in torch, on the CPU
env_id = policy.info["env_id"]
env = gym.make(env_id)
env.observation_space.seed(args.seed)
obs = np.stack([env.observation_space.sample() for _ in range(256)]).astype(np.float32)  # [B, D]
session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
(onnx_actions,) = session.run(None, {"obs": obs})

# 4. Same actions as load_policy().predict: exactly for discrete actions, to float rounding for continuous ones.
torch_actions = policy.predict(obs)
diff = np.abs(onnx_actions.astype(np.float64) - torch_actions.astype(np.float64)).max()
print(f"{env_id}: {len(obs)} observations, actions {onnx_actions.shape} {onnx_actions.dtype}; max_abs_diff={diff:.3g}")

# 5. Drive an episode with onnxruntime alone (no torch needed at deployment).
obs, _ = env.reset(seed=args.seed)
episode_return, done = 0.0, False
while not done:
    (action,) = session.run(None, {"obs": obs[None].astype(np.float32)})
    obs, reward, terminated, truncated, _ = env.step(action[0])
    episode_return += float(reward)
    done = terminated or truncated
print(f"onnxruntime episode_return={episode_return:.2f}")
