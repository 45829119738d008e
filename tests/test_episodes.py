"""Returns and GAE: definitions on small cases, and no leakage from steps after termination."""

import pytest
import torch

from metarl.episodes import Episodes, discounted_returns, gae, masked_mean, normalize_per_task


def _mask_with_lengths(lengths, T):
    lengths = torch.as_tensor(lengths)  # [tasks, E]
    return (torch.arange(T)[None, :, None] < lengths[:, None, :]).float()


def test_discounted_returns_by_definition():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(2, 6, 3, generator=g)
    mask = _mask_with_lengths([[6, 4, 1], [2, 6, 5]], 6)
    out = discounted_returns(rewards, mask, 0.9)
    for k in range(2):
        for e in range(3):
            n = int(mask[k, :, e].sum())
            for t in range(6):
                want = sum(0.9 ** (j - t) * rewards[k, j, e].item() for j in range(t, n)) if t < n else 0.0
                assert out[k, t, e].item() == pytest.approx(want, abs=1e-5)


def test_gae_lambda_one_zero_baseline_equals_returns():
    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(3, 8, 4, generator=g)
    mask = _mask_with_lengths([[8, 3, 5, 1]] * 3, 8)
    adv = gae(rewards, torch.zeros_like(rewards), mask, 0.95, 1.0)
    torch.testing.assert_close(adv, discounted_returns(rewards, mask, 0.95))


def test_gae_lambda_zero_is_td_error_and_lambda_one_is_returns_minus_values():
    g = torch.Generator().manual_seed(2)
    rewards, values = torch.randn(1, 5, 2, generator=g), torch.randn(1, 5, 2, generator=g)
    mask = _mask_with_lengths([[5, 3]], 5)
    td = gae(rewards, values, mask, 0.9, 0.0)
    v = values * mask
    v_next = torch.cat([v[:, 1:], torch.zeros(1, 1, 2)], 1)
    torch.testing.assert_close(td, (rewards * mask + 0.9 * v_next - v) * mask)
    full = gae(rewards, values, mask, 0.9, 1.0)
    torch.testing.assert_close(full, (discounted_returns(rewards, mask, 0.9) - values) * mask)


def test_steps_after_termination_do_not_leak():
    g = torch.Generator().manual_seed(3)
    rewards, values = torch.randn(2, 10, 3, generator=g), torch.randn(2, 10, 3, generator=g)
    mask = _mask_with_lengths([[10, 4, 7], [1, 10, 2]], 10)
    garbage = torch.where(mask.bool(), 0.0, 1e6)
    for fn in (lambda r, v: discounted_returns(r, mask, 0.99), lambda r, v: gae(r, v, mask, 0.99, 0.95)):
        clean = fn(rewards, values)
        torch.testing.assert_close(fn(rewards + garbage, values + garbage), clean)
        assert torch.all(clean[mask == 0] == 0)
    x = torch.randn(2, 10, 3, generator=g)
    torch.testing.assert_close(normalize_per_task(x + garbage, mask), normalize_per_task(x, mask))


def test_normalize_per_task_gives_zero_mean_unit_std_on_taken_steps():
    g = torch.Generator().manual_seed(4)
    x = 5 + 3 * torch.randn(3, 20, 4, generator=g, dtype=torch.float64)
    x[1] *= 10
    mask = _mask_with_lengths([[20, 3, 9, 14]] * 3, 20).double()
    y = normalize_per_task(x, mask)
    torch.testing.assert_close(masked_mean(y, mask), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(masked_mean(y.pow(2), mask), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-6)


def test_episodes_checks_shapes():
    obs, act, r = torch.zeros(2, 5, 3, 4), torch.zeros(2, 5, 3, 1), torch.zeros(2, 5, 3)
    ep = Episodes(obs, act, r, torch.ones(2, 5, 3))
    assert (ep.num_tasks, ep.horizon, ep.episodes_per_task) == (2, 5, 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        Episodes(obs, act, r, torch.ones(2, 4, 3))
    with pytest.raises(ValueError, match="actions"):
        Episodes(obs, torch.zeros(2, 5, 1), r, torch.ones(2, 5, 3))
