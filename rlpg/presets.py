"""Tuned settings per (algo, env_id[, backend]), applied under the user's flags.

Lookup order (later wins): dataclass defaults < (algo, family) < (algo, env_id) < (algo, env_id, backend) < user
flags. A family ("ALE/*") holds every id with its prefix (FAMILIES), for suites tuned as a whole, as Atari is.
The backend entry exists because torch-native envs are cheap enough to run many more of them.
"""

from __future__ import annotations

from typing import Any

# Pendulum for NPG and TRPO: a short horizon (gamma 0.9) as in rl-zoo, a wider trust region and a smaller damping
# than the defaults; 3/3 seeds between -125 and -215 after 500k steps
_TRUST_REGION_PENDULUM: dict[str, Any] = dict(num_envs=8, num_steps=256, gamma=0.9, gae_lambda=0.95, max_kl=0.02,
                                              cg_damping=0.01, vf_epochs=10, vf_minibatches=8, total_steps=500_000)

# MuJoCo locomotion (Hopper, HalfCheetah, Walker2d; -v5) at 1M steps. PPO: Tianshou's MuJoCo benchmark settings
# (examples/mujoco/mujoco_ppo.py: 8 envs x 256 steps, 32 minibatches of 64 x 10 epochs, lr 3e-4 annealed, max grad
# norm 0.5, initial log std -0.5, observations and returns normalised; its value loss 0.25 * MSE is our
# vf_coef 0.5 * 0.5 * MSE). Tianshou clips the value loss and does not normalise advantages; rlpg keeps its defaults
# there (Andrychowicz et al. 2021 found value clipping does not help). NPG / TRPO: rlpg's defaults (8 envs x 128, KL
# radius 0.01, critic 5 epochs x 8 minibatches, lr 1e-3), which reached 3316 (3 seeds) on Hopper-v5 at 300k steps,
# with the normalisers named here because a preset turns the automatic ones off. Measured: benchmarks/mujoco-1m
_NORMALIZED: dict[str, Any] = dict(normalize_obs=True, normalize_reward=True, total_steps=1_000_000,
                                   eval_interval=50_000)
_PPO_MUJOCO: dict[str, Any] = dict(_NORMALIZED, num_envs=8, num_steps=256, num_minibatches=32, update_epochs=10,
                                   learning_rate=3e-4, anneal_lr=True, gamma=0.99, gae_lambda=0.95, clip_coef=0.2,
                                   ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, log_std_init=-0.5)
_TRUST_REGION_MUJOCO: dict[str, Any] = dict(_NORMALIZED, num_envs=8, num_steps=128, max_kl=0.01, gamma=0.99,
                                            gae_lambda=0.97, learning_rate=1e-3, vf_epochs=5, vf_minibatches=8)
MUJOCO_TASKS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
# PPO on HalfCheetah: rl-zoo's tuned settings (hyperparams/ppo.yml, HalfCheetah: 1 env x 512 steps, minibatches of 64 x
# 20 epochs, learning rate 2.0633e-5 held constant, clip 0.1, gamma 0.98, lambda 0.92, entropy 4.0e-4, value 0.58,
# max grad norm 0.8, initial log std -2, ReLU 256 x 256, both normalisers), with rlpg's orthogonal initialisation.
# 1M steps, seeds 1-3: 5787 / 6483 / 6571 (mean 6281; benchmarks/halfcheetah-ppo-zoo); Tianshou's settings above reached
# 4744 / 3575 / 6045 (mean 4788), seed 2 stuck near 3,500. The larger network, twice the gradient steps and one env
# make a run ~3.5x as long on a CPU (25 rather than 7 minutes with two runs sharing 2 cores)
_PPO_HALFCHEETAH: dict[str, Any] = dict(_NORMALIZED, num_envs=1, num_steps=512, num_minibatches=8, update_epochs=20,
                                        learning_rate=2.0633e-5, anneal_lr=False, gamma=0.98, gae_lambda=0.92,
                                        clip_coef=0.1, ent_coef=4.01762e-4, vf_coef=0.58096, max_grad_norm=0.8,
                                        log_std_init=-2.0, activation="relu", hidden_sizes=(256, 256))

# Box2D (the `box2d` extra). PPO on LunarLander / LunarLanderContinuous: rl-zoo's settings (16 envs x 1024 steps,
# minibatches of 64 x 4 epochs, gamma 0.999, lambda 0.98, entropy 0.01), no normalisers as there; the learning rate
# anneals (rl-zoo keeps 3e-4), which steadies the final policy. NPG / TRPO: rl-zoo's sb3-contrib TRPO settings
# translated (n_critic_updates epochs over minibatches of 128). BipedalWalker: rl-zoo's settings for both.
_PPO_LUNAR: dict[str, Any] = dict(num_envs=16, num_steps=1024, num_minibatches=256, update_epochs=4, gamma=0.999,
                                  gae_lambda=0.98, ent_coef=0.01, learning_rate=3e-4, normalize_obs=False,
                                  normalize_reward=False, total_steps=1_000_000, eval_interval=50_000)
_TRUST_REGION_LUNAR: dict[str, Any] = dict(num_envs=2, num_steps=512, gamma=0.99, gae_lambda=0.98, cg_damping=0.01,
                                           learning_rate=1e-3, vf_epochs=15, vf_minibatches=8, normalize_obs=False,
                                           normalize_reward=False, total_steps=200_000)
_TRUST_REGION_LUNAR_CONTINUOUS: dict[str, Any] = dict(num_envs=2, num_steps=1024, gamma=0.99, gae_lambda=0.95,
                                                      vf_epochs=20, vf_minibatches=16, normalize_obs=True,
                                                      normalize_reward=True, total_steps=300_000)
_TRUST_REGION_BIPEDAL: dict[str, Any] = dict(num_envs=2, num_steps=1024, gamma=0.99, gae_lambda=0.95, cg_iters=25,
                                             cg_damping=0.1, learning_rate=1e-3, vf_epochs=20, vf_minibatches=16,
                                             normalize_obs=True, normalize_reward=True, total_steps=1_000_000,
                                             eval_interval=50_000)
_PPO_BIPEDAL: dict[str, Any] = dict(num_envs=32, num_steps=2048, num_minibatches=1024, update_epochs=10, gamma=0.999,
                                    gae_lambda=0.95, ent_coef=0.0, learning_rate=3e-4, clip_coef=0.18,
                                    normalize_obs=True, normalize_reward=True, total_steps=5_000_000,
                                    eval_interval=250_000)

# Acrobot and MountainCarContinuous at 100k steps. TRPO / NPG on Acrobot: observations normalised and lambda 0.95 as
# in rl-zoo, 8 envs x 256 steps, 10 critic epochs. TRPO seeds 1-3 (final policy, 20 episodes): -77.1 / -86.2 / -84.8
# (mean -82.7) against -87.0 with the defaults and -84.8 with rl-zoo's 2 envs x 1024, which took twice as long.
# MountainCarContinuous: the defaults with both normalisers (PPO 93.4, TRPO 94.5 over 3 seeds at 100k); without them
# PPO stands still: the reward for moving is too sparse against the action cost
_TRUST_REGION_ACROBOT: dict[str, Any] = dict(normalize_obs=True, num_envs=8, num_steps=256, gae_lambda=0.95,
                                             vf_epochs=10, total_steps=100_000)
_MOUNTAIN_CAR_CONTINUOUS: dict[str, Any] = dict(normalize_obs=True, normalize_reward=True, total_steps=100_000)

FAMILIES: dict[str, str] = {"ALE/": "ALE/*", "MinAtar/": "MinAtar/*"}
"""id prefix -> the family name its presets are filed under"""

PRESETS: dict[tuple[str, ...], dict[str, Any]] = {
    # CleanRL's ppo_atari.py (the settings of Schulman et al. 2017's Atari runs at 8 envs): 8 envs x 128 steps, 4
    # minibatches x 4 epochs, learning rate 2.5e-4 annealed to 0, clip 0.1 with value clipping (harmless here: the
    # rewards are clipped to +-1), entropy 0.01, 10M agent steps (40M frames). Whole games are long to evaluate:
    # every 500k steps
    ("ppo", "ALE/*"): dict(
        num_envs=8,
        num_steps=128,
        num_minibatches=4,
        update_epochs=4,
        learning_rate=2.5e-4,
        anneal_lr=True,
        gamma=0.99,
        gae_lambda=0.95,
        clip_coef=0.1,
        clip_vloss=True,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        total_steps=10_000_000,
        eval_interval=500_000,
        eval_episodes=10,
    ),
    # MinAtar (10 x 10 x C frames, MinAtar's own network in rlpg.encoders): gymnax-blines' PPO for Breakout-MinAtar
    # (agents/Breakout-MinAtar/ppo.yaml: 64 envs x 128 steps, 8 minibatches x 4 epochs, lr 5e-4, clip 0.2, entropy
    # 0.01, value 0.5, max grad norm 0.5, lambda 0.95) with PureJaxRL's gamma 0.99 and linear annealing
    # (examples/brax_minatar.ipynb). The episodes get a time limit from rlpg.envs.ids (MINATAR_MAX_EPISODE_STEPS)
    ("ppo", "MinAtar/*"): dict(
        num_envs=64,
        num_steps=128,
        num_minibatches=8,
        update_epochs=4,
        learning_rate=5e-4,
        anneal_lr=True,
        gamma=0.99,
        gae_lambda=0.95,
        clip_coef=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        total_steps=10_000_000,
        eval_interval=250_000,
    ),
    # rl-zoo's tuned PPO for CartPole-v1 (lin_0.001 learning rate, lin_0.2 clip, batch 256, 20 epochs)
    ("ppo", "CartPole-v1"): dict(
        num_envs=8,
        num_steps=32,
        num_minibatches=1,
        update_epochs=20,
        gamma=0.98,
        gae_lambda=0.8,
        ent_coef=0.0,
        learning_rate=1e-3,
        anneal_lr=True,
        anneal_clip=True,
        clip_coef=0.2,
        clip_vloss=False,
        total_steps=100_000,
    ),
    # torch-native CartPole (the default run): 8x the envs, half the rollout length and half the epochs of rl-zoo's
    # settings, twice the learning rate and 60k steps. Stepping 64 tensor envs costs about what stepping one does,
    # so the ~2,400 gradient steps are most of the run. Deterministic eval after 60k steps, seeds 1-30: 29 of 30
    # >= 475 (27 at 500; seed 25: 210); with rl-zoo's 1e-3 and 100k steps 18/18 reached 500 but took ~40% longer
    ("ppo", "CartPole-v1", "torch"): dict(num_envs=64, num_steps=16, num_minibatches=4, update_epochs=10,
                                          learning_rate=2e-3, total_steps=60_000, eval_interval=0),
    ("ppo", "Pendulum-v1"): dict(
        num_envs=4,
        num_steps=1024,
        num_minibatches=64,
        update_epochs=10,
        gamma=0.9,
        gae_lambda=0.95,
        ent_coef=0.0,
        learning_rate=1e-3,
        clip_coef=0.2,
        total_steps=500_000,
    ),
    # torch-native Pendulum: 4x the envs and 4x larger minibatches, a quarter of the gradient steps, ~3x faster;
    # seeds 1-3 after 500k steps: -151.0, -144.4, -221.3 (mean -172)
    ("ppo", "Pendulum-v1", "torch"): dict(num_envs=16, num_steps=256, num_minibatches=16),
    # NPG / TRPO / REINFORCE (agents/npg.py, trpo.py, reinforce.py). CartPole's returns reach 1 / (1 - gamma)
    # = 100, which saturates the tanh critic (its last hidden layer pinned at +-1, explained variance 0) on
    # some seeds; scaling the rewards keeps the targets O(1). Measured: 6/6 seeds eval 500 at 100k steps.
    ("trpo", "CartPole-v1"): dict(normalize_reward=True, total_steps=100_000),
    ("npg", "CartPole-v1"): dict(normalize_reward=True, total_steps=100_000),
    ("trpo", "Pendulum-v1"): _TRUST_REGION_PENDULUM,
    ("npg", "Pendulum-v1"): _TRUST_REGION_PENDULUM,
    # REINFORCE with its value baseline: 3/3 seeds eval 500 at 500k steps (without reward scaling, 2/3)
    ("reinforce", "CartPole-v1"): dict(normalize_reward=True, total_steps=500_000),
    **{("ppo", task): _PPO_MUJOCO for task in MUJOCO_TASKS},
    # Hopper: minibatches of 128 (16 per epoch) rather than Tianshou's 64: half the gradient steps, which were half of
    # a run's time on a CPU (~1.2 ms each). 1M steps, seeds 1-3: 3281 / 3332 / 3385 (mean 3333; benchmarks/
    # hopper-1m-mb16) against 3504 / 3352 / 3261 (mean 3373) with 32 minibatches, in 4.6 minutes rather than 6.5 on
    # 2 CPU cores (benchmarks/hopper-1m-time)
    ("ppo", "Hopper-v5"): dict(_PPO_MUJOCO, num_minibatches=16),
    ("ppo", "HalfCheetah-v5"): _PPO_HALFCHEETAH,
    ("ppo", "LunarLander-v3"): _PPO_LUNAR,
    ("ppo", "LunarLanderContinuous-v3"): _PPO_LUNAR,
    ("ppo", "BipedalWalker-v3"): _PPO_BIPEDAL,
    **{(algo, "LunarLander-v3"): _TRUST_REGION_LUNAR for algo in ("trpo", "npg")},
    **{(algo, "LunarLanderContinuous-v3"): _TRUST_REGION_LUNAR_CONTINUOUS for algo in ("trpo", "npg")},
    **{(algo, "BipedalWalker-v3"): _TRUST_REGION_BIPEDAL for algo in ("trpo", "npg")},
    **{(algo, "Acrobot-v1"): _TRUST_REGION_ACROBOT for algo in ("trpo", "npg")},
    **{(algo, "MountainCarContinuous-v0"): _MOUNTAIN_CAR_CONTINUOUS for algo in ("ppo", "trpo", "npg")},
    **{(algo, task): _TRUST_REGION_MUJOCO for algo in ("trpo", "npg") for task in MUJOCO_TASKS},
    # HalfCheetah: an initial std of exp(-0.5) = 0.61 (Tianshou's) rather than 1. At std 1 a KL radius of 0.01 spends
    # the early updates narrowing the policy, and at 1M steps the curves were still rising, with one seed of three
    # stuck near 1,800 (TRPO 4213 / 1748 / 4279). With it: TRPO 4782 / 4547 / 4034, NPG 4644 / 4547 / 4034
    # (benchmarks/halfcheetah-logstd); also tried: max_kl 0.02 (a seed stuck at 2,843) and lambda 0.95 (same mean).
    # Then Tianshou's layout of the same 1,024-step batch, 16 envs x 64 steps (more, shorter stretches of the
    # never-ending episodes per update): TRPO 4707 / 3894 / 5561 (mean 4721), NPG 4707 / 3894 / 5583 (mean 4728)
    # (benchmarks/halfcheetah-16x64)
    **{(algo, "HalfCheetah-v5"): dict(_TRUST_REGION_MUJOCO, log_std_init=-0.5, num_envs=16, num_steps=64)
       for algo in ("trpo", "npg")},
}


def family(env_id: str) -> str | None:
    """The family of `env_id` ("ALE/*" for ALE/Pong-v5), None when it belongs to none."""
    return next((name for prefix, name in FAMILIES.items() if env_id.startswith(prefix)), None)


def _keys(algo: str, env_id: str, backend: str) -> list[tuple[str, ...]]:
    """The preset keys a run looks up, in the order they apply (later wins)."""
    fam = family(env_id)
    return [*([(algo, fam)] if fam else []), (algo, env_id), (algo, env_id, backend)]


def preset(algo: str, env_id: str, backend: str) -> dict[str, Any]:
    """The merged preset for a run (empty when nothing is tuned for it)."""
    out: dict[str, Any] = {}
    for key in _keys(algo, env_id, backend):
        out.update(PRESETS.get(key, {}))
    return out


def preset_name(algo: str, env_id: str, backend: str) -> str | None:
    """The preset entries a run takes, e.g. "ppo/CartPole-v1 + ppo/CartPole-v1/torch" or "ppo/ALE/*"; None when
    there are none."""
    names = ["/".join(key) for key in _keys(algo, env_id, backend) if key in PRESETS]
    return " + ".join(names) or None
