"""Linear feature baseline: exact recovery of a linear value, mask handling, regularisation fallback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarl.baselines import LinearFeatureBaseline, baseline_features


def test_recovers_exact_linear_function_of_features_per_task():
    g = torch.Generator().manual_seed(0)
    tasks, T, E, d = 3, 30, 5, 4
    obs = torch.randn(tasks, T, E, d, generator=g, dtype=torch.float64)
    mask = torch.ones(tasks, T, E, dtype=torch.float64)
    mask[:, 20:, 1] = 0  # one episode per task ends early
    true_w = torch.randn(tasks, 2 * d + 4, generator=g, dtype=torch.float64)
    returns = torch.einsum("ktef,kf->kte", baseline_features(obs, mask), true_w)
    baseline = LinearFeatureBaseline(reg_coeff=1e-12).fit(obs, returns, mask)
    torch.testing.assert_close(baseline.weights, true_w, rtol=1e-6, atol=1e-6)
    values = baseline.predict(obs, mask)
    torch.testing.assert_close(values, returns, rtol=1e-6, atol=1e-6)
    assert torch.all(values[mask == 0] == 0)


def test_masked_steps_do_not_affect_fit():
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(2, 12, 3, 2, generator=g)
    returns = torch.randn(2, 12, 3, generator=g)
    mask = torch.ones(2, 12, 3)
    mask[:, 7:, 0] = 0
    garbage = torch.where(mask.bool(), 0.0, 1e3)
    a = LinearFeatureBaseline().fit(obs, returns, mask).weights
    b = LinearFeatureBaseline().fit(obs + garbage[..., None], returns + garbage, mask).weights
    torch.testing.assert_close(a, b)


def test_zero_columns_are_handled_by_the_ridge():
    # Constant zero observations make the o and o^2 columns zero: X^T X alone is singular.
    obs = torch.zeros(2, 10, 2, 3)
    returns = torch.arange(10.0).view(1, 10, 1).expand(2, 10, 2)
    baseline = LinearFeatureBaseline().fit(obs, returns, torch.ones(2, 10, 2))
    assert torch.isfinite(baseline.weights).all()
    torch.testing.assert_close(baseline.predict(obs, torch.ones(2, 10, 2)), returns, rtol=0, atol=0.02)


def test_non_finite_data_fails_naming_the_task():
    obs = torch.randn(3, 10, 2, 3, generator=torch.Generator().manual_seed(2))
    obs[1, 4, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"tasks \[1\]"):
        LinearFeatureBaseline().fit(obs, torch.randn(3, 10, 2), torch.ones(3, 10, 2))


def test_observations_can_be_clipped_as_in_rllab():
    # A running cheetah's joint velocities exceed 10; rllab's baseline (the MAML paper's) clips at 10.
    g = torch.Generator().manual_seed(3)
    obs = 15.0 * torch.randn(2, 20, 4, 3, generator=g)
    assert (obs.abs() > 10).any()
    returns = torch.randn(2, 20, 4, generator=g)
    mask = torch.ones(2, 20, 4)
    clipped = LinearFeatureBaseline(obs_clip=10.0).fit(obs, returns, mask)
    torch.testing.assert_close(clipped.weights, LinearFeatureBaseline().fit(obs.clamp(-10, 10), returns, mask).weights)
    torch.testing.assert_close(clipped.predict(obs, mask), clipped.predict(obs.clamp(-10, 10), mask))
    unclipped = LinearFeatureBaseline().fit(obs, returns, mask)  # the default
    assert not torch.allclose(unclipped.predict(obs, mask), clipped.predict(obs, mask))
    with pytest.raises(ValueError, match="obs_clip"):
        LinearFeatureBaseline(obs_clip=0.0)


def test_fit_returns_with_two_threads_when_features_stay_zero():
    """rllab's ant observes contact forces that stay zero for a whole batch; oneMKL's batched LU never returned on
    such systems with two threads. In a subprocess (a hang must fail, not stall the suite): the fit ends, prints no
    MKL error and solves every task's ridge system."""
    script = """
import torch
from metarl.baselines import LinearFeatureBaseline, baseline_features
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
obs = torch.randn(4, 200, 2, 125, generator=g, dtype=torch.float64)
obs[..., 29:113:2] = 0.0
returns = torch.randn(4, 200, 2, generator=g, dtype=torch.float64)
mask = torch.ones(4, 200, 2)
weights = LinearFeatureBaseline().fit(obs, returns, mask).weights
x = baseline_features(obs, mask).flatten(1, 2)
system = x.mT @ x + 1e-5 * torch.eye(x.shape[-1], dtype=torch.float64)
residual = system @ weights.unsqueeze(-1) - x.mT @ returns.reshape(4, -1, 1)
print(float(residual.abs().max() / (x.mT @ returns.reshape(4, -1, 1)).abs().max()))
"""
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(repo)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "MKL ERROR" not in result.stdout + result.stderr
    assert float(result.stdout) < 1e-8


def test_a_zero_ridge_term_is_refused_since_raising_it_tenfold_would_leave_it_zero():
    with pytest.raises(ValueError, match="reg_coeff must be a positive number, got 0"):
        LinearFeatureBaseline(reg_coeff=0)
