"""rlpg: policy-gradient reinforcement learning (REINFORCE, NPG, TRPO, PPO) for PyTorch and Gymnasium.

import rlpg
result = rlpg.train("ppo", "CartPole-v1", total_steps=100_000)
policy = rlpg.load_policy(result.run_dir)
action = policy.predict(obs)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rlpg.errors import RLPGError

__version__ = "0.1.0"
__all__ = ["train", "TrainResult", "load_policy", "TrainedPolicy", "RLPGError", "__version__"]

if TYPE_CHECKING:
    from rlpg.checkpoint import TrainedPolicy, load_policy
    from rlpg.trainer import TrainResult, train

# imported on first use, so `rlpg --help` and the command line's signal handling start before torch is imported
_LAZY = {"train": "rlpg.trainer", "TrainResult": "rlpg.trainer", "load_policy": "rlpg.checkpoint",
         "TrainedPolicy": "rlpg.checkpoint"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlpg' has no attribute {name!r}")
