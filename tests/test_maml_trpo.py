"""MAML-TRPO: meta-gradients against finite differences, Fisher-vector products against the KL Hessian,
inner-step batching, and the accept / reject behaviour of one meta-update."""

import pytest
import torch
from torch.func import vmap

from metarl.baselines import LinearFeatureBaseline
from metarl.episodes import Episodes, discounted_returns, gae, masked_mean
from metarl.maml_trpo import MAMLTRPO, subsample_tasks
from metarl.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from metarl.trpo import flatten, unflatten

TASKS, T, E, OBS = 2, 4, 3, 3


def _episodes(algo, seed, kind="gaussian", dtype=torch.float64, tasks=TASKS, episodes=E):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(tasks, T, episodes, OBS, generator=g, dtype=dtype)
    if kind == "gaussian":
        actions = torch.randn(tasks, T, episodes, 2, generator=g, dtype=dtype)
    else:
        actions = torch.randint(0, 3, (tasks, T, episodes), generator=g)
    rewards = torch.randn(tasks, T, episodes, generator=g, dtype=dtype)
    mask = torch.ones(tasks, T, episodes, dtype=dtype)
    mask[0, 2:, 1] = 0  # an episode that terminated early
    mask[1, 1:, 2] = 0
    return algo.process(Episodes(obs, actions, rewards, mask))


def _setup(kind="gaussian", first_order=False, dtype=torch.float64, inner_lr=0.5, meta_step_weights=None,
           meta_pre_weight=0.0, inner_objective="vpg", tasks=TASKS, episodes=E, **options):
    torch.manual_seed(0)
    if kind == "gaussian":
        policy = GaussianMLPPolicy(OBS, 2, hidden_sizes=(5,), activation="tanh", init_std=0.8)
    else:
        policy = CategoricalMLPPolicy(OBS, 3, hidden_sizes=(5,), activation="tanh")
    algo = MAMLTRPO(policy, inner_lr=inner_lr, first_order=first_order, gamma=0.9, gae_lambda=0.95,
                    meta_step_weights=meta_step_weights, meta_pre_weight=meta_pre_weight, inner_objective=inner_objective,
                    **options)
    params = {k: v.to(dtype) for k, v in policy.init_params(torch.Generator().manual_seed(1)).items()}
    params = {k: v + 0.1 * torch.randn(v.shape, dtype=dtype) for k, v in params.items()}  # non-zero biases
    train = [_episodes(algo, 10, kind, dtype, tasks, episodes), _episodes(algo, 11, kind, dtype, tasks, episodes)]
    valid = _episodes(algo, 12, kind, dtype, tasks, episodes)
    return algo, params, train, valid


def _scored(algo, train, valid):
    """The episodes of the scored stages (the valid ones alone with the paper's objective)."""
    return algo.scored_episodes(train, valid, algo.scored_stages(len(train))[0])


def _weights(algo, train):
    return algo.scored_stages(len(train))[1]


def _meta_objective(algo, train, valid, old_dists, first_order=None, lrs=None):
    """theta_flat -> (surrogate, kl) of the policies adapted from theta on ``train`` (at ``lrs``, default
    ``inner_lr``), over the scored stages."""

    def objective(flat, like):
        dists = algo.stage_dists(unflatten(flat, like), train, valid, lrs, first_order=first_order)
        return algo.surrogate_and_kl_stages(dists, old_dists, _scored(algo, train, valid), _weights(algo, train))

    return objective


def _old_dists(algo, params, train, valid):
    with torch.no_grad():
        return algo.stage_dists(params, train, valid, first_order=True)


def _shifted(dists):
    """Old policies other than the current ones: importance ratios != 1."""
    return [tuple(o + 0.05 for o in dist) for dist in dists]


@pytest.mark.parametrize("num_steps,weights,pre", [(1, None, 0.0), (2, None, 0.0), (2, [1.0, 2.0], 0.0), (1, None, 0.5),
                                                    (2, [0.0, 1.0], 2.0)])
def test_second_order_meta_gradient_matches_finite_differences(num_steps, weights, pre):
    algo, params, train, valid = _setup(meta_step_weights=weights, meta_pre_weight=pre)
    train = train[:num_steps]
    old = _shifted(_old_dists(algo, params, train, valid))
    objective = _meta_objective(algo, train, valid, old)
    flat = flatten(params).requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(flat, params)[0], flat)
    eps = 1e-6
    fd = torch.stack([
        (objective(flat.detach() + eps * e, params)[0] - objective(flat.detach() - eps * e, params)[0]) / (2 * eps)
        for e in torch.eye(flat.numel(), dtype=torch.float64)
    ])
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)
    # The first-order gradient is a different quantity: the test can tell them apart.
    fo = _meta_objective(algo, train, valid, old, first_order=True)
    (fo_grad,) = torch.autograd.grad(fo(flat, params)[0], flat)
    assert (fo_grad - fd).abs().max() > 1e-3


def test_first_order_meta_gradient_is_the_gradient_at_the_adapted_params():
    algo, params, train, valid = _setup(first_order=True)
    old = _shifted(_old_dists(algo, params, train, valid))
    flat = flatten(params).requires_grad_(True)
    (grad,) = torch.autograd.grad(_meta_objective(algo, train, valid, old)(flat, params)[0], flat)
    with torch.no_grad():
        adapted = algo.adapt(params, train)
    adapted = {k: v.clone().requires_grad_(True) for k, v in adapted.items()}
    surrogate, _ = algo.surrogate_and_kl(vmap(algo.policy.dist_params)(adapted, valid.observations), old[-1], valid)
    per_task = torch.autograd.grad(surrogate, list(adapted.values()))
    expected = flatten({k: g.sum(0) for k, g in zip(adapted, per_task)})  # theta'_i = theta + const_i
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("num_steps", [1, 2])
def test_lvc_meta_gradient_is_the_derivative_through_likelihood_ratio_inner_steps(num_steps):
    # With inner_objective = "lvc" each inner step k descends -E[pi_x / pi_{x_k} A], the likelihood ratio
    # against the policy x_k that sampled its episodes, held fixed. Written out here independently of the
    # library's loss, that adaptation is a plain function of theta: the meta-gradient the update uses (the
    # hand-written J^T) must be its derivative by central finite differences.
    algo, params, train, valid = _setup(inner_objective="lvc")
    train = train[:num_steps]
    lrs = [0.5, 0.25][:num_steps]
    with torch.no_grad():  # the sampling policies x_k at theta (task axis)
        sampling = [{k: v.expand(TASKS, *v.shape) for k, v in params.items()}]
        for episodes, lr in zip(train[:-1], lrs):
            sampling.append(algo.inner_step(sampling[-1], episodes, lr, first_order=True))
    old = _shifted(_old_dists(algo, params, train, valid))

    def ratio_loss(p, q, obs, actions, adv, mask):
        return -masked_mean(torch.exp(algo.policy.log_prob(p, obs, actions) - algo.policy.log_prob(q, obs, actions)) * adv, mask)

    def surrogate(flat):
        x = {k: v.expand(TASKS, *v.shape) for k, v in unflatten(flat, params).items()}
        for episodes, lr, q in zip(train, lrs, sampling):
            g = vmap(torch.func.grad(ratio_loss))(x, q, episodes.observations, episodes.actions, episodes.advantages, episodes.mask)
            x = {k: x[k] - lr * g[k] for k in x}
        return algo.surrogate_and_kl(vmap(algo.policy.dist_params)(x, valid.observations), old[-1], valid)[0]

    flat = flatten(params)
    eps = 1e-6
    fd = torch.stack([(surrogate(flat + eps * e) - surrogate(flat - eps * e)) / (2 * eps) for e in torch.eye(flat.numel(), dtype=torch.float64)])
    lin = algo.linearize(params, train, valid, lrs)
    cotangent = torch.func.grad(lambda d: algo.surrogate_and_kl(d[-1], old[-1], valid)[0])(lin.dists)
    torch.testing.assert_close(flatten(lin.vjp(cotangent)), fd, rtol=1e-6, atol=1e-8)
    # the paper's (VPG) meta-gradient on the same data is a different quantity: the test tells them apart
    algo.inner_objective = "vpg"
    vpg = algo.linearize(params, train, valid, lrs)
    assert (flatten(vpg.vjp(cotangent)) - fd).abs().max() > 1e-3


@pytest.mark.parametrize("kind,first_order,num_steps,chunk,weights,pre", [
    ("gaussian", False, 1, 5, None, 0.0), ("gaussian", False, 2, 5, None, 0.0),
    ("gaussian", True, 1, 5, None, 0.0), ("gaussian", True, 2, 5, None, 0.0),
    ("categorical", False, 2, 5, None, 0.0),
    # the update's passes over groups of episodes (2 + 1 and 1 + 1 + 1 of E = 3, with masked steps)
    ("gaussian", False, 2, 2, None, 0.0), ("gaussian", True, 2, 1, None, 0.0), ("categorical", False, 1, 1, None, 0.0),
    # the objective over several inner steps' policies, theta's own included (meta_pre_weight)
    ("gaussian", False, 2, 2, [1.0, 3.0], 0.0), ("gaussian", True, 2, 5, [1.0, 1.0], 0.0), ("categorical", False, 2, 5, [2.0, 1.0], 0.0),
    ("gaussian", False, 1, 2, None, 0.5), ("gaussian", True, 2, 5, [0.0, 1.0], 1.0), ("categorical", False, 2, 5, [2.0, 1.0], 3.0),
])
@pytest.mark.parametrize("inner_objective", ["vpg", "lvc"])  # LVC: autograd's reference goes through the detached ratio
def test_fisher_vector_product_matches_kl_hessian(kind, first_order, num_steps, chunk, weights, pre, inner_objective):
    algo, params, train, valid = _setup(kind, first_order, meta_step_weights=weights, meta_pre_weight=pre,
                                        inner_objective=inner_objective)
    algo.chunk_samples = TASKS * T * chunk + TASKS  # a little over `chunk` episodes: rounds down
    assert len(algo.chunks(valid)) == -(-E // chunk)
    train = train[:num_steps]
    old = _old_dists(algo, params, train, valid)
    assert len(old) == (sum(w > 0 for w in weights) if weights else 1) + (pre > 0)
    kl_of = _meta_objective(algo, train, valid, old)
    hessian = torch.autograd.functional.hessian(lambda f: kl_of(f, params)[1], flatten(params))
    lin = algo.linearize(params, train, valid)
    for dist, old_dist in zip(lin.dists, old, strict=True):
        for d, o in zip(dist, old_dist, strict=True):
            torch.testing.assert_close(d, o)
    fvp = algo.fisher_vector_product(lin, [e.mask for e in _scored(algo, train, valid)], params)
    v = torch.randn(hessian.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(fvp(v), hessian @ v + algo.cg_damping * v, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(fvp(2 * v), 2 * fvp(v))  # the maps stay valid across calls
    # J^T of dS/d(dist) from the same maps is the meta-gradient (the gradient of the surrogate).
    old_ratio = _shifted(old)
    surrogate_of = lambda d: algo.surrogate_and_kl_stages(d, old_ratio, _scored(algo, train, valid), _weights(algo, train))[0]  # noqa: E731
    cotangent = torch.func.grad(surrogate_of)(lin.dists)
    flat = flatten(params).requires_grad_(True)
    (expected,) = torch.autograd.grad(_meta_objective(algo, train, valid, old_ratio)(flat, params)[0], flat)
    torch.testing.assert_close(flatten(lin.vjp(cotangent)), expected)


@pytest.mark.parametrize("first_order", [False, True])
def test_subsampled_fisher_is_the_kl_hessian_on_the_first_tasks(first_order):
    algo, params, train, valid = _setup(first_order=first_order)
    algo.fisher_subsample = 0.5  # round(0.5 * 2) = the first of 2 tasks, all its episodes
    sub_train = [subsample_tasks(e, algo.fisher_subsample) for e in train]
    sub_valid = subsample_tasks(valid, algo.fisher_subsample)
    assert sub_valid.num_tasks == 1 and sub_valid.episodes_per_task == E
    assert torch.equal(sub_valid.mask, valid.mask[:1]) and torch.equal(sub_train[1].advantages, train[1].advantages[:1])
    assert subsample_tasks(valid, 0.01).num_tasks == 1 and subsample_tasks(valid, 1.0) is valid
    old = _old_dists(algo, params, sub_train, sub_valid)
    kl_of = _meta_objective(algo, sub_train, sub_valid, old)
    hessian = torch.autograd.functional.hessian(lambda f: kl_of(f, params)[1], flatten(params))
    fvp = algo.fisher_vector_product(algo.linearize(params, sub_train, sub_valid), [sub_valid.mask], params)
    v = torch.randn(hessian.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(fvp(v), hessian @ v + algo.cg_damping * v, rtol=1e-7, atol=1e-10)
    # the update takes it from the full-data passes restricted to those tasks (nothing recomputed): the same
    restricted = algo.linearize(params, train, valid).first_tasks(sub_valid.num_tasks)
    torch.testing.assert_close(algo.fisher_vector_product(restricted, [sub_valid.mask], params)(v),
                               hessian @ v + algo.cg_damping * v, rtol=1e-7, atol=1e-10)
    # ... and differs from the full-data product (checked against its Hessian above): the subsample is used.
    full = algo.fisher_vector_product(algo.linearize(params, train, valid), [valid.mask], params)
    assert (full(v) - hessian @ v).abs().max() > 1e-3


def test_subsampled_step_uses_every_task_for_gradient_and_line_search():
    algo, params, train, valid = _setup(dtype=torch.float32, inner_lr=0.05)
    _, full_info = algo.step(params, train, valid)
    algo.fisher_subsample = 0.5
    new, info = algo.step(params, train, valid)
    assert info["accepted"] == 1.0 and 0 < info["kl"] <= algo.max_kl
    for key in ("surrogate_before", "inner_loss", "grad_norm"):
        assert info[key] == full_info[key]
    assert info["step_norm"] != pytest.approx(full_info["step_norm"])  # another metric, another direction
    old = _old_dists(algo, params, train, valid)
    with torch.no_grad():
        surrogate, kl = algo.surrogate_and_kl_stages(algo.stage_dists(new, train, valid), old, [valid], [1.0])
    assert surrogate.item() == pytest.approx(info["surrogate_after"], rel=1e-5)
    assert kl.item() == pytest.approx(info["kl"], rel=1e-5)
    with pytest.raises(ValueError, match="fisher_subsample"):
        MAMLTRPO(algo.policy, inner_lr=0.1, fisher_subsample=0.0)


def test_inner_step_batches_tasks_and_accepts_batched_params():
    algo, params, train, _ = _setup()
    batched = algo.inner_step(params, train[0], 0.5)
    for i in range(TASKS):
        one = Episodes(*(getattr(train[0], f)[i : i + 1] for f in ("observations", "actions", "rewards", "mask")),
                       advantages=train[0].advantages[i : i + 1])
        single = algo.inner_step(params, one, 0.5)
        for k in params:
            torch.testing.assert_close(batched[k][i], single[k][0])
    # A second step from task-batched params equals adapt over both batches; the learning rate matters.
    two = algo.inner_step(batched, train[1], 0.25)
    via_adapt = algo.adapt(params, train, [0.5, 0.25])
    assert all(torch.equal(two[k], via_adapt[k]) for k in params)
    assert not torch.allclose(two["l0.weight"], algo.adapt(params, train, [0.5, 0.5])["l0.weight"])
    with pytest.raises(ValueError, match="learning rates"):
        algo.adapt(params, train, [0.5])
    with pytest.raises(ValueError, match="process"):
        algo.inner_step(params, train[0].replace(advantages=None), 0.5)


@pytest.mark.parametrize("first_order", [False, True])
def test_step_improves_surrogate_within_kl_bound(first_order):
    algo, params, train, valid = _setup(first_order=first_order, dtype=torch.float32, inner_lr=0.05)
    new, info = algo.step(params, train, valid)
    assert info["accepted"] == 1.0 and info["nan"] == 0.0
    assert info["surrogate_after"] < info["surrogate_before"] and 0 < info["kl"] <= algo.max_kl
    old = _old_dists(algo, params, train, valid)
    with torch.no_grad():
        surrogate, kl = algo.surrogate_and_kl_stages(algo.stage_dists(new, train, valid), old, [valid], [1.0])
    assert surrogate.item() == pytest.approx(info["surrogate_after"], rel=1e-5)
    assert kl.item() == pytest.approx(info["kl"], rel=1e-5)
    assert all(not torch.equal(new[k], params[k]) for k in ("l0.weight", "log_std"))


@pytest.mark.parametrize("fisher_subsample", [1.0, 0.5])
def test_an_accepted_step_is_the_damped_kl_hessian_solution_scaled_to_max_kl(fisher_subsample):
    """Against explicit linear algebra: the direction solves (H + damping I) x = g, H the Hessian of the mean
    KL over the Fisher's tasks (all, or the first of two) and g the meta-gradient over all tasks; its length
    puts 0.5 s^T (H + damping I) s at max_kl; the accepted step is that times ls_ratio^(tries - 1); the KL
    reported is KL(old || new) in closed form. Two inner steps at their own rates, which the old policies,
    the metric and the line search must all use."""
    algo, params, train, valid = _setup(inner_lr=0.3)
    lrs = [0.3, 0.1]
    algo.cg_damping, algo.cg_iters, algo.fisher_subsample = 0.1, 200, fisher_subsample  # CG converges exactly
    theta = flatten(params)
    with torch.no_grad():
        old = algo.stage_dists(params, train, valid, lrs, first_order=True)

    flat = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_meta_objective(algo, train, valid, old, lrs=lrs)(flat, params)[0], flat)
    sub_train = [subsample_tasks(e, fisher_subsample) for e in train]
    sub_valid = subsample_tasks(valid, fisher_subsample)
    sub_old = [tuple(t[: sub_valid.num_tasks] for t in dist) for dist in old]
    kl_of = _meta_objective(algo, sub_train, sub_valid, sub_old, lrs=lrs)
    hessian = torch.autograd.functional.hessian(lambda f: kl_of(f, params)[1], theta)
    damped = hessian + algo.cg_damping * torch.eye(len(theta), dtype=theta.dtype)
    x = torch.linalg.solve(damped, g)
    full = -x * torch.sqrt(algo.max_kl / (0.5 * x @ damped @ x))
    new, info = algo.step(params, train, valid, lrs=lrs)
    assert info["accepted"] == 1.0
    assert info["step_norm"] == pytest.approx(full.norm().item(), rel=1e-6)
    fraction = algo.ls_ratio ** (info["ls_steps"] - 1)
    assert info["step_fraction"] == pytest.approx(fraction)
    # CG stops at its residual tolerance, so agreement is to a small part of the step, not to rounding
    assert (flatten(new) - theta - fraction * full).norm() < 1e-4 * full.norm(), ((flatten(new) - theta - fraction * full).norm(), full.norm())
    (old_mean, old_log_std), (mean, log_std) = old[0], algo.stage_dists(new, train, valid, lrs)[0]
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(old_mean, old_log_std.exp()),
                                           torch.distributions.Normal(mean, log_std.exp())).sum(-1)
    expected_kl = ((kl * valid.mask).sum((1, 2)) / valid.mask.sum((1, 2))).mean()
    assert info["kl"] == pytest.approx(expected_kl.item(), rel=1e-6)


def test_a_search_that_accepts_no_candidate_leaves_the_parameters_unchanged():
    algo, params, train, valid = _setup(dtype=torch.float64, inner_lr=2.0)
    algo.max_kl, algo.ls_max_steps = 0.1, 1  # the quadratic KL model overshoots: the one candidate breaks the bound
    new, info = algo.step(params, train, valid)
    assert info["accepted"] == 0.0 and info["nan"] == 0.0 and info["ls_steps"] == 1.0
    assert all(torch.equal(new[k], params[k]) for k in params)
    algo.ls_max_steps = 15  # the same step with backtracking is accepted: the rejection above was the search's
    assert algo.step(params, train, valid)[1]["accepted"] == 1.0


def test_line_search_stops_a_candidate_early_once_its_kl_exceeds_the_bound(monkeypatch):
    """Checking the KL task group by task group accepts the same step as one pass over all tasks, and
    stops evaluating a candidate whose partial KL sum is already above max_kl."""
    algo, params, train, valid = _setup(dtype=torch.float64, inner_lr=2.0)
    algo.max_kl = 0.1  # a large inner step: the quadratic KL model overshoots by orders of magnitude
    algo.kl_check_groups = 1
    whole, whole_info = algo.step(params, train, valid)
    calls = []
    original = algo.stage_dists
    monkeypatch.setattr(algo, "stage_dists", lambda *a, **k: calls.append(a[2].num_tasks) or original(*a, **k))
    algo.kl_check_groups = TASKS
    grouped, grouped_info = algo.step(params, train, valid)
    assert whole_info["accepted"] == 1.0 and whole_info["ls_steps"] > 1
    assert grouped_info["ls_steps"] == whole_info["ls_steps"]
    assert grouped_info["step_fraction"] == whole_info["step_fraction"]
    assert grouped_info["kl"] == pytest.approx(whole_info["kl"], rel=1e-9)
    assert grouped_info["surrogate_after"] == pytest.approx(whole_info["surrogate_after"], rel=1e-9)
    for k in params:
        torch.testing.assert_close(grouped[k], whole[k])
    assert set(calls) == {1}  # one task per group
    assert len(calls) < TASKS * grouped_info["ls_steps"]  # some candidate stopped after its first task
    with pytest.raises(ValueError, match="kl_check_groups"):
        MAMLTRPO(algo.policy, inner_lr=0.1, kl_check_groups=0)


def test_step_rejects_when_no_candidate_is_acceptable_and_on_nan():
    algo, params, train, valid = _setup(dtype=torch.float32, inner_lr=0.05)
    flat = valid.replace(advantages=torch.zeros_like(valid.advantages))  # zero meta-gradient: no step to take
    new, info = algo.step(params, train, flat)
    assert info["accepted"] == 0.0 and info["nan"] == 0.0 and info["grad_norm"] == 0.0
    accepted_keys = set(algo.step(params, train, valid)[1])
    assert set(info) == accepted_keys  # the same columns whether or not a step was taken
    assert all(torch.equal(new[k], params[k]) for k in params)
    bad = valid.replace(advantages=valid.advantages.clone())
    bad.advantages[0, 0, 0] = float("nan")
    new, info = algo.step(params, train, bad)
    assert info["nan"] == 1.0 and info["accepted"] == 0.0
    assert all(torch.equal(new[k], params[k]) for k in params)


def test_process_fills_gae_against_the_per_task_baseline():
    algo, _, train, _ = _setup()
    raw = train[0].replace(returns=None, advantages=None)
    algo.normalize_advantages = False
    done = algo.process(raw)
    returns = discounted_returns(raw.rewards, raw.mask, algo.gamma)
    values = LinearFeatureBaseline().fit(raw.observations, returns, raw.mask).predict(raw.observations, raw.mask)
    torch.testing.assert_close(done.returns, returns)
    torch.testing.assert_close(done.advantages, gae(raw.rewards, values, raw.mask, 0.9, 0.95) * raw.mask)  # the algo's
    clipped = MAMLTRPO(algo.policy, inner_lr=0.1, gamma=0.9, gae_lambda=0.95, normalize_advantages=False,
                       baseline_obs_clip=0.5).process(raw)
    clipped_values = LinearFeatureBaseline(obs_clip=0.5).fit(raw.observations, returns, raw.mask).predict(raw.observations, raw.mask)
    torch.testing.assert_close(clipped.advantages, gae(raw.rewards, clipped_values, raw.mask, 0.9, 0.95) * raw.mask)
    assert not torch.allclose(clipped.advantages, done.advantages)  # the clip reached the baseline
    algo.gae_lambda = 1.0  # then GAE is the return minus the baseline
    torch.testing.assert_close(algo.process(raw).advantages, (returns - values) * raw.mask)
    algo.normalize_advantages = True
    adv = algo.process(raw).advantages
    torch.testing.assert_close(masked_mean(adv, raw.mask), torch.zeros(TASKS, dtype=adv.dtype))
    assert torch.all(adv[raw.mask == 0] == 0)


def test_grouped_inner_step_equals_the_step_on_all_episodes():
    algo, params, train, _ = _setup()
    whole = algo.inner_step(params, train[0], 0.5, first_order=False)  # one graph over all episodes
    algo.chunk_samples = TASKS * T * 2
    grouped = algo.inner_step(params, train[0], 0.5, first_order=True)  # groups of 2 + 1 episodes
    for k in whole:
        torch.testing.assert_close(grouped[k], whole[k].detach())


def test_meta_step_weights_pick_and_normalize_the_scored_stages():
    algo, _, _, _ = _setup(meta_step_weights=[1.0, 0.0, 3.0])
    assert algo.scored_stages(3) == ([1, 3], [0.25, 0.75])  # a zero weight leaves its stage out
    assert algo.scored_stages(0) == ([0], [1.0])  # no inner step: theta itself
    with pytest.raises(ValueError, match="3 meta_step_weights"):
        algo.scored_stages(2)
    assert _setup()[0].scored_stages(2) == ([2], [1.0])  # the paper's: the last stage alone
    for bad in ([1.0, 0.0], [-1.0, 1.0], [float("nan"), 1.0], []):
        with pytest.raises(ValueError, match="meta_step_weights"):
            MAMLTRPO(algo.policy, inner_lr=0.1, meta_step_weights=bad)
    # meta_pre_weight adds theta itself (stage 0), on the same scale as the step weights
    assert _setup(meta_step_weights=[1.0, 0.0, 3.0], meta_pre_weight=4.0)[0].scored_stages(3) == ([0, 1, 3], [0.5, 0.125, 0.375])
    assert _setup(meta_pre_weight=1.0)[0].scored_stages(2) == ([0, 2], [0.5, 0.5])
    assert _setup(meta_pre_weight=1.0)[0].scored_stages(0) == ([0], [1.0])  # baselines: theta alone either way
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="meta_pre_weight"):
            MAMLTRPO(algo.policy, inner_lr=0.1, meta_pre_weight=bad)


def test_meta_pre_weight_scores_theta_on_the_pre_update_episodes():
    """The weighted objective is (w0 S_0 + S_1) / (w0 + 1), S_0 being theta's own surrogate on train[0]."""
    algo, params, train, valid = _setup(meta_pre_weight=0.5)
    paper, _, _, _ = _setup()
    train = train[:1]
    old = _shifted(_old_dists(algo, params, train, valid))
    with torch.no_grad():
        ours = algo.surrogate_and_kl_stages(algo.stage_dists(params, train, valid), old, _scored(algo, train, valid), _weights(algo, train))
        theta_dist = vmap(algo.policy.dist_params, in_dims=(None, 0))(params, train[0].observations)
        pre = algo.surrogate_and_kl(theta_dist, old[0], train[0])
        post = paper.surrogate_and_kl_stages(paper.stage_dists(params, train, valid), old[1:], [valid], [1.0])
    for o, a, b in zip(ours, pre, post):
        torch.testing.assert_close(o, (0.5 * a + b) / 1.5)
    assert abs(pre[0].item()) > 1e-3  # the stage-0 term is not zero: the check can fail


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
    _, _, _, valid = _setup(tasks=3)
    for fraction, expected in [(0.66, 2), (0.9, 3), (0.5, 2), (0.1, 1), (1.0, 3)]:
        kept = subsample_tasks(valid, fraction)
        assert kept.num_tasks == max(1, round(fraction * 3)) == expected, fraction
        assert torch.equal(kept.observations, valid.observations[:expected])


@pytest.mark.parametrize("first_order", [False, True])
def test_sampling_step_uses_the_learning_rate_it_is_given(first_order):
    """The sampler's inner step (a later step at inner_lr * later_lr_scale) is theta - lr * grad at *that* lr."""
    algo, params, train, _ = _setup(first_order=first_order, tasks=3)
    batched = {k: v.unsqueeze(0).expand(3, *v.shape) for k, v in params.items()}
    adapted, _ = algo.sampling_step(batched, train[0], 0.2)
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    for i in range(3):
        loss = _reference_inner_loss(algo, leaf, train[0])[i]
        grads = torch.autograd.grad(loss, list(leaf.values()))
        for (k, p), g in zip(params.items(), grads):
            torch.testing.assert_close(adapted[k][i], p - 0.2 * g)


def test_reported_inner_losses_are_the_masked_means_over_all_episodes_when_grouped():
    """With chunk_samples splitting each task's episodes into groups, the inner loss is still the task's mean."""
    algo, params, train, _ = _setup(tasks=3, episodes=5, chunk_samples=3 * T * 2)  # groups of 2, 2 and 1 episodes
    episodes = train[0]
    assert len(algo.chunks(episodes)) == 3
    reference = _reference_inner_loss(algo, params, episodes)
    _, loss = algo.inner_gradient(params, episodes)  # first order
    torch.testing.assert_close(loss, reference)
    batched = {k: v.unsqueeze(0).expand(3, *v.shape) for k, v in params.items()}
    torch.testing.assert_close(algo.inner_curvature(batched, episodes).loss, reference)  # second order


def test_the_logged_inner_loss_is_the_first_inner_loss_at_theta():
    """info['inner_loss'] is the mean over tasks of the inner loss at theta on the first train batch."""
    algo, params, train, valid = _setup(tasks=3, cg_iters=3)
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
