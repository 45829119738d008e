"""Hand-written inner-loss Hessian products against autograd's explicit Hessians on tiny policies."""

import pytest
import torch

from metarl.curvature import ACTIVATION_DERIVATIVES, InnerLossHessian, PolicyJacobian
from metarl.policies import ACTIVATIONS, CategoricalMLPPolicy, GaussianMLPPolicy
from metarl.trpo import flatten, unflatten

TASKS, N, OBS = 3, 7, 4


def _problem(kind: str, activation: str):
    g = torch.Generator().manual_seed(11)
    if kind == "gaussian":
        policy = GaussianMLPPolicy(OBS, 2, hidden_sizes=(5, 6), activation=activation, init_std=0.7, action_scale=[0.5, 2.0])
        actions = torch.randn(TASKS, N, 2, generator=g, dtype=torch.float64)
    else:
        policy = CategoricalMLPPolicy(OBS, 3, hidden_sizes=(5, 6), activation=activation)
        actions = torch.randint(0, 3, (TASKS, N), generator=g)
    # a different parameter set per task (as after an inner step), biases away from zero so ReLUs are mixed
    params = {k: (v.double() + 0.3 * torch.randn(TASKS, *v.shape, generator=g, dtype=torch.float64))
              for k, v in policy.init_params(g).items()}
    obs = torch.randn(TASKS, N, OBS, generator=g, dtype=torch.float64)
    weights = torch.randn(TASKS, N, generator=g, dtype=torch.float64)
    weights[:, -2:] = 0.0  # padding after an episode ended contributes nothing
    return policy, params, obs, actions, weights


@pytest.mark.parametrize("lvc", [False, True])
@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_inner_hessian_product_matches_the_explicit_hessian(kind, activation, lvc):
    policy, params, obs, actions, weights = _problem(kind, activation)
    product = InnerLossHessian(policy, params, obs, actions, weights, lvc=lvc)
    tangent = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
               for k, v in params.items()}
    got = product(tangent)
    assert list(got) == list(tangent)
    for i in range(TASKS):
        like = {k: v[i] for k, v in params.items()}

        fixed = policy.log_prob(like, obs[i], actions[i])  # LVC: the likelihood ratio's denominator, held at params

        def loss(flat):
            log_prob = policy.log_prob(unflatten(flat, like), obs[i], actions[i])
            return -(weights[i] * (torch.exp(log_prob - fixed) if lvc else log_prob)).sum()

        hessian = torch.autograd.functional.hessian(loss, flatten(like))
        expected = hessian @ flatten({k: v[i] for k, v in tangent.items()})
        torch.testing.assert_close(flatten({k: v[i] for k, v in got.items()}), expected, rtol=1e-9, atol=1e-11)


def test_lvc_adds_the_weighted_outer_product_of_the_scores():
    # H_lvc - H_vpg = -sum_n w_n g_n g_n^T with g_n the score of sample n: checked on one task's explicit scores
    policy, params, obs, actions, weights = _problem("gaussian", "tanh")
    tangent = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
               for k, v in params.items()}
    difference = flatten({k: v[0] for k, v in InnerLossHessian(policy, params, obs, actions, weights, lvc=True)(tangent).items()})
    difference -= flatten({k: v[0] for k, v in InnerLossHessian(policy, params, obs, actions, weights)(tangent).items()})
    like = {k: v[0] for k, v in params.items()}
    scores = torch.autograd.functional.jacobian(lambda f: policy.log_prob(unflatten(f, like), obs[0], actions[0]), flatten(like))
    expected = -scores.T @ (weights[0] * (scores @ flatten({k: v[0] for k, v in tangent.items()})))
    torch.testing.assert_close(difference, expected, rtol=1e-9, atol=1e-11)
    assert expected.abs().max() > 1e-2


def test_tanh_network_curvature_is_included():
    # dropping activation'' (a Gauss-Newton-like shortcut) changes the product: the test above would catch it
    policy, params, obs, actions, weights = _problem("gaussian", "tanh")
    product = InnerLossHessian(policy, params, obs, actions, weights)
    tangent = {k: torch.ones_like(v) for k, v in params.items()}
    full = flatten(product(tangent))
    product.d2 = [None] * len(product.d2)
    assert (flatten(product(tangent)) - full).abs().max() > 1e-3


def test_every_activation_has_its_derivatives():
    assert set(ACTIVATION_DERIVATIVES) == set(ACTIVATIONS)
    z = torch.linspace(-2, 2, 9, dtype=torch.float64, requires_grad=True)
    for name, derivatives in ACTIVATION_DERIVATIVES.items():
        h, d1, d2 = derivatives(z)
        torch.testing.assert_close(h, ACTIVATIONS[name](z))
        (auto_d1,) = torch.autograd.grad(h.sum(), z, create_graph=True)
        torch.testing.assert_close(d1, auto_d1)
        (auto_d2,) = torch.autograd.grad(auto_d1.sum(), z)
        torch.testing.assert_close(torch.zeros_like(z) if d2 is None else d2, auto_d2)


@pytest.mark.parametrize("lvc", [False, True])
@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_gradient_and_loss_are_the_inner_loss_and_its_gradient(kind, lvc):
    # LVC changes only the curvature: the step and the reported loss are the VPG ones
    policy, params, obs, actions, weights = _problem(kind, "relu")
    product = InnerLossHessian(policy, params, obs, actions, weights, lvc=lvc)
    for i in range(TASKS):
        p = {k: v[i].clone().requires_grad_(True) for k, v in params.items()}
        loss = -(weights[i] * policy.log_prob(p, obs[i], actions[i])).sum()
        grads = torch.autograd.grad(loss, list(p.values()))
        torch.testing.assert_close(product.loss[i], loss.detach())
        for (k, g) in zip(p, grads):
            torch.testing.assert_close(product.gradient[k][i], g)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_policy_jacobian_products_match_the_explicit_jacobian(kind, activation):
    policy, params, obs, _, _ = _problem(kind, activation)
    jacobian = PolicyJacobian(policy, params, obs)
    g = torch.Generator().manual_seed(4)
    tangent = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in params.items()}
    cotangent = tuple(torch.randn(d.shape, generator=g, dtype=torch.float64) for d in jacobian.dist)
    forward, backward = jacobian.jvp(tangent), jacobian.vjp(cotangent)
    assert list(backward) == list(params)
    for i in range(TASKS):
        like = {k: v[i] for k, v in params.items()}

        def dist(flat):
            return torch.cat([d.reshape(-1) for d in policy.dist_params(unflatten(flat, like), obs[i])])

        explicit = torch.autograd.functional.jacobian(dist, flatten(like))  # [outputs, params]
        torch.testing.assert_close(torch.cat([d[i].reshape(-1) for d in jacobian.dist]), dist(flatten(like)))
        torch.testing.assert_close(torch.cat([t[i].reshape(-1) for t in forward]),
                                   explicit @ flatten({k: v[i] for k, v in tangent.items()}))
        torch.testing.assert_close(flatten({k: v[i] for k, v in backward.items()}),
                                   explicit.T @ torch.cat([c[i].reshape(-1) for c in cotangent]))
