"""Atari preprocessing (envs/atari.py): per-life episodes and clipped rewards for the learner only, FIRE at the start
of every life, whole-game raw returns in the episode statistics of training and evaluation envs, uint8 frames in
the rollout; on the real ALE (skipped without ale-py): [4, 84, 84] uint8 observations and the presets."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlpg.envs import RecordEpisodeStatistics, atari
from rlpg.envs.gym import GymVecEnv
from rlpg.policies import ActorCritic
from rlpg.rollout import Collector, evaluate

LIVES, LIFE_STEPS, REWARD = 3, 5, 3.0


class FakeALE:
    """The emulator handle the wrappers read: `ale.lives()`."""

    def __init__(self) -> None:
        self.left = LIVES

    def lives(self) -> int:
        return self.left


class FakeAtari(gym.Env):
    """An ALE-like game: 3 lives, a life lost every 5 steps after its FIRE, a raw reward of 3 on every step (so
    clipping shows), game over when no life is left. The ball waits for FIRE (action 1): until a life is fired, steps
    score nothing and lose nothing. Records every action and counts real resets."""

    observation_space = gym.spaces.Box(0, 255, (4, 8, 8), np.uint8)
    action_space = gym.spaces.Discrete(4)
    resets = 0

    def __init__(self) -> None:
        self.ale = FakeALE()
        self.actions: list[int] = []

    def get_action_meanings(self) -> list[str]:
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]

    def _obs(self) -> np.ndarray:
        return np.full((4, 8, 8), 10 * self.ale.left + self.t, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        FakeAtari.resets += 1
        self.ale.left, self.t, self.fired = LIVES, 0, False
        return self._obs(), {}

    def step(self, action):
        self.actions.append(int(action))
        if not self.fired:
            self.fired = int(action) == 1
            return self._obs(), 0.0, False, False, {}
        self.t += 1
        if self.t == LIFE_STEPS:
            self.ale.left, self.t, self.fired = self.ale.left - 1, 0, False
        return self._obs(), REWARD, self.ale.left == 0, False, {}


if "RlpgTestFakeAtari-v0" not in gym.envs.registry:
    gym.register("RlpgTestFakeAtari-v0", entry_point=FakeAtari)

# one game: each life takes FIRE (scoring 0), then action 2 (the first of 5 rewarded steps), then 4 agent steps; the
# game's score counts every step, the learner's episodes are lives
GAME_RETURN = LIVES * LIFE_STEPS * REWARD


def sub_env(env, i: int = 0) -> FakeAtari:
    """The i-th FakeAtari behind rlpg's RecordEpisodeStatistics -> GymVecEnv -> SyncVectorEnv."""
    return env.env.env.envs[i].unwrapped


def fake_env(training: bool, num_envs: int = 2) -> RecordEpisodeStatistics:
    return RecordEpisodeStatistics(GymVecEnv("RlpgTestFakeAtari-v0", num_envs, wrappers=atari.game_wrappers(training),
                                             episode_stats=True))


def play(env, steps: int, action: int = 0):
    """Step with a constant action; returns the per-step rewards, terminations and the finished games' returns."""
    env.reset(seed=0)
    rewards, terms, games = [], [], []
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(torch.full((env.num_envs,), action))
        rewards.append(reward[0].item())
        terms.append(bool(terminated[0]))
        if info["episode_done"][0]:
            games.append((info["episode_return"][0].item(), int(info["episode_length"][0])))
    return rewards, terms, games


def test_training_env_ends_episodes_at_lost_lives_resets_only_at_game_over_and_clips_rewards():
    env = fake_env(training=True)
    resets = FakeAtari.resets
    rewards, terms, games = play(env, steps=3 * LIVES * (LIFE_STEPS - 1))
    # every life: FIRE and action 2 on reset score 3 (action 2's step, dropped at the reset), then 4 steps of 3 each
    # clipped to 1, the last of which loses the life: a termination for the learner
    assert set(rewards) == {1.0}, rewards
    assert terms[: 2 * (LIFE_STEPS - 1)] == ([False] * 3 + [True]) * 2
    assert sum(terms) == len(terms) // (LIFE_STEPS - 1)
    # the game goes on after a lost life: per env one real reset at the start and one per game over (3 games)
    assert FakeAtari.resets - resets == 2 * (1 + 3)
    # whole games with raw rewards, reported once per game (not per life), and their lengths in steps: FIRE, action 2
    # and 4 agent steps a life, plus EpisodicLife's no-op after each lost life
    assert [g[0] for g in games] == [GAME_RETURN] * 3
    assert games[0][1] == LIVES * (LIFE_STEPS + 1) + LIVES - 1
    # the no-op that continues the game, then FIRE (and action 2) start every life, as SB3's EpisodicLifeEnv and
    # FireResetEnv do
    assert sub_env(env).actions[:13] == [1, 2, 0, 0, 0, 0] + [0, 1, 2, 0, 0, 0, 0]


def test_eval_env_plays_the_full_game_with_raw_rewards_and_fires_after_a_lost_life():
    env = fake_env(training=False)
    rewards, terms, games = play(env, steps=LIVES * (LIFE_STEPS - 1) + 1)
    assert set(rewards) == {REWARD, 2 * REWARD}  # raw; the step that loses a life adds the next life's action 2
    assert terms == [False] * (LIVES * (LIFE_STEPS - 1) - 1) + [True, False]  # one episode per game
    assert [g[0] for g in games] == [GAME_RETURN]
    assert games[0][1] == LIVES * (LIFE_STEPS + 1)
    assert sub_env(env).actions[:12] == [1, 2, 0, 0, 0, 0] * 2  # FIRE right after the lost life, within the step


def test_rollout_logs_true_game_scores_and_stores_uint8_frames():
    env = fake_env(training=True, num_envs=3)
    policy = ActorCritic(env.single_observation_space, env.single_action_space)
    rollout = Collector(env, policy, num_steps=60).collect()
    assert rollout.obs.dtype == torch.uint8 and rollout.obs.shape == (60, 3, 4, 8, 8)
    assert rollout.rewards.abs().max() <= 1  # the learner's rewards are clipped ...
    count = int(rollout.episode_count)
    assert count >= 3 and rollout.terminated.sum() > count  # ... its episodes are lives, the logged ones games
    assert rollout.episode_return_sum.item() == pytest.approx(count * GAME_RETURN)
    # evaluation counts games too, with raw rewards (a policy that never fires still gets FIRE at every life start)
    returns = evaluate(fake_env(training=False), policy, episodes=2, seed=1)
    assert returns.tolist() == [GAME_RETURN, GAME_RETURN]


def test_episodic_life_restarts_the_game_when_reset_with_a_seed():
    env = fake_env(training=True, num_envs=1)
    play(env, steps=LIFE_STEPS)  # one life lost, the game goes on
    resets = FakeAtari.resets
    env.reset(seed=3)  # a new run or a resumed one: a fresh, seeded game
    assert FakeAtari.resets == resets + 1
    assert sub_env(env).ale.lives() == LIVES


# ------------------------------------------------------------------------------------------------- the real ALE
@pytest.fixture(scope="module")
def ale():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")


def test_ale_observations_are_four_stacked_84x84_uint8_frames(ale):
    from rlpg.envs import make, spaces_of

    env = make("ALE/Breakout-v5", 2, training=True)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == torch.uint8
        assert env.single_observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        assert spaces_of("ALE/Breakout-v5") == (env.single_observation_space, env.single_action_space)
        assert env.max_episode_steps == 108_000 // 4  # ALE's own limit of a game, in agent steps
        sub = env.env.env.env.envs[0]
        chain = []
        while isinstance(sub, gym.Wrapper):
            chain.append(type(sub).__name__)
            sub = sub.env
        assert chain[:6] == ["TransformReward", "FireReset", "EpisodicLife", "RecordEpisodeStatistics",
                             "FrameStackObservation", "AtariPreprocessing"]
        assert sub.unwrapped._frameskip == 1  # AtariPreprocessing repeats actions itself
        for _ in range(50):
            obs, reward, *_ = env.step(torch.randint(0, 4, (2,)))
            assert obs.dtype == torch.uint8 and reward.abs().max() <= 1
    finally:
        env.close()
    eval_env = make("ALE/Breakout-v5", 1)
    try:
        names = []
        sub = eval_env.env.env.env.envs[0]
        while isinstance(sub, gym.Wrapper):
            names.append(type(sub).__name__)
            sub = sub.env
        assert "EpisodicLife" not in names and "TransformReward" not in names and "FireReset" in names
    finally:
        eval_env.close()


def test_ale_ids_take_cleanrls_ppo_atari_preset(ale):
    from rlpg.presets import preset_name
    from rlpg.runs import resolve_configs

    cfg, agent = resolve_configs("ppo", "ALE/Pong-v5", {})
    assert preset_name("ppo", "ALE/Pong-v5", "gymnasium") == "ppo/ALE/*"
    assert (cfg.num_envs, cfg.num_steps, cfg.total_steps) == (8, 128, 10_000_000)
    assert (agent.num_minibatches, agent.update_epochs, agent.learning_rate, agent.clip_coef) == (4, 4, 2.5e-4, 0.1)
    assert (agent.ent_coef, agent.vf_coef, agent.max_grad_norm, agent.anneal_lr) == (0.01, 0.5, 0.5, True)
    assert cfg.shared_encoder is True and cfg.normalize_obs is False and cfg.normalize_reward is False
    assert preset_name("trpo", "ALE/Pong-v5", "gymnasium") is None
