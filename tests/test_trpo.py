"""Conjugate gradient and the backtracking line search of TRPO."""

import math

import torch

from metarl.trpo import backtracking_line_search, conjugate_gradient, flatten, unflatten


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = q @ q.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x, ax = conjugate_gradient(lambda v: a @ v, b, iters=10)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))
    torch.testing.assert_close(ax, a @ x)
    # Fewer iterations than dimensions still reduce the residual.
    x2, ax2 = conjugate_gradient(lambda v: a @ v, b, iters=2)
    assert (a @ x2 - b).norm() < 0.9 * b.norm()
    torch.testing.assert_close(ax2, a @ x2)
    # cg_iters counts Fisher-vector products exactly (each costs a pass over the batch)
    calls = []
    conjugate_gradient(lambda v: calls.append(1) or a @ v, b, iters=3)
    assert len(calls) == 3
    # a small gradient (late in training) is solved as well, not cut short by an absolute tolerance
    x, _ = conjugate_gradient(lambda v: a @ v, 1e-4 * b, iters=10)
    torch.testing.assert_close(x, torch.linalg.solve(a, 1e-4 * b))


def test_flatten_unflatten_round_trip():
    d = {"w": torch.arange(6.0).view(2, 3), "b": torch.tensor([7.0]), "s": torch.zeros(2, 1, 2)}
    flat = flatten(d)
    assert flat.shape == (11,)
    back = unflatten(flat, d)
    assert list(back) == list(d) and all(torch.equal(back[k], d[k]) for k in d)


def _quadratic(full_step: float, kl_scale: float = 1.0):
    """Loss (x - 1)^2 - 1 and KL = kl_scale * x^2 at x = fraction * full_step, starting from x = 0 (loss 0)."""
    calls = []

    def evaluate(fraction):
        x = fraction * full_step
        calls.append(fraction)
        return (x - 1.0) ** 2 - 1.0, kl_scale * x * x

    return evaluate, calls


def test_line_search_accepts_first_improving_step_within_kl():
    evaluate, calls = _quadratic(full_step=1.5)
    result = backtracking_line_search(evaluate, loss_before=0.0, max_kl=10.0, ratio=0.8, max_steps=15)
    assert result.accepted and result.fraction == 1.0 and result.steps == 1 and not result.nan
    assert math.isclose(result.loss, 0.25 - 1.0)
    # A step too long for the KL bound is shortened until KL = x^2 <= 0.5.
    evaluate, calls = _quadratic(full_step=1.5)
    result = backtracking_line_search(evaluate, 0.0, max_kl=0.5, ratio=0.8, max_steps=15)
    assert result.accepted and (result.fraction * 1.5) ** 2 <= 0.5 < (result.fraction / 0.8 * 1.5) ** 2
    assert result.steps == len(calls) == 5


def test_line_search_rejects_loss_increase_and_kl_violation():
    evaluate, calls = _quadratic(full_step=-1.0)  # moving away from the minimum raises the loss
    result = backtracking_line_search(evaluate, 0.0, max_kl=10.0, ratio=0.8, max_steps=15)
    assert not result.accepted and result.fraction == 0.0 and result.loss == 0.0 and len(calls) == 15
    evaluate, _ = _quadratic(full_step=1.0, kl_scale=1e9)  # improves but every candidate breaks the bound
    result = backtracking_line_search(evaluate, 0.0, max_kl=0.01, ratio=0.8, max_steps=15)
    assert not result.accepted and result.steps == 15
    # the bound is inclusive: a step whose KL equals max_kl is accepted
    assert backtracking_line_search(lambda f: (-1.0, 0.5), 0.0, max_kl=0.5).accepted


def test_line_search_rejects_and_reports_nan():
    calls = []

    def evaluate(fraction):
        calls.append(fraction)
        return (float("nan"), 0.0) if fraction == 0.5 else (1.0 - fraction, 0.0)  # fraction 1 is no improvement

    result = backtracking_line_search(evaluate, 0.0, max_kl=0.01, ratio=0.5, max_steps=5)
    assert not result.accepted and result.nan and result.fraction == 0.0 and calls == [1.0, 0.5]
    assert result.loss == 0.0 and result.kl == 0.0  # the values before the step, as for any rejection
    result = backtracking_line_search(lambda f: (-1.0, float("nan")), 0.0, 0.01, 0.5, 3)
    assert not result.accepted and result.nan and result.steps == 1
