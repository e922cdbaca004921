"""The return of a uniformly random policy on the tasks of this benchmark, the floor the trained policies are read
against: 20 episodes each (reset seeds 0-19), `python benchmarks/mujoco-defaults-300k/random_policy.py`."""

import gymnasium as gym
import numpy as np

for env_id in ["InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Reacher-v5", "Swimmer-v5"]:
    env = gym.make(env_id)
    env.action_space.seed(0)
    returns = []
    for episode in range(20):
        env.reset(seed=episode)
        done, total = False, 0.0
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    print(f"{env_id}: {np.mean(returns):.1f} +- {np.std(returns):.1f}")
