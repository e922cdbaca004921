"""Learning thresholds with each algorithm's preset (torch-native envs, one seed each; the notes and the
README give the 3-seed figures). Deterministic evaluation over 20 episodes."""

import pytest

import rlpg

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("algo", ["trpo", "npg"])
def test_trust_region_agents_learn_cartpole_in_100k_steps(tmp_path, algo):
    result = rlpg.train(algo, "CartPole-v1", seed=1, logdir=str(tmp_path), progress=False)
    assert result.global_step <= 100_352
    assert result.eval_mean_return >= 475, result.eval_mean_return


def test_reinforce_learns_cartpole_in_500k_steps(tmp_path):
    result = rlpg.train("reinforce", "CartPole-v1", seed=1, logdir=str(tmp_path), progress=False)
    assert result.global_step <= 500_736
    assert result.eval_mean_return >= 475, result.eval_mean_return


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_pendulum_reaches_minus_250_in_500k_steps(tmp_path, algo):
    result = rlpg.train(algo, "Pendulum-v1", seed=1, logdir=str(tmp_path), progress=False, eval_interval=0)
    assert result.global_step <= 504_000
    assert result.eval_mean_return >= -250, result.eval_mean_return


@pytest.mark.parametrize("algo, steps", [("ppo", 60_000), ("trpo", 100_000)])
def test_seeds_trained_together_learn_cartpole_as_their_single_runs_do(tmp_path, algo, steps):
    """Four seeds in one process (rlpg train --seeds): every seed learns, and seed 1 scores what its single run
    scores (its numbers differ from the single run's only by float rounding)."""
    many = rlpg.train(algo, "CartPole-v1", seeds=[1, 2, 3, 4], logdir=str(tmp_path), progress=False)
    assert many.global_step <= steps + 1024
    assert min(many.eval_mean_returns) >= 475, many.eval_mean_returns
    one = rlpg.train(algo, "CartPole-v1", seed=1, logdir=str(tmp_path), progress=False)
    assert abs(many.eval_mean_returns[0] - one.eval_mean_return) <= 25, (many.eval_mean_returns, one.eval_mean_return)
