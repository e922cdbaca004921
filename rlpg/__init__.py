"""rlpg: policy-gradient reinforcement learning (REINFORCE, NPG, TRPO, PPO) for PyTorch and Gymnasium.

import rlpg
result = rlpg.train("ppo", "CartPole-v1", total_steps=100_000)
policy = rlpg.load_policy(result.run_dir)
action = policy.predict(obs)
"""

from rlpg.checkpoint import TrainedPolicy, load_policy
from rlpg.errors import RLPGError
from rlpg.trainer import TrainResult, train

__version__ = "0.1.0"
__all__ = ["train", "TrainResult", "load_policy", "TrainedPolicy", "RLPGError", "__version__"]
