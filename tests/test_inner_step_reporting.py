"""The inner steps as the sampler takes them and as the log reports them, against a task-by-task reference."""

import pytest
import torch

from metarl.episodes import Episodes, masked_mean
from metarl.maml_trpo import MAMLTRPO, subsample_tasks
from metarl.policies import GaussianMLPPolicy

TASKS, T, E, OBS = 3, 4, 5, 3


def _policy():
    torch.manual_seed(0)
    return GaussianMLPPolicy(OBS, 2, hidden_sizes=(5,), activation="tanh", init_std=0.8)


def _params(policy):
    params = {k: v.double() for k, v in policy.init_params(torch.Generator().manual_seed(1)).items()}
    g = torch.Generator().manual_seed(2)
    return {k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}


def _episodes(algo, seed, tasks=TASKS):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(tasks, T, E, OBS, generator=g, dtype=torch.float64)
    actions = torch.randn(tasks, T, E, 2, generator=g, dtype=torch.float64)
    rewards = torch.randn(tasks, T, E, generator=g, dtype=torch.float64)
    mask = torch.ones(tasks, T, E, dtype=torch.float64)
    mask[0, 1:, 0] = 0  # episodes of different lengths: groups of episodes hold unequal shares of the steps
    mask[0, 2:, 1] = 0
    mask[1, 1:, 4] = 0
    return algo.process(Episodes(obs, actions, rewards, mask))


def _reference_inner_loss(algo, params, episodes, batched=False):
    """Each task's VPG loss -masked_mean(log pi(a|s) * A) over all its episodes, computed task by task [tasks]
    (``batched``: params with a task axis)."""
    out = []
    for i in range(episodes.num_tasks):
        p = {k: v[i] for k, v in params.items()} if batched else params
        logp = algo.policy.log_prob(p, episodes.observations[i], episodes.actions[i])
        out.append(-masked_mean(logp * episodes.advantages[i], episodes.mask[i]))
    return torch.stack(out)

def test_fisher_subsample_keeps_the_rounded_share_of_the_first_tasks():
    """Documented: the first max(1, round(fraction * tasks)) tasks."""
    algo = MAMLTRPO(_policy(), inner_lr=0.1)
    episodes = _episodes(algo, 3, tasks=3)
    for fraction, expected in [(0.66, 2), (0.9, 3), (0.5, 2), (0.1, 1), (1.0, 3)]:
        kept = subsample_tasks(episodes, fraction)
        assert kept.num_tasks == max(1, round(fraction * 3)) == expected, fraction
        assert torch.equal(kept.observations, episodes.observations[:expected])


@pytest.mark.parametrize("first_order", [False, True])
def test_sampling_step_uses_the_learning_rate_it_is_given(first_order):
    """The sampler's inner step (a later step at inner_lr * later_lr_scale) is theta - lr * grad at *that* lr."""
    policy = _policy()
    algo = MAMLTRPO(policy, inner_lr=0.5, first_order=first_order)
    params = _params(policy)
    episodes = _episodes(algo, 4)
    batched = {k: v.unsqueeze(0).expand(TASKS, *v.shape) for k, v in params.items()}
    adapted, _ = algo.sampling_step(batched, episodes, 0.2)
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    for i in range(TASKS):
        loss = _reference_inner_loss(algo, leaf, episodes)[i]
        grads = torch.autograd.grad(loss, list(leaf.values()))
        for (k, p), g in zip(params.items(), grads):
            torch.testing.assert_close(adapted[k][i], p - 0.2 * g)


def test_reported_inner_losses_are_the_masked_means_over_all_episodes_when_grouped():
    """With chunk_samples splitting each task's episodes into groups, the inner loss is still the task's mean."""
    policy = _policy()
    algo = MAMLTRPO(policy, inner_lr=0.5, chunk_samples=TASKS * T * 2)  # groups of 2, 2 and 1 episodes
    params = _params(policy)
    episodes = _episodes(algo, 5)
    assert len(algo.chunks(episodes)) == 3
    reference = _reference_inner_loss(algo, params, episodes)
    _, loss = algo.inner_gradient(params, episodes)  # first order
    torch.testing.assert_close(loss, reference)
    batched = {k: v.unsqueeze(0).expand(TASKS, *v.shape) for k, v in params.items()}
    torch.testing.assert_close(algo.inner_curvature(batched, episodes).loss, reference)  # second order


def test_the_logged_inner_loss_is_the_first_inner_loss_at_theta():
    """info['inner_loss'] is the mean over tasks of the inner loss at theta on the first train batch."""
    policy = _policy()
    algo = MAMLTRPO(policy, inner_lr=0.5, cg_iters=3)
    params = _params(policy)
    train = [_episodes(algo, 6), _episodes(algo, 7)]
    valid = _episodes(algo, 8)
    _, info = algo.step(params, train, valid)
    expected = _reference_inner_loss(algo, params, train[0]).mean().item()
    later = _reference_inner_loss(algo, algo.adapt(params, train[:1], first_order=True), train[1], batched=True).mean().item()
    assert abs(expected - later) > 1e-3  # the check can fail
    assert info["inner_loss"] == pytest.approx(expected, rel=1e-9, abs=1e-12)

def test_gradient_step_is_second_order_by_default():
    """Without first_order the step stays in the graph: d theta'/d theta = 1 - lr * f''(theta)."""
    from metarl.adaptation import gradient_step

    theta = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    new = gradient_step(lambda p: (p["w"] ** 3).sum(), {"w": theta}, 0.1)
    (d,) = torch.autograd.grad(new["w"].sum(), theta)
    torch.testing.assert_close(d, 1 - 0.1 * 6 * theta.detach())
