import pytest
import torch

from rlpg.advantage import discounted_returns, explained_variance, gae, normalize


def col(*xs, dtype=torch.float32):
    """A [T, 1] column."""
    return torch.tensor(xs, dtype=dtype).unsqueeze(1)


def test_gae_terminated_does_not_bootstrap():
    # one env, 3 steps, terminates at t=2; gamma=0.9, lambda=0.8
    r, v = col(1.0, 2.0, 3.0), col(0.5, 1.0, 1.5)
    nv = col(1.0, 1.5, 7.0)  # V(final_obs)=7 at the termination must be ignored
    term = col(False, False, True, dtype=torch.bool)
    adv, ret = gae(r, v, nv, term, term, gamma=0.9, gae_lambda=0.8)
    d2 = 3.0 - 1.5
    d1 = 2.0 + 0.9 * 1.5 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    torch.testing.assert_close(adv, col(a0, a1, a2))
    torch.testing.assert_close(ret, col(a0 + 0.5, a1 + 1.0, a2 + 1.5))


def test_gae_truncated_bootstraps_from_final_obs_value_and_cuts_recursion():
    # truncation at t=1 (time limit): bootstrap from V(final_obs)=4, and step 0's advantage must not see step 2
    r, v = col(1.0, 1.0, 1.0), col(2.0, 3.0, 5.0)
    nv = col(3.0, 4.0, 6.0)  # nv[1] = V(final_obs) of the truncated episode; nv[2] = V(s_T)
    term = col(False, False, False, dtype=torch.bool)
    done = col(False, True, False, dtype=torch.bool)
    gamma, lam = 0.99, 0.95
    adv, _ = gae(r, v, nv, term, done, gamma, lam)
    d = [1 + gamma * 3 - 2, 1 + gamma * 4 - 3, 1 + gamma * 6 - 5]
    a2 = d[2]
    a1 = d[1]  # recursion cut at the boundary
    a0 = d[0] + gamma * lam * a1
    torch.testing.assert_close(adv, col(a0, a1, a2))


def test_gae_truncation_vs_termination_differ_only_by_bootstrap():
    r, v, nv = col(1.0), col(0.0), col(10.0)
    done = col(True, dtype=torch.bool)
    adv_trunc, _ = gae(r, v, nv, col(False, dtype=torch.bool), done, 0.5, 0.9)
    adv_term, _ = gae(r, v, nv, done, done, 0.5, 0.9)
    assert adv_trunc.item() == pytest.approx(1 + 0.5 * 10)
    assert adv_term.item() == pytest.approx(1.0)


def test_gae_constant_value_function_matches_discounted_rewards():
    # with V = 0 and lambda = 1, GAE is the discounted reward-to-go (SB3's exact-GAE test idea)
    T, N = 6, 3
    r = torch.rand(T, N)
    z = torch.zeros(T, N)
    f = torch.zeros(T, N, dtype=torch.bool)
    adv, _ = gae(r, z, z, f, f, gamma=0.9, gae_lambda=1.0)
    expected = torch.zeros(T, N)
    running = torch.zeros(N)
    for t in reversed(range(T)):
        running = r[t] + 0.9 * running
        expected[t] = running
    torch.testing.assert_close(adv, expected)


def test_gae_rejects_mismatched_shapes():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="next_values has shape"):
        gae(x, x, torch.zeros(4, 3), x.bool(), x.bool(), 0.99, 0.95)


def test_discounted_returns_across_boundaries():
    r = col(1.0, 1.0, 1.0, 1.0, 1.0)
    term = col(False, True, False, False, False, dtype=torch.bool)
    trunc = col(False, False, False, True, False, dtype=torch.bool)
    nv = col(0.0, 99.0, 0.0, 10.0, 20.0)
    g = discounted_returns(r, term, trunc, nv, gamma=0.5)
    # episode A: t0,t1 terminated; episode B: t2,t3 truncated -> bootstrap 10; t4 continues -> V(s_T)=20
    torch.testing.assert_close(g, col(1 + 0.5 * 1, 1.0, 1 + 0.5 * (1 + 0.5 * 10), 1 + 0.5 * 10, 1 + 0.5 * 20))
    g0 = discounted_returns(r, term, trunc, None, gamma=0.5)
    torch.testing.assert_close(g0, col(1.5, 1.0, 1.5, 1.0, 1.0))


def test_normalize_is_safe_for_a_batch_of_one():
    out = normalize(torch.tensor([3.0]))
    assert out.item() == 3.0  # left as it is, not centred to 0 (the actor would never move)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = normalize(x)
    assert y.mean().abs() < 1e-6 and (y.std() - 1).abs() < 1e-4


def test_explained_variance():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(y, 2.5), y).item() == pytest.approx(0.0)


def test_rollout_gae_reads_the_rollout_fields():
    from rlpg.advantage import rollout_gae
    from rlpg.types import Rollout

    T, N = 4, 2
    g = torch.Generator().manual_seed(0)
    r, v, nv = (torch.rand(T, N, generator=g) for _ in range(3))
    term = torch.tensor([[False, False], [True, False], [False, False], [False, True]])
    trunc = torch.tensor([[False, True], [False, False], [False, False], [False, False]])
    z = torch.zeros(())
    rollout = Rollout(torch.zeros(T, N, 1), torch.zeros(T, N), torch.zeros(T, N), v, nv, r, term, trunc, z, z, z)
    adv, ret = rollout_gae(rollout, 0.9, 0.8)
    ref_adv, ref_ret = gae(r, v, nv, term, term | trunc, 0.9, 0.8)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)
