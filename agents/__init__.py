"""The agents: one file per algorithm, each a <Algo>Config dataclass and an <Algo> with update()."""

from rlpg.agents.npg import NPG, NPGConfig
from rlpg.agents.ppo import PPO, PPOConfig
from rlpg.agents.reinforce import REINFORCE, REINFORCEConfig
from rlpg.agents.trpo import TRPO, TRPOConfig

# name -> (agent class, config class); the trainer and the CLI look algorithms up here.
ALGOS: dict[str, tuple[type, type]] = {
    "ppo": (PPO, PPOConfig),
    "reinforce": (REINFORCE, REINFORCEConfig),
    "npg": (NPG, NPGConfig),
    "trpo": (TRPO, TRPOConfig),
}

__all__ = ["ALGOS", "PPO", "PPOConfig", "REINFORCE", "REINFORCEConfig", "NPG", "NPGConfig", "TRPO", "TRPOConfig"]
