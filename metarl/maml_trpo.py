"""MAML with a vanilla-policy-gradient inner loop and a TRPO outer loop (Finn et al. 2017, Sec. 5.3).

For each task i the inner loop adapts the meta-parameters theta on that task's
episodes, ``theta'_i = theta - alpha * grad L_i(theta)`` (possibly several steps, each
on fresh episodes of the latest adapted policy); all tasks are adapted in one call with
``torch.func.vmap``. The outer loop maximises the importance-weighted return of the
post-adaptation policies subject to a bound on their mean KL from the policies that
sampled the post-adaptation episodes:

    min_theta  S(theta) = mean_i E_i[ -pi_theta'_i(a|s) / pi_old_i(a|s) * A ]
    s.t.       KL(theta) = mean_i E_i[ KL(pi_old_i(.|s) || pi_theta'_i(.|s)) ] <= max_kl

E_i is the mask-weighted mean over the task's taken steps. The step direction solves
``H x = grad S`` by conjugate gradient, where H is the Hessian of KL at theta. Because KL
is zero with zero gradient there, H is exactly the Gauss-Newton matrix ``J^T M J``: J is
the Jacobian of the post-adaptation distribution parameters (per step) with respect to
theta, through the adaptation, and M the distribution's Fisher matrix in those
parameters. One reverse pass with ``create_graph`` gives ``u -> J^T u`` as a graph that is
linear in u; differentiating it w.r.t. u gives ``v -> J v``. That graph and the forward
graph are built once per meta-update and reused by every conjugate-gradient iteration.
With ``first_order`` the adaptation counts as ``theta'_i = theta + const_i`` in both the
meta-gradient and J.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.func import vmap

from metarl.adaptation import gradient_step
from metarl.baselines import LinearFeatureBaseline
from metarl.episodes import Episodes, discounted_returns, gae, masked_mean, normalize_per_task
from metarl.policies import Params, Policy
from metarl.trpo import backtracking_line_search, conjugate_gradient, flatten, unflatten


class MAMLTRPO:
    """The MAML-TRPO algorithm on parameter dicts; the sampler and the loop live in ``metarl.training``."""

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
    ):
        self.policy = policy
        self.inner_lr = float(inner_lr)
        self.first_order = bool(first_order)
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.max_kl, self.cg_iters, self.cg_damping = float(max_kl), int(cg_iters), float(cg_damping)
        self.ls_ratio, self.ls_max_steps = float(ls_ratio), int(ls_max_steps)
        self.normalize_advantages = bool(normalize_advantages)
        self.baseline_reg = float(baseline_reg)

    # ------------------------------------------------------------------ advantages
    def process(self, episodes: Episodes) -> Episodes:
        """Fill ``returns`` and ``advantages`` [tasks, T, E]: GAE against a linear baseline fitted per task."""
        returns = discounted_returns(episodes.rewards, episodes.mask, self.gamma)
        baseline = LinearFeatureBaseline(self.baseline_reg).fit(episodes.observations, returns, episodes.mask)
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

    def inner_step(self, params: Params, episodes: Episodes, lr: float, first_order: bool | None = None) -> Params:
        """One gradient step per task on its episodes; ``params`` with or without a task axis -> with one."""
        first_order = self.first_order if first_order is None else first_order

        def step(p: Params, obs: Tensor, actions: Tensor, adv: Tensor, mask: Tensor) -> Params:
            return gradient_step(self.inner_loss, p, lr, obs, actions, adv, mask, first_order=first_order)

        params_dim = 0 if self.policy.is_task_batched(params) else None
        return vmap(step, in_dims=(params_dim, 0, 0, 0, 0))(params, *self._data(episodes))

    def adapt(
        self,
        params: Params,
        episodes_list: Sequence[Episodes],
        lrs: Sequence[float] | None = None,
        first_order: bool | None = None,
    ) -> Params:
        """Inner steps on ``episodes_list[k]`` with learning rate ``lrs[k]`` (default: ``inner_lr`` for all)."""
        lrs = [self.inner_lr] * len(episodes_list) if lrs is None else list(lrs)
        if len(lrs) != len(episodes_list):
            raise ValueError(f"{len(episodes_list)} episode batches but {len(lrs)} learning rates")
        if not episodes_list:
            raise ValueError("adapt needs at least one batch of episodes")
        for episodes, lr in zip(episodes_list, lrs):
            params = self.inner_step(params, episodes, lr, first_order)
        return params

    # ------------------------------------------------------------------ outer loop
    def surrogate_and_kl(
        self, dist: tuple[Tensor, ...], old_dist: tuple[Tensor, ...], valid: Episodes
    ) -> tuple[Tensor, Tensor]:
        """Surrogate loss S and mean KL(old || new) (scalars) of the post-adaptation distributions ``dist``.

        ``dist``/``old_dist`` are ``policy.dist_params`` outputs [tasks, T, E, k] on the
        valid observations; each task's terms are mask-weighted means, then tasks are averaged.
        """
        _, actions, adv, mask = self._data(valid)
        old_logp = self.policy.dist_log_prob(old_dist, actions)
        ratio = torch.exp(self.policy.dist_log_prob(dist, actions) - old_logp)
        surrogate = masked_mean(-ratio * adv, mask).mean()
        kl = masked_mean(self.policy.kl(old_dist, dist), mask).mean()
        return surrogate, kl

    def post_adaptation_dist(
        self,
        params: Params,
        train_episodes: Sequence[Episodes],
        valid_episodes: Episodes,
        lrs: Sequence[float] | None = None,
        first_order: bool | None = None,
    ) -> tuple[Tensor, ...]:
        """Distribution parameters [tasks, T, E, k] of ``adapt(params, train_episodes)`` on the valid observations."""
        adapted = self.adapt(params, train_episodes, lrs, first_order)
        return vmap(self.policy.dist_params)(adapted, valid_episodes.observations)

    def step(
        self,
        params: Params,
        train_episodes: Sequence[Episodes],
        valid_episodes: Episodes,
        lrs: Sequence[float] | None = None,
    ) -> tuple[Params, dict[str, float]]:
        """One TRPO meta-update of ``params`` (no task axis); returns (new params, info).

        ``train_episodes[k]`` were used for inner step k and ``valid_episodes`` sampled by
        ``adapt(params, train_episodes)``: that adapted policy is the old policy of the
        importance ratio and of the KL. A step that does not lower the surrogate within the
        KL bound, or meets a NaN, is rejected and ``params`` come back unchanged.
        """
        theta = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        with torch.no_grad():
            inner_loss = vmap(self.inner_loss, in_dims=(None, 0, 0, 0, 0))(params, *self._data(train_episodes[0]))

        dist = self.post_adaptation_dist(theta, train_episodes, valid_episodes, lrs)
        old_dist = tuple(d.detach() for d in dist)  # same values as the policy that sampled valid_episodes
        surrogate, _ = self.surrogate_and_kl(dist, old_dist, valid_episodes)
        # dS/d(dist) is elementwise and cheap; the meta-gradient J^T dS/d(dist) comes out of the FVP set-up.
        cotangent = torch.autograd.grad(surrogate, dist, retain_graph=True)
        fvp, g = self._fisher_vector_product(theta, dist, old_dist, valid_episodes.mask, cotangent)

        info: dict[str, float] = {
            "surrogate_before": surrogate.item(),
            "inner_loss": inner_loss.mean().item(),
            "grad_norm": g.norm().item(),
        }
        rejected = {k: v.detach().clone() for k, v in params.items()}
        if not torch.isfinite(g).all() or not math.isfinite(info["surrogate_before"]):
            return rejected, self._rejected_info(info, nan=True)

        x, hx = conjugate_gradient(fvp, g, self.cg_iters)
        shs = 0.5 * x.dot(hx)
        finite = bool(torch.isfinite(x).all() and torch.isfinite(shs))
        if not (finite and shs.item() > 0):
            return rejected, self._rejected_info(info, nan=not finite)
        full_step = -x * torch.sqrt(self.max_kl / shs)  # so that 0.5 s^T H s = max_kl at fraction 1
        info["step_norm"] = full_step.norm().item()
        del dist, fvp  # free the graphs before the line search

        theta0 = {k: v.detach() for k, v in theta.items()}
        step_dict = unflatten(full_step, theta0)

        @torch.no_grad()
        def evaluate(fraction: float) -> tuple[float, float]:
            candidate = {k: theta0[k] + fraction * step_dict[k] for k in theta0}
            new_dist = self.post_adaptation_dist(candidate, train_episodes, valid_episodes, lrs, first_order=True)
            loss, kl = self.surrogate_and_kl(new_dist, old_dist, valid_episodes)
            return loss.item(), kl.item()

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

    def _fisher_vector_product(
        self,
        theta: Params,
        dist: tuple[Tensor, ...],
        old_dist: tuple[Tensor, ...],
        mask: Tensor,
        cotangent: tuple[Tensor, ...],
    ) -> tuple[Callable[[Tensor], Tensor], Tensor]:
        """``(v -> (H + damping I) v, J^T cotangent)`` on flat vectors; H is the Hessian of the mean KL at theta.

        ``dist`` are the post-adaptation distribution parameters [tasks, T, E, k] still in
        the graph of ``theta`` and J their Jacobian w.r.t. theta; H = J^T M J where M is the
        distribution's Fisher weighted by mask / (taken steps of the task) / tasks, as in
        the mean KL. ``J^T u`` is built once as a graph linear in u, evaluated at
        u = ``cotangent``; its derivative w.r.t. u in direction v is ``J v``.
        """
        leaves = list(theta.values())
        weights = (mask / mask.sum((1, 2), keepdim=True).clamp_min(1.0) / mask.shape[0]).unsqueeze(-1)
        u = tuple(c.detach().requires_grad_(True) for c in cotangent)
        jt_u = torch.autograd.grad(dist, leaves, grad_outputs=u, create_graph=True)

        def fvp(v: Tensor) -> Tensor:
            jv = torch.autograd.grad(jt_u, u, grad_outputs=list(unflatten(v, theta).values()), retain_graph=True)
            mjv = tuple(weights * t for t in self.policy.fisher_product(old_dist, jv))
            hv = torch.autograd.grad(dist, leaves, grad_outputs=mjv, retain_graph=True)
            return flatten(dict(zip(theta, hv))) + self.cg_damping * v

        return fvp, flatten(dict(zip(theta, jt_u))).detach()
