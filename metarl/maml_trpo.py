"""MAML with a vanilla-policy-gradient inner loop and a TRPO outer loop (Finn et al. 2017, Sec. 5.3).

For each task i the inner loop adapts the meta-parameters theta on that task's
episodes, ``theta'_i = theta - alpha * grad L_i(theta)`` (possibly several steps, each
on fresh episodes of the latest adapted policy); all tasks are adapted in one call with
``torch.func.vmap``. The outer loop maximises the importance-weighted return of the
post-adaptation policies subject to a bound on their mean KL from the policies that
sampled the post-adaptation episodes:

    min_theta  S(theta) = mean_i E_i[ -pi_theta'_i(a|s) / pi_old_i(a|s) * A ]
    s.t.       KL(theta) = mean_i E_i[ KL(pi_old_i(.|s) || pi_theta'_i(.|s)) ] <= max_kl

E_i is the mask-weighted mean over the task's taken steps. With ``meta_step_weights``
(w_1..w_K) S and KL are instead the w-weighted means over k = 1..K of these terms for the
policy after k inner steps, on the episodes that policy sampled (the train batch of step
k + 1, the valid batch for k = K): the initialization is then scored on several steps of its
adaptation, not only the last (the paper's objective is w = (0, ..., 0, 1)). ``meta_pre_weight`` w_0
adds the policy after k = 0 steps, theta itself, scored on the pre-update episodes it sampled
(weights w_0..w_K normalized to sum 1): the paper's meta-gradient treats those episodes as fixed
data, so nothing else rewards what the initialization does before it adapts. The step direction solves
``H x = grad S`` by conjugate gradient, where H is the Hessian of KL at theta. Because KL
is zero with zero gradient there, H is exactly the Gauss-Newton matrix ``J^T M J``: J is
the Jacobian of the post-adaptation distribution parameters (per step) with respect to
theta, through the adaptation, and M the distribution's Fisher matrix in those
parameters.

J is applied by the chain rule through the adaptation rather than by differentiating
one big graph twice. With K inner steps ``x_{k+1} = x_k - a_k g_k(x_k)`` per task
(``x_0 = theta``) and ``dist = f(x_K)``,

    J v   = J_f (I - a_{K-1} H_{K-1}) ... (I - a_0 H_0) v
    J^T u = (I - a_0 H_0) ... (I - a_{K-1} H_{K-1}) J_f^T u

where H_k is task i's inner-loss Hessian at x_k (symmetric, so it serves both ways) and
J_f the Jacobian of the policy's distribution at the adapted parameters. Scoring several
stages adds each stage's ``J_f`` at its own x_k to the same chain. Each map is built
once per meta-update, with one parameter copy per task so that one pass gives every task's
own ``H_k w_i``. Both H_k and J_f are products by the hand-written passes of
:mod:`metarl.curvature`, which cache what is fixed at theta (activations and their derivatives,
backward signals) instead of replaying autograd's double backward each time. A
conjugate-gradient iteration then costs 2K inner
Hessian-vector products and one forward/backward pair of the policy, and no graph is
rebuilt. The meta-gradient is ``J^T dS/d(dist)`` from the same maps. With
``first_order`` the adaptation counts as ``theta'_i = theta + const_i`` (every H_k is
dropped) in both the meta-gradient and J.

The inner episodes are sampled by x_k, which depends on theta, but the paper's meta-gradient treats
them as fixed data. ``inner_objective = "lvc"`` (Rothfuss et al. 2019, ProMP's low-variance curvature
estimator) differentiates the inner loss in the form ``-E[pi_x(a|s) / stop(pi_x(a|s)) A]``: the inner
step is unchanged (the ratio is 1, its gradient the VPG gradient), but H_k gains the term
``-E[A grad log pi grad log pi^T]``, through which the meta-gradient and J also account, per time step,
for how theta's own sampling distribution shapes the adaptation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from metarl.adaptation import gradient_step
from metarl.baselines import LinearFeatureBaseline
from metarl.curvature import InnerLossHessian, PolicyJacobian
from metarl.episodes import Episodes, discounted_returns, gae, masked_mean, normalize_per_task
from metarl.policies import Params, Policy
from metarl.trpo import backtracking_line_search, conjugate_gradient, flatten, unflatten


# "vpg": the paper's inner loss; "lvc": its low-variance curvature form (ProMP), see MAMLTRPO.inner_objective_loss
INNER_OBJECTIVES = ("vpg", "lvc")


@dataclass
class GroupedJacobian:
    """J_f of the distributions on the valid episodes, taken group by group of episodes (``chunk_samples``).

    ``dist`` are the distribution parameters [tasks, T, E, k], the groups concatenated along E.
    """

    jacobians: list[PolicyJacobian]  # one per group, on its observations flattened to [tasks, T * E', obs_dim]
    sizes: list[int]  # episodes per group

    def _concat(self, per_group: list[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        # [tasks, T * E', k] per group -> [tasks, T, E, k]
        shaped = [tuple(t.reshape(t.shape[0], -1, e, t.shape[-1]) for t in flat) for flat, e in zip(per_group, self.sizes)]
        return tuple(torch.cat(pieces, dim=2) for pieces in zip(*shaped))

    @property
    def dist(self) -> tuple[Tensor, ...]:
        return self._concat([jacobian.dist for jacobian in self.jacobians])

    def jvp(self, w: Params) -> tuple[Tensor, ...]:
        """w per task -> J_f w [tasks, T, E, k]."""
        return self._concat([jacobian.jvp(w) for jacobian in self.jacobians])

    def vjp(self, u: tuple[Tensor, ...]) -> Params:
        """u [tasks, T, E, k] -> J_f^T u per task."""
        pieces = zip(*(t.split(self.sizes, dim=2) for t in u))
        grads = [jacobian.vjp(tuple(p.reshape(p.shape[0], -1, p.shape[-1]) for p in piece))
                 for jacobian, piece in zip(self.jacobians, pieces)]
        return {k: sum(g[k] for g in grads) for k in grads[0]}

    def first_tasks(self, n: int) -> "GroupedJacobian":
        return GroupedJacobian([jacobian.first_tasks(n) for jacobian in self.jacobians], self.sizes)


@dataclass
class AdaptationLinearization:
    """The scored distributions of all tasks at theta, and J / J^T around theta (see the module doc).

    A *stage* is a number of inner steps taken; the update scores the distributions of the
    policies after each stage in ``stages`` (increasing, the last one = all inner steps) on the
    episodes those policies sampled. ``dists[s]`` are stage s's distribution parameters
    [tasks, T, E, k]; ``inner_loss`` [tasks] the first inner loss at theta (None without inner
    steps). Built by :meth:`MAMLTRPO.linearize` and valid for any number of products until dropped.
    """

    stages: list[int]
    weights: list[float]  # per scored stage, its weight in the objective and the KL (summing to 1)
    inner_loss: Tensor | None
    lrs: list[float]  # per inner step
    curvatures: list["InnerCurvature"]  # per inner step, its Hessian products (empty: first order, no H terms)
    jacobians: list[GroupedJacobian]  # per scored stage, at that stage's adapted parameters

    def _through_step(self, step: int, w: Params) -> Params:
        """(I - a_k H_k) w for inner step k (the identity at first order)."""
        return _minus_scaled(w, self.lrs[step], self.curvatures[step].product(w)) if self.curvatures else w

    @property
    def dists(self) -> list[tuple[Tensor, ...]]:
        return [jacobian.dist for jacobian in self.jacobians]

    @property
    def num_tasks(self) -> int:
        return self.jacobians[0].dist[0].shape[0]

    def jvp(self, v: Params) -> list[tuple[Tensor, ...]]:
        """J v: a tangent of theta (no task axis) -> per scored stage, tangents of its dists [tasks, T, E, k]."""
        w = {k: t.expand(self.num_tasks, *t.shape) for k, t in v.items()}
        jacobian_at = dict(zip(self.stages, self.jacobians))
        out = []
        for stage in range(self.stages[-1] + 1):
            if stage in jacobian_at:
                out.append(jacobian_at[stage].jvp(w))
            if stage < self.stages[-1]:
                w = self._through_step(stage, w)
        return out

    def vjp(self, u: Sequence[tuple[Tensor, ...]]) -> Params:
        """J^T u: per scored stage, cotangents of its dists -> a cotangent of theta (no task axis, tasks summed)."""
        at = {stage: (jacobian, cotangent) for stage, jacobian, cotangent in zip(self.stages, self.jacobians, u, strict=True)}
        z: Params | None = None
        for stage in range(self.stages[-1], -1, -1):
            if stage < self.stages[-1]:
                z = self._through_step(stage, z)
            if stage in at:
                jacobian, cotangent = at[stage]
                pulled = jacobian.vjp(cotangent)
                z = pulled if z is None else {k: z[k] + pulled[k] for k in z}
        return {k: t.sum(0) for k, t in z.items()}

    def first_tasks(self, n: int) -> "AdaptationLinearization":
        """The linearization of the first ``n`` tasks alone, from the cached passes (nothing recomputed)."""
        return AdaptationLinearization(
            stages=self.stages,
            weights=self.weights,
            inner_loss=None if self.inner_loss is None else self.inner_loss[:n],
            lrs=self.lrs,
            curvatures=[curvature.first_tasks(n) for curvature in self.curvatures],
            jacobians=[jacobian.first_tasks(n) for jacobian in self.jacobians],
        )


def _minus_scaled(a: Params, lr: float, b: Params) -> Params:
    """a - lr * b, key by key."""
    return {k: torch.add(a[k], b[k], alpha=-lr) for k in a}


def subsample_tasks(episodes: Episodes, fraction: float) -> Episodes:
    """The first ``max(1, round(fraction * tasks))`` tasks with all their episodes (all tasks at ``fraction = 1``)."""
    num = episodes.num_tasks
    keep = max(1, min(num, round(fraction * num)))
    return episodes if keep == num else episodes.select(tasks=slice(0, keep))


def _add_weighted(out: Params, term: Params, weight: Tensor) -> Params:
    """``out += weight * term`` key by key (in place on the dict, returned); ``weight`` is per task [tasks],
    the term [tasks, ...]."""
    for k, t in term.items():
        scaled = weight.view(-1, *([1] * (t.dim() - 1))) * t
        out[k] = scaled if k not in out else out[k] + scaled
    return out


def _weighted_sum(terms: Sequence[Params], weights: Sequence[Tensor]) -> Params:
    """sum_c weights[c] * terms[c] key by key; ``weights[c]`` is per task [tasks], the terms [tasks, ...]."""
    out: Params = {}
    for term, weight in zip(terms, weights):
        _add_weighted(out, term, weight)
    return out


@dataclass
class InnerCurvature:
    """One second-order inner step at task-batched parameters x: each task's inner-loss gradient and loss
    (``gradient [tasks, ...]``, ``loss [tasks]``) and its Hessian products, over all groups of episodes."""

    gradient: Params
    loss: Tensor
    hessians: list[InnerLossHessian]
    weights: list[Tensor]  # per group, [tasks]: its share of each task's taken steps

    def product(self, w: Params) -> Params:
        """w [tasks, ...] -> H_i w_i per task."""
        return _weighted_sum([hessian(w) for hessian in self.hessians], self.weights)

    def first_tasks(self, n: int) -> "InnerCurvature":
        return InnerCurvature({k: g[:n] for k, g in self.gradient.items()}, self.loss[:n],
                              [hessian.first_tasks(n) for hessian in self.hessians], [w[:n] for w in self.weights])


class MAMLTRPO:
    """The MAML-TRPO algorithm on parameter dicts; the sampler lives in ``metarl.sampling``, the loop in
    ``metarl.training``.

    ``fisher_subsample`` is the fraction of the tasks (the first ``max(1, round(fraction *
    tasks))``, tasks being drawn independently) on which the Fisher-vector products of
    conjugate gradient are computed, with all their episodes: H is then the Hessian of the
    mean KL over those tasks, an unbiased estimate of the full one. This is sound because the
    metric only shapes the step direction: the meta-gradient, the surrogate and the KL that
    the line search checks always use every task, so an accepted step keeps the true KL
    bound and lowers the true surrogate. A conjugate-gradient iteration costs in proportion
    to the fraction. (Subsampling each task's episodes instead is biased: the inner Hessian
    of a few episodes is noisy, the noise inflates J^T M J, and on HalfCheetah the steps came
    out five times shorter than with the full metric; whole tasks do not have that problem.)

    ``chunk_samples``: the update passes over each task's episodes in groups of as many episodes
    as keep ``tasks x steps x episodes`` within this many samples (at least one episode; inner
    gradients and their Hessian products as mask-weighted sums over the groups, the
    distributions group by group). The result is the same up to float rounding. Measured here
    (2 cores): HalfCheetah's full batch (40 tasks x 200 steps x 20 episodes) is fastest in two
    groups; navigation's 40,000 samples and the Fisher subsamples are fastest in one, where
    groups of 5 episodes cost 1.5-3x in per-call overhead.

    ``kl_check_groups``: the line search evaluates a candidate step on this many groups of
    tasks in turn and stops as soon as the KL summed so far (over all tasks' count) exceeds
    ``max_kl``. KL terms are never negative, so that partial sum is a lower bound and the
    candidate would be rejected anyway: with finite values the search accepts exactly the step it
    would accept with one pass over all tasks, and far-too-long candidates cost a fraction of a
    pass. One difference: a non-finite loss or KL in a group after the break goes unseen, so where
    one pass would reject the whole update (``nan``) the grouped search goes on to shorter
    candidates. The step it accepts was still evaluated, finite, on every group.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        inner_lr: float,
        first_order: bool = False,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        max_kl: float = 0.01,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        ls_ratio: float = 0.8,
        ls_max_steps: int = 15,
        normalize_advantages: bool = True,
        baseline_reg: float = 1e-5,
        baseline_obs_clip: float = math.inf,
        fisher_subsample: float = 1.0,
        chunk_samples: int = 80_000,
        kl_check_groups: int = 4,
        meta_step_weights: Sequence[float] | None = None,
        meta_pre_weight: float = 0.0,
        inner_objective: str = "vpg",
    ):
        if not 0.0 < fisher_subsample <= 1.0:
            raise ValueError(f"fisher_subsample must be in (0, 1], got {fisher_subsample}")
        self.policy = policy
        self.inner_lr = float(inner_lr)
        self.first_order = bool(first_order)
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.max_kl, self.cg_iters, self.cg_damping = float(max_kl), int(cg_iters), float(cg_damping)
        self.ls_ratio, self.ls_max_steps = float(ls_ratio), int(ls_max_steps)
        self.normalize_advantages = bool(normalize_advantages)
        self.baseline_reg = float(baseline_reg)
        self.baseline_obs_clip = float(baseline_obs_clip)
        self.fisher_subsample = float(fisher_subsample)
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples must be >= 1, got {chunk_samples}")
        self.chunk_samples = int(chunk_samples)
        if kl_check_groups < 1:
            raise ValueError(f"kl_check_groups must be >= 1, got {kl_check_groups}")
        self.kl_check_groups = int(kl_check_groups)
        weights = None if meta_step_weights is None else [float(w) for w in meta_step_weights]
        if weights is not None and not (weights and all(w >= 0 and math.isfinite(w) for w in weights) and weights[-1] > 0):
            raise ValueError(f"meta_step_weights must be finite and >= 0 with the last > 0, got {meta_step_weights}")
        self.meta_step_weights = weights
        if not (meta_pre_weight >= 0 and math.isfinite(meta_pre_weight)):
            raise ValueError(f"meta_pre_weight must be finite and >= 0, got {meta_pre_weight}")
        self.meta_pre_weight = float(meta_pre_weight)
        if inner_objective not in INNER_OBJECTIVES:
            raise ValueError(f"inner_objective must be one of {', '.join(INNER_OBJECTIVES)}, got {inner_objective!r}")
        self.inner_objective = inner_objective

    # ------------------------------------------------------------------ advantages
    def process(self, episodes: Episodes) -> Episodes:
        """Fill ``returns`` and ``advantages`` [tasks, T, E]: GAE against a linear baseline fitted per task."""
        returns = discounted_returns(episodes.rewards, episodes.mask, self.gamma)
        baseline = LinearFeatureBaseline(self.baseline_reg, self.baseline_obs_clip).fit(episodes.observations, returns, episodes.mask)
        values = baseline.predict(episodes.observations, episodes.mask)
        advantages = gae(episodes.rewards, values, episodes.mask, self.gamma, self.gae_lambda)
        if self.normalize_advantages:
            advantages = normalize_per_task(advantages, episodes.mask)
        return episodes.replace(returns=returns, advantages=advantages)

    @staticmethod
    def _data(episodes: Episodes) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if episodes.advantages is None:
            raise ValueError("episodes have no advantages: call MAMLTRPO.process(episodes) first")
        return episodes.observations, episodes.actions, episodes.advantages, episodes.mask

    # ------------------------------------------------------------------ inner loop
    def inner_loss(self, params: Params, obs: Tensor, actions: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
        """One task's VPG loss, mask-weighted mean of -log pi(a|s) * A over its [T, E] steps (a scalar)."""
        return -masked_mean(self.policy.log_prob(params, obs, actions) * advantages, mask)

    def inner_objective_loss(self, params: Params, obs: Tensor, actions: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
        """The loss the second-order inner step differentiates: :meth:`inner_loss`, or with ``inner_objective =
        "lvc"`` the likelihood ratio against a stopped-gradient copy of the same policy (value -E[A], gradient
        the VPG gradient, Hessian plus the score's outer product; see :class:`metarl.curvature.InnerLossHessian`)."""
        if self.inner_objective == "vpg":
            return self.inner_loss(params, obs, actions, advantages, mask)
        log_prob = self.policy.log_prob(params, obs, actions)
        return -masked_mean(torch.exp(log_prob - log_prob.detach()) * advantages, mask)

    def inner_hessian(self, params: Params, episodes: Episodes) -> InnerLossHessian:
        """``w -> H_i w_i``: each task's :meth:`inner_objective_loss` Hessian on its episodes at ``params`` (task axis)."""
        obs, actions, advantages, mask = self._data(episodes)
        tasks = obs.shape[0]
        weights = advantages * mask / mask.sum((1, 2), keepdim=True).clamp_min(1.0)  # as in masked_mean
        return InnerLossHessian(self.policy, params, obs.reshape(tasks, -1, obs.shape[-1]),
                                actions.reshape(tasks, -1, *actions.shape[3:]), weights.reshape(tasks, -1),
                                lvc=self.inner_objective == "lvc")

    def inner_curvature(self, params: Params, episodes: Episodes) -> InnerCurvature:
        """Gradient and loss of every task's :meth:`inner_loss`, and the Hessian products of its
        :meth:`inner_objective_loss` (the same but with ``inner_objective = "lvc"``), at ``params`` (task axis),
        group by group of episodes (see ``chunk_samples``)."""
        hessians, weights = [], []
        for chunk, weight in self.chunks(episodes):
            hessians.append(self.inner_hessian(params, chunk))
            weights.append(weight)
        gradient = _weighted_sum([hessian.gradient for hessian in hessians], weights)
        loss = torch.stack([weight * hessian.loss for hessian, weight in zip(hessians, weights)]).sum(0)
        return InnerCurvature(gradient, loss, hessians, weights)

    def sampling_step(self, params: Params, episodes: Episodes, lr: float) -> tuple[Params, InnerCurvature | None]:
        """The inner step the sampler takes to act with (task axis, no graph): the adapted parameters and,
        for a second-order update, the curvature at ``params`` that the meta-update needs (else None)."""
        if self.first_order:
            return {k: v.detach() for k, v in self.inner_step(params, episodes, lr, first_order=True).items()}, None
        curvature = self.inner_curvature(params, episodes)
        return {k: (v - lr * curvature.gradient[k]).detach() for k, v in params.items()}, curvature

    def chunks(self, episodes: Episodes) -> list[tuple[Episodes, Tensor]]:
        """``episodes`` in groups of episodes (see ``chunk_samples``), each with its per-task weight [tasks]:
        its share of the task's taken steps, so that weighted sums of per-group masked means are the
        masked means over all the episodes."""
        num = episodes.episodes_per_task
        size = max(1, self.chunk_samples // (episodes.num_tasks * episodes.mask.shape[1]))
        if num <= size:
            return [(episodes, torch.ones(episodes.num_tasks, dtype=episodes.mask.dtype))]
        total = episodes.mask.sum((1, 2)).clamp_min(1.0)
        groups = [episodes.select(episodes=slice(i, i + size)) for i in range(0, num, size)]
        return [(group, group.mask.sum((1, 2)) / total) for group in groups]

    def inner_gradient(self, params: Params, episodes: Episodes) -> tuple[Params, Tensor]:
        """Per-task inner-loss gradients and losses [tasks], no graph; ``params`` with or without a task axis."""
        params_dim = 0 if self.policy.is_task_batched(params) else None
        per_task = vmap(grad_and_value(self.inner_loss), in_dims=(params_dim, 0, 0, 0, 0))
        # summed group by group: per-task gradients are [tasks, ...] per group, and a large evaluation
        # (1,000 tasks, 100+ groups) would otherwise hold them all at once
        gradient: Params = {}
        loss = torch.zeros(())
        with torch.no_grad():
            for chunk, weight in self.chunks(episodes):
                g, chunk_loss = per_task(params, *self._data(chunk))
                _add_weighted(gradient, g, weight)
                loss = loss + weight * chunk_loss
        return gradient, loss

    def inner_step(self, params: Params, episodes: Episodes, lr: float, first_order: bool | None = None) -> Params:
        """One gradient step per task on its episodes; ``params`` with or without a task axis -> with one.

        First order, the step is taken without a graph, group by group (see ``chunk_samples``);
        second order, it stays in the graph for an outer derivative.
        """
        first_order = self.first_order if first_order is None else first_order
        if first_order:
            g, _ = self.inner_gradient(params, episodes)
            return {k: params[k] - lr * g[k] for k in g}

        def step(p: Params, obs: Tensor, actions: Tensor, adv: Tensor, mask: Tensor) -> Params:
            return gradient_step(self.inner_objective_loss, p, lr, obs, actions, adv, mask, first_order=first_order)

        params_dim = 0 if self.policy.is_task_batched(params) else None
        return vmap(step, in_dims=(params_dim, 0, 0, 0, 0))(params, *self._data(episodes))

    def _step_sizes(self, episodes_list: Sequence[Episodes], lrs: Sequence[float] | None) -> list[float]:
        """One learning rate per batch of inner-step episodes (default: ``inner_lr`` for all)."""
        lrs = [self.inner_lr] * len(episodes_list) if lrs is None else [float(lr) for lr in lrs]
        if len(lrs) != len(episodes_list):
            raise ValueError(f"{len(episodes_list)} episode batches but {len(lrs)} learning rates")
        return lrs

    def adapt(
        self,
        params: Params,
        episodes_list: Sequence[Episodes],
        lrs: Sequence[float] | None = None,
        first_order: bool | None = None,
    ) -> Params:
        """Inner steps on ``episodes_list[k]`` with learning rate ``lrs[k]`` (default: ``inner_lr`` for all)."""
        lrs = self._step_sizes(episodes_list, lrs)
        if not episodes_list:
            raise ValueError("adapt needs at least one batch of episodes")
        for episodes, lr in zip(episodes_list, lrs):
            params = self.inner_step(params, episodes, lr, first_order)
        return params

    # ------------------------------------------------------------------ outer loop
    def surrogate_and_kl(
        self, dist: tuple[Tensor, ...], old_dist: tuple[Tensor, ...], valid: Episodes, per_task: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Surrogate loss S and mean KL(old || new) (scalars) of the post-adaptation distributions ``dist``.

        ``dist``/``old_dist`` are ``policy.dist_params`` outputs [tasks, T, E, k] on the
        valid observations; each task's terms are mask-weighted means, then tasks are averaged
        (``per_task``: not averaged, [tasks] each).
        """
        _, actions, adv, mask = self._data(valid)
        old_logp = self.policy.dist_log_prob(old_dist, actions)
        ratio = torch.exp(self.policy.dist_log_prob(dist, actions) - old_logp)
        surrogate = masked_mean(-ratio * adv, mask)
        kl = masked_mean(self.policy.kl(old_dist, dist), mask)
        return (surrogate, kl) if per_task else (surrogate.mean(), kl.mean())

    def scored_stages(self, num_steps: int) -> tuple[list[int], list[float]]:
        """The numbers of inner steps (0 = theta itself) after which the meta-objective scores the policy, and
        their weights (summing to 1): the last stage alone unless ``meta_step_weights`` (one per inner step)
        or ``meta_pre_weight`` say otherwise."""
        if num_steps == 0:
            return [0], [1.0]
        post = self.meta_step_weights if self.meta_step_weights is not None else [0.0] * (num_steps - 1) + [1.0]
        if len(post) != num_steps:
            raise ValueError(f"{num_steps} inner steps but {len(post)} meta_step_weights")
        weights = [self.meta_pre_weight, *post]
        total = sum(weights)
        stages = [k for k, w in enumerate(weights) if w > 0]
        return stages, [weights[k] / total for k in stages]

    @staticmethod
    def scored_episodes(train_episodes: Sequence[Episodes], valid_episodes: Episodes, stages: Sequence[int]) -> list[Episodes]:
        """The episodes each scored stage's policy sampled: train batch k after k inner steps (k < K), else valid
        (without inner steps, K = 0, theta's own valid batch)."""
        return [train_episodes[k] if k < len(train_episodes) else valid_episodes for k in stages]

    def stage_dists(
        self,
        params: Params,
        train_episodes: Sequence[Episodes],
        valid_episodes: Episodes,
        lrs: Sequence[float] | None = None,
        first_order: bool | None = None,
    ) -> list[tuple[Tensor, ...]]:
        """Per scored stage, the distribution parameters [tasks, T, E, k] of the policy adapted by that many
        inner steps (on ``train_episodes``) on the observations of the episodes it sampled."""
        stages, _ = self.scored_stages(len(train_episodes))
        lrs = self._step_sizes(train_episodes, lrs)
        scored = dict(zip(stages, self.scored_episodes(train_episodes, valid_episodes, stages)))
        out = []
        if 0 in scored:  # theta itself (no task axis yet): without inner steps, or with meta_pre_weight
            out.append(vmap(self.policy.dist_params, in_dims=(None, 0))(params, scored[0].observations))
        for step, (episodes, lr) in enumerate(zip(train_episodes, lrs)):
            params = self.inner_step(params, episodes, lr, first_order)
            if step + 1 in scored:
                out.append(vmap(self.policy.dist_params)(params, scored[step + 1].observations))
        return out

    def surrogate_and_kl_stages(
        self, dists: Sequence[tuple[Tensor, ...]], old_dists: Sequence[tuple[Tensor, ...]],
        episodes: Sequence[Episodes], weights: Sequence[float], per_task: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """:meth:`surrogate_and_kl` of each scored stage, combined with the stages' ``weights`` (see :meth:`scored_stages`)."""
        if not len(dists) == len(old_dists) == len(episodes) == len(weights):
            raise ValueError(f"{len(dists)} distributions, {len(old_dists)} old ones, {len(episodes)} batches, {len(weights)} weights")
        terms = [self.surrogate_and_kl(d, o, e, per_task) for d, o, e in zip(dists, old_dists, episodes)]
        return sum(w * t[0] for w, t in zip(weights, terms)), sum(w * t[1] for w, t in zip(weights, terms))

    def linearize(
        self,
        params: Params,
        train_episodes: Sequence[Episodes],
        valid_episodes: Episodes,
        lrs: Sequence[float] | None = None,
        first_order: bool | None = None,
        curvatures: Sequence[InnerCurvature] | None = None,
    ) -> AdaptationLinearization:
        """The scored stages' distributions (:meth:`stage_dists`), with J and J^T at params.

        ``params`` have no task axis. Every inner step is taken once; at each, the per-task inner
        Hessian is cached for its products (:class:`metarl.curvature.InnerLossHessian`), and at each
        scored stage's parameters the distributions' Jacobian (:class:`metarl.curvature.PolicyJacobian`).
        ``curvatures`` (second order only): the inner steps' :meth:`inner_curvature` at ``params``
        broadcast over the tasks and at each adapted point, as the sampler computed them on
        ``train_episodes``; they are used instead of being computed again.
        """
        first_order = self.first_order if first_order is None else first_order
        lrs = self._step_sizes(train_episodes, lrs)
        num_tasks = valid_episodes.num_tasks
        stages, weights = self.scored_stages(len(train_episodes))
        scored = dict(zip(stages, self.scored_episodes(train_episodes, valid_episodes, stages)))
        # one copy of theta per task (an expanded view): every product then keeps one result per task
        x = {k: v.detach().expand(num_tasks, *v.shape) for k, v in params.items()}
        if curvatures is not None and (first_order or len(curvatures) != len(train_episodes)):
            raise ValueError("curvatures are for second-order updates, one per batch of train episodes")

        def jacobian_on(episodes: Episodes) -> GroupedJacobian:
            # the distributions group by group of episodes (dim 2 of [tasks, T, E, k])
            groups = [chunk.observations for chunk, _ in self.chunks(episodes)]
            return GroupedJacobian([PolicyJacobian(self.policy, x, obs.reshape(num_tasks, -1, obs.shape[-1]))
                                    for obs in groups], [obs.shape[2] for obs in groups])

        used: list[InnerCurvature] = []
        jacobians: list[GroupedJacobian] = []
        inner_loss = None
        for step, (episodes, lr) in enumerate(zip(train_episodes, lrs)):
            if step in scored:
                jacobians.append(jacobian_on(scored[step]))
            if first_order:
                g, loss = self.inner_gradient(x, episodes)
            else:
                curvature = curvatures[step] if curvatures is not None else self.inner_curvature(x, episodes)
                g, loss = curvature.gradient, curvature.loss
                used.append(curvature)
            inner_loss = loss if inner_loss is None else inner_loss
            x = {k: (x[k] - lr * g[k]).detach() for k in x}
        jacobians.append(jacobian_on(valid_episodes))
        return AdaptationLinearization(
            stages=stages,
            weights=weights,
            inner_loss=None if inner_loss is None else inner_loss.detach(),
            lrs=lrs,
            curvatures=used,
            jacobians=jacobians,
        )

    def fisher_vector_product(
        self, lin: AdaptationLinearization, masks: Sequence[Tensor], like: Params
    ) -> Callable[[Tensor], Tensor]:
        """``v -> (H + damping I) v`` on flat vectors; H = J^T M J is the Hessian of the mean KL at theta.

        M is the distribution's Fisher at ``lin.dists`` weighted as in the mean KL: per scored stage
        by its episodes' ``masks[s]`` [tasks, T, E] over the task's taken steps, then averaged over
        tasks, then by the stages' weights. ``like``: theta's dict (shapes and order of the flat vectors).
        """
        weights = [(stage_weight * mask / mask.sum((1, 2), keepdim=True).clamp_min(1.0) / mask.shape[0]).unsqueeze(-1)
                   for stage_weight, mask in zip(lin.weights, masks, strict=True)]
        dists = lin.dists

        def fvp(v: Tensor) -> Tensor:
            jv = lin.jvp(unflatten(v, like))
            mjv = [tuple(w * t for t in self.policy.fisher_product(d, j)) for w, d, j in zip(weights, dists, jv)]
            return flatten(lin.vjp(mjv)) + self.cg_damping * v

        return fvp

    def step(
        self,
        params: Params,
        train_episodes: Sequence[Episodes],
        valid_episodes: Episodes,
        lrs: Sequence[float] | None = None,
        curvatures: Sequence[InnerCurvature] | None = None,
    ) -> tuple[Params, dict[str, float]]:
        """One TRPO meta-update of ``params`` (no task axis); returns (new params, info).

        ``curvatures``: optional, the sampler's :meth:`inner_curvature` of each inner step (see
        :meth:`linearize`), which then is not computed again.

        ``train_episodes[k]`` were used for inner step k and sampled by the policy adapted by the
        k steps before it; ``valid_episodes`` were sampled by ``adapt(params, train_episodes)``.
        Those sampling policies are the old policies of the importance ratios and of the KL at
        each scored stage. A step that does not lower the surrogate within the KL bound, or
        meets a NaN, is rejected and ``params`` come back unchanged.
        """
        theta0 = {k: v.detach() for k, v in params.items()}
        lin = self.linearize(theta0, train_episodes, valid_episodes, lrs, curvatures=curvatures)
        scored = self.scored_episodes(train_episodes, valid_episodes, lin.stages)
        stage_weights = lin.weights
        old_dists = lin.dists  # same values as the policies that sampled the scored episodes
        surrogate_of = lambda d: self.surrogate_and_kl_stages(d, old_dists, scored, stage_weights)[0]  # noqa: E731
        # dS/d(dist) is elementwise and cheap; J^T of it is the meta-gradient
        cotangent, surrogate = grad_and_value(surrogate_of)(old_dists)
        g = flatten(lin.vjp(cotangent))

        info: dict[str, float] = {
            "surrogate_before": surrogate.item(),
            # without inner steps (baselines) there is no inner loss: report 0
            "inner_loss": 0.0 if lin.inner_loss is None else lin.inner_loss.mean().item(),
            "grad_norm": g.norm().item(),
        }
        rejected = {k: v.clone() for k, v in theta0.items()}
        if not torch.isfinite(g).all() or not math.isfinite(info["surrogate_before"]):
            return rejected, self._rejected_info(info, nan=True)

        fisher_tasks = subsample_tasks(valid_episodes, self.fisher_subsample).num_tasks
        if fisher_tasks < valid_episodes.num_tasks:  # the first tasks' share of the cached passes
            lin = lin.first_tasks(fisher_tasks)
        fvp = self.fisher_vector_product(lin, [e.mask[:fisher_tasks] for e in scored], theta0)
        x, hx = conjugate_gradient(fvp, g, self.cg_iters)
        del fvp, lin  # free the maps before the line search
        shs = 0.5 * x.dot(hx)
        finite = bool(torch.isfinite(x).all() and torch.isfinite(shs))
        if not (finite and shs.item() > 0):
            return rejected, self._rejected_info(info, nan=not finite)
        full_step = -x * torch.sqrt(self.max_kl / shs)  # so that 0.5 s^T H s = max_kl at fraction 1
        info["step_norm"] = full_step.norm().item()
        step_dict = unflatten(full_step, theta0)
        # the line search's candidates are evaluated group of tasks by group: KL terms are >= 0, so once the
        # groups done so far put the mean over all tasks above max_kl the candidate is rejected without the rest
        num_tasks = valid_episodes.num_tasks
        size = -(-num_tasks // self.kl_check_groups)
        groups = [([e.select(tasks=slice(i, i + size)) for e in train_episodes], valid_episodes.select(tasks=slice(i, i + size)),
                   [e.select(tasks=slice(i, i + size)) for e in scored],
                   [tuple(t[i : i + size] for t in old) for old in old_dists]) for i in range(0, num_tasks, size)]

        @torch.no_grad()
        def evaluate(fraction: float) -> tuple[float, float]:
            # values only: the first-order adaptation gives the same adapted parameters
            candidate = {k: theta0[k] + fraction * step_dict[k] for k in theta0}
            loss = kl = 0.0
            for train, valid, episodes, old in groups:
                new_dists = self.stage_dists(candidate, train, valid, lrs, first_order=True)
                group_loss, group_kl = self.surrogate_and_kl_stages(new_dists, old, episodes, stage_weights, per_task=True)
                loss += group_loss.sum().item() / num_tasks
                kl += group_kl.sum().item() / num_tasks
                if not (math.isfinite(loss) and math.isfinite(kl)) or kl > self.max_kl:
                    break  # rejected: the KL is already above the bound (or not finite)
            return loss, kl

        result = backtracking_line_search(evaluate, info["surrogate_before"], self.max_kl, self.ls_ratio, self.ls_max_steps)
        info.update(
            surrogate_after=result.loss,
            surrogate_gain=info["surrogate_before"] - result.loss,
            kl=result.kl,
            ls_steps=float(result.steps),
            accepted=float(result.accepted),
            nan=float(result.nan),
            step_fraction=result.fraction,
        )
        if not result.accepted:
            return rejected, info
        return {k: theta0[k] + result.fraction * step_dict[k] for k in theta0}, info

    @staticmethod
    def _rejected_info(info: dict[str, float], nan: bool) -> dict[str, float]:
        before = info["surrogate_before"]
        return {**info, "step_norm": 0.0, "surrogate_after": before, "surrogate_gain": 0.0, "kl": 0.0,
                "ls_steps": 0.0, "accepted": 0.0, "nan": float(nan), "step_fraction": 0.0}
