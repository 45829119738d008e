"""Policies: log-probabilities against torch.distributions, batched act against per-task calls."""

import math

import pytest
import torch

from metarl.errors import UserError
from metarl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, make_policy


def _stack(params_list):
    return {k: torch.stack([p[k] for p in params_list]) for k in params_list[0]}


def test_gaussian_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    policy = GaussianMLPPolicy(5, 3, hidden_sizes=(8, 8), activation="tanh", init_std=0.7)
    params = policy.init_params(g)
    params["log_std"] = torch.tensor([-0.3, 0.1, 0.4])
    obs, actions = torch.randn(4, 6, 5, generator=g), torch.randn(4, 6, 3, generator=g)
    mean, log_std = policy.dist_params(params, obs)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(policy.log_prob(params, obs, actions), expected)
    assert policy.log_prob(params, obs, actions).shape == (4, 6)
    assert torch.allclose(policy.init_params(g)["log_std"], torch.full((3,), math.log(0.7)))


def test_gaussian_kl_and_fisher_match_definitions():
    g = torch.Generator().manual_seed(1)
    old = (torch.randn(7, 2, generator=g), 0.3 * torch.randn(7, 2, generator=g))
    new = (torch.randn(7, 2, generator=g), 0.3 * torch.randn(7, 2, generator=g))
    dist = lambda d: torch.distributions.Independent(torch.distributions.Normal(d[0], d[1].exp()), 1)
    torch.testing.assert_close(GaussianMLPPolicy.kl(old, new), torch.distributions.kl_divergence(dist(old), dist(new)))
    # Fisher = Hessian of KL(old || new) in new's parameters at new = old.
    x0 = torch.cat([old[0][0], old[1][0]]).double()
    hess = torch.autograd.functional.hessian(
        lambda x: GaussianMLPPolicy.kl((x0[:2][None], x0[2:][None]), (x[:2][None], x[2:][None])).sum(), x0
    )
    u = torch.randn(4, dtype=torch.float64, generator=g)
    fu = GaussianMLPPolicy.fisher_product((x0[:2], x0[2:]), (u[:2], u[2:]))
    torch.testing.assert_close(torch.cat(fu), hess @ u)


def test_categorical_log_prob_kl_fisher_match_definitions():
    g = torch.Generator().manual_seed(2)
    policy = CategoricalMLPPolicy(4, 5, hidden_sizes=(16,))
    params = policy.init_params(g)
    obs = torch.randn(3, 10, 4, generator=g)
    actions = torch.randint(0, 5, (3, 10), generator=g)
    logits = policy.mlp(params, obs)
    expected = torch.distributions.Categorical(logits=logits).log_prob(actions)
    torch.testing.assert_close(policy.log_prob(params, obs, actions), expected)
    lp0 = torch.log_softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), -1)
    lp1 = torch.log_softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), -1)
    cat = lambda lp: torch.distributions.Categorical(logits=lp)
    torch.testing.assert_close(CategoricalMLPPolicy.kl((lp0,), (lp1,)), torch.distributions.kl_divergence(cat(lp0), cat(lp1)))
    z0 = lp0[0]
    hess = torch.autograd.functional.hessian(
        lambda z: CategoricalMLPPolicy.kl((z0,), (torch.log_softmax(z, -1),)), z0.clone()
    )
    u = torch.randn(5, dtype=torch.float64, generator=g)
    torch.testing.assert_close(CategoricalMLPPolicy.fisher_product((z0,), (u,))[0], hess @ u)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_act_with_task_batched_params_equals_per_task_calls(kind):
    g = torch.Generator().manual_seed(3)
    policy = make_policy(kind, 6, 4, hidden_sizes=(32, 32), activation="relu", init_std=0.5)
    per_task = [policy.init_params(g) for _ in range(3)]
    batched = _stack(per_task)
    obs = torch.randn(3, 5, 6, generator=g)
    det = policy.act(batched, obs, deterministic=True)
    for i, p in enumerate(per_task):
        single = policy.act(_stack([p]), obs[i : i + 1], deterministic=True)[0]
        torch.testing.assert_close(det[i], single)
        expected = policy.dist_params(p, obs[i])[0]  # the mean, or the log-probabilities
        torch.testing.assert_close(det[i], expected if kind == "gaussian" else expected.argmax(-1))
    # one parameter set broadcast to every task (a stride-0 view, as the sampler passes it)
    shared = {k: v.unsqueeze(0).expand(3, *v.shape) for k, v in per_task[0].items()}
    torch.testing.assert_close(policy.act(shared, obs, deterministic=True),
                               torch.stack([policy.act(_stack([per_task[0]]), obs[i : i + 1], deterministic=True)[0]
                                            for i in range(3)]))
    a1 = policy.act(batched, obs, generator=torch.Generator().manual_seed(9))
    a2 = policy.act(batched, obs, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a1, a2)
    if kind == "gaussian":
        assert a1.shape == (3, 5, 4) and not torch.equal(a1, det)
    else:
        assert a1.shape == (3, 5) and a1.dtype == torch.int64


def test_gaussian_act_samples_have_policy_std():
    policy = GaussianMLPPolicy(2, 1, hidden_sizes=(4,), init_std=0.5)
    params = _stack([policy.init_params(torch.Generator().manual_seed(0))])
    obs = torch.zeros(1, 20000, 2)
    a = policy.act(params, obs, generator=torch.Generator().manual_seed(1))
    assert abs(a.std().item() - 0.5) < 0.01


def test_bad_policy_settings_are_user_errors():
    with pytest.raises(UserError, match="activation"):
        GaussianMLPPolicy(3, 2, activation="swish")
    with pytest.raises(UserError, match="policy kind"):
        make_policy("beta", 3, 2)
    with pytest.raises(UserError, match="init_std"):
        GaussianMLPPolicy(3, 2, init_std=0.0)


def test_action_scale_is_a_change_of_units():
    """Scaling by s: mean and std scale by s, densities by 1/prod(s), sampled actions by s."""
    scale = torch.tensor([0.1, 2.0])
    unit = GaussianMLPPolicy(3, 2, hidden_sizes=(5,))
    scaled = GaussianMLPPolicy(3, 2, hidden_sizes=(5,), action_scale=scale)
    params = unit.init_params(torch.Generator().manual_seed(0))
    obs = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    (m1, ls1), (m2, ls2) = unit.dist_params(params, obs), scaled.dist_params(params, obs)
    torch.testing.assert_close(m2, m1 * scale)
    torch.testing.assert_close(ls2, ls1 + torch.log(scale))
    actions = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(scaled.log_prob(params, obs, actions * scale),
                               unit.log_prob(params, obs, actions) - torch.log(scale).sum())
    batched = {k: v.unsqueeze(0) for k, v in params.items()}
    a1 = unit.act(batched, obs[None], generator=torch.Generator().manual_seed(3))
    a2 = scaled.act(batched, obs[None], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a2, a1 * scale)


def test_weights_start_xavier_uniform_and_biases_zero():
    params = GaussianMLPPolicy(40, 10, hidden_sizes=(100,)).init_params(torch.Generator().manual_seed(0))
    for i, (fan_in, fan_out) in enumerate([(40, 100), (100, 10)]):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        weight = params[f"l{i}.weight"]
        assert bound * 0.95 < weight.abs().max() <= bound
        assert torch.all(params[f"l{i}.bias"] == 0)
