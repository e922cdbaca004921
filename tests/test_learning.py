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
