"""Train on your own Gymnasium environment: define it, register it, train PPO on it with rlpg.train.

Any `gymnasium.Env` with a Box or Discrete observation space and a Discrete, MultiDiscrete or Box action space
works; give it a time limit (`max_episode_steps`) so that episodes end and evaluation finishes. rlpg runs it in
Gymnasium's vector env (`backend="gymnasium"`), so the env stays ordinary numpy code.

    .venv/bin/python scripts/custom_env.py --total-steps 50000
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import rlpg


class PointReach(gym.Env):
    """A point on a line must reach a goal: obs [position, goal] in [-1, 1]; actions 0/1/2 move it left / stay /
    right by 0.1; reward -|goal - position| per step; the episode terminates within 0.05 of the goal."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)  # seeds self.np_random
        self.position, self.goal = self.np_random.uniform(-1.0, 1.0, size=2)
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.position = float(np.clip(self.position + 0.1 * (int(action) - 1), -1.0, 1.0))
        distance = abs(self.goal - self.position)
        return self._obs(), -distance, bool(distance < 0.05), False, {}

    def _obs(self) -> np.ndarray:
        return np.array([self.position, self.goal], dtype=np.float32)


# Register once, then the id works everywhere an id does (rlpg.train, rlpg.envs.make, gymnasium.make).
ENV_ID = "PointReach-v0"
if ENV_ID not in gym.envs.registry:
    gym.register(ENV_ID, entry_point=PointReach, max_episode_steps=50)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--total-steps", type=int, default=50_000)
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, ...")
parser.add_argument("--logdir", default="runs")
parser.add_argument("--eval-episodes", type=int, default=20)
args = parser.parse_args()


def random_return(episodes: int, seed: int) -> float:
    """Mean return of uniformly random actions: the baseline a trained policy must beat."""
    env, total = gym.make(ENV_ID), 0.0
    env.action_space.seed(seed)
    for i in range(episodes):
        env.reset(seed=seed + i)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
    return total / episodes


result = rlpg.train(
    "ppo",
    ENV_ID,
    backend="gymnasium",  # Gymnasium's SyncVectorEnv of N copies of PointReach
    total_steps=args.total_steps,
    num_envs=8,
    num_steps=64,
    num_minibatches=8,  # 8 minibatches of 64 per epoch
    seed=args.seed,
    device=args.device,
    logdir=args.logdir,
    eval_episodes=args.eval_episodes,
    progress=False,
)

# The trained policy in plain Gymnasium code, on the registered id.
policy = rlpg.load_policy(result.run_dir)
env = gym.make(ENV_ID)
obs, _ = env.reset(seed=args.seed)
steps, done = 0, False
while not done:
    obs, _, terminated, truncated, _ = env.step(int(policy.predict(obs)))
    steps, done = steps + 1, terminated or truncated
print(f"run_dir={result.run_dir} global_step={result.global_step}")
print(f"random_return={random_return(args.eval_episodes, args.seed):.2f} eval_return={result.eval_mean_return:.2f} "
      f"(one episode with load_policy: {'reached the goal' if terminated else 'timed out'} in {steps} steps)")
