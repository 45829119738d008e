"""Jacobian and inner-loss Hessian products of an MLP policy, by hand-written passes (Pearlmutter 1994).

A second-order meta-update applies, at fixed parameters, each task's inner-loss Hessian and the
Jacobian of the policy's distribution about twenty times each (every conjugate-gradient
iteration). Autograd's double backward re-derives, in every product, what is fixed at those
parameters: the activations, their derivatives and the backward signals. Here they are computed
once (:class:`MLPLinearization`), and a product is one forward pass of the tangent and/or one
reverse pass. A hidden-to-hidden layer then costs six matrix products in a Hessian product and
two in each Jacobian product.

The head (MLP output -> distribution, and for the inner loss -> weighted log-likelihood) is
elementwise and small, so its own derivatives come from ``torch.func``; only the MLP body is
differentiated by hand. Shapes: ``tasks`` parameter sets with a leading task axis, ``N``
samples per task; parameter dicts use the policy's keys (``l{k}.weight [out, in]``,
``l{k}.bias [out]``, then the head's, e.g. ``log_std``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import grad_and_value, vjp

from metarl.policies import Params, Policy


def _relu_derivatives(z: Tensor) -> tuple[Tensor, Tensor, None]:
    return torch.relu(z), (z > 0).to(z.dtype), None  # relu'' = 0 wherever it is defined


def _tanh_derivatives(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    h = torch.tanh(z)
    d1 = 1.0 - h * h
    return h, d1, -2.0 * h * d1


# activation -> z -> (activation(z), activation'(z), activation''(z) or None when it is 0)
ACTIVATION_DERIVATIVES: dict[str, Callable[[Tensor], tuple[Tensor, Tensor, Tensor | None]]] = {
    "relu": _relu_derivatives,
    "tanh": _tanh_derivatives,
}


def _first_tasks(value, n: int):
    """``value`` restricted to its first ``n`` tasks: tensors (and tensors in lists, tuples and dicts) sliced
    along their leading task axis as views; anything else (sizes, keys, the policy) as it is."""
    if isinstance(value, Tensor):
        return value[:n]
    if isinstance(value, (list, tuple)):
        return type(value)(_first_tasks(v, n) for v in value)
    if isinstance(value, dict):
        return {k: _first_tasks(v, n) for k, v in value.items()}
    return value


class MLPLinearization:
    """The policy's MLP at ``params`` (``[tasks, ...]``) on ``obs [tasks, N, obs_dim]``: the cached forward pass.

    ``out [tasks, N, out_dim]`` is the MLP's output, ``head_params`` the parameters of the head.
    """

    def __init__(self, policy: Policy, params: Params, obs: Tensor):
        if policy.activation not in ACTIVATION_DERIVATIVES:
            raise ValueError(f"no derivatives for activation {policy.activation!r}")
        derivatives = ACTIVATION_DERIVATIVES[policy.activation]
        self.policy = policy
        self.keys = list(params)
        self.last = len(policy.sizes) - 2  # index of the output layer
        self.weight = [params[f"l{i}.weight"].detach() for i in range(self.last + 1)]
        mlp_keys = {f"l{i}.{kind}" for i in range(self.last + 1) for kind in ("weight", "bias")}
        self.head_params: Params = {k: v.detach() for k, v in params.items() if k not in mlp_keys}
        self.inputs: list[Tensor] = []  # input of layer k, [tasks, N, in_k]
        self.d1: list[Tensor] = []  # activation' at hidden layer k's pre-activation
        self.d2: list[Tensor | None] = []  # activation'' there (None: zero)
        with torch.no_grad():
            h = obs
            for i in range(self.last + 1):
                self.inputs.append(h)
                z = torch.baddbmm(params[f"l{i}.bias"].detach().unsqueeze(1), h, self.weight[i].transpose(1, 2))
                if i < self.last:
                    h, d1, d2 = derivatives(z)
                    self.d1.append(d1)
                    self.d2.append(d2)
        self.out: Tensor = z

    def forward_tangent(self, w: Params) -> tuple[Tensor, list[Tensor | None], list[Tensor]]:
        """Tangent ``w`` of the parameters -> (tangent of ``out``, of each layer's input, of each hidden pre-activation).

        Rz_k = dW_k x_k + W_k Rx_k + db_k, Rx_{k+1} = act'(z_k) Rz_k (Rx_0 = 0: the observations are data).
        """
        r_inputs: list[Tensor | None] = [None]
        r_pre: list[Tensor] = []
        for i in range(self.last + 1):
            rz = torch.baddbmm(w[f"l{i}.bias"].unsqueeze(1), self.inputs[i], w[f"l{i}.weight"].transpose(1, 2))
            if r_inputs[i] is not None:
                rz = rz.baddbmm_(r_inputs[i], self.weight[i].transpose(1, 2))
            if i < self.last:
                r_pre.append(rz)
                r_inputs.append(self.d1[i] * rz)
        return rz, r_inputs, r_pre

    def backward(self, g_out: Tensor) -> tuple[Params, list[Tensor], list[Tensor]]:
        """Cotangent of ``out`` -> (the MLP parameters' cotangent, delta_k = d/dz_k, upstream_k = d/d(input of k + 1))."""
        delta, upstream = [g_out], []
        for i in range(self.last, 0, -1):
            e = torch.bmm(delta[0], self.weight[i])
            upstream.insert(0, e)
            delta.insert(0, self.d1[i - 1] * e)
        grads: Params = {}
        for i in range(self.last + 1):
            grads[f"l{i}.weight"] = torch.bmm(delta[i].transpose(1, 2), self.inputs[i])
            grads[f"l{i}.bias"] = delta[i].sum(1)
        return grads, delta, upstream

    def ordered(self, grads: Params) -> Params:
        """``grads`` in the order of the parameter dict."""
        return {k: grads[k] for k in self.keys}

    def _build_head(self) -> None:
        """(Re)build what the head's derivatives need from the cached tensors (subclasses)."""

    def first_tasks(self, n: int):
        """The same linearization on the first ``n`` tasks only: the caches as views, no pass recomputed."""
        restricted = object.__new__(type(self))
        restricted.__dict__.update({k: _first_tasks(v, n) for k, v in vars(self).items() if not callable(v)})
        restricted._build_head()
        return restricted


class PolicyJacobian(MLPLinearization):
    """J_f of the distribution parameters ``policy.dist_params`` with respect to the parameters, per task.

    ``dist`` holds the distribution parameters at ``params`` (each ``[tasks, N, k]``); ``jvp(w)``
    maps a parameter tangent (``[tasks, ...]``) to their tangents, ``vjp(u)`` a cotangent of them
    to the parameters' (``[tasks, ...]``).
    """

    def __init__(self, policy: Policy, params: Params, obs: Tensor):
        super().__init__(policy, params, obs)
        self._build_head()

    def _build_head(self) -> None:
        dist, self._head_vjp = vjp(self.policy.head, self.head_params, self.out)
        # u -> the head's vjp is linear in u, so its own vjp (at any u, zeros here) is the head's jvp
        _, self._head_jvp = vjp(self._head_vjp, tuple(torch.zeros_like(d) for d in dist))
        self.dist = tuple(d.detach() for d in dist)

    @torch.no_grad()
    def jvp(self, w: Params) -> tuple[Tensor, ...]:
        r_out, _, _ = self.forward_tangent(w)
        (tangent,) = self._head_jvp(({k: w[k] for k in self.head_params}, r_out))
        return tangent

    @torch.no_grad()
    def vjp(self, u: tuple[Tensor, ...]) -> Params:
        g_head, g_out = self._head_vjp(tuple(u))
        grads, _, _ = self.backward(g_out)
        return self.ordered({**grads, **g_head})


class InnerLossHessian(MLPLinearization):
    """``w -> H w`` per task for ``loss_i(p) = -sum_n weights[i, n] * log pi_p(actions[i, n] | obs[i, n])`` at ``params``.

    Args:
        policy: the MLP policy.
        params: one parameter set per task, every tensor ``[tasks, ...]``.
        obs: ``[tasks, N, obs_dim]``; actions ``[tasks, N, act_dim]`` (Gaussian) or ``[tasks, N]`` (categorical).
        weights: ``[tasks, N]``, e.g. ``mask * advantage / (taken steps of the task)``, 0 on padding.

    ``gradient`` and ``loss`` hold each task's gradient (``[tasks, ...]``) and loss (``[tasks]``) at
    ``params``. Calling it with a tangent ``w`` (same keys, ``[tasks, ...]``) returns ``H_i w_i`` for
    every task i in the same layout. Products are exact (not Gauss-Newton): the network's own
    curvature is included.

    ``lvc``: the Hessian is instead that of ``-sum_n weights[i, n] * pi_p(a|s) / pi_q(a|s)`` at p = q
    with q held fixed (the low-variance curvature objective of Rothfuss et al. 2019, ProMP), which
    adds ``-sum_n weights[i, n] g_n g_n^T``, g_n = d log pi / dp, to the Hessian above. The gradient and
    the loss reported are the same as without it (the ratio is 1 at p = q).
    """

    def __init__(self, policy: Policy, params: Params, obs: Tensor, actions: Tensor, weights: Tensor, lvc: bool = False):
        super().__init__(policy, params, obs)
        self.actions, self.weights, self.lvc = actions, weights, lvc
        g_head, g_out, loss = self._build_head()
        with torch.no_grad():
            grads, self.delta, self.upstream = self.backward(g_out.detach())
        self.gradient: Params = self.ordered({**grads, **{k: v.detach() for k, v in g_head.items()}})
        self.loss: Tensor = loss.detach()  # [tasks]

    def _build_head(self) -> tuple[Params, Tensor, Tensor]:
        policy, actions, weights, lvc = self.policy, self.actions, self.weights, self.lvc

        def head_loss(head: Params, out: Tensor) -> tuple[Tensor, Tensor]:
            log_prob = policy.dist_log_prob(policy.head(head, out), actions)
            per_task = -(weights * log_prob).sum(-1)
            # LVC: the likelihood ratio against a fixed copy of the policy; its value is 1 and its first
            # derivative that of log pi, but its second carries the score's outer product
            objective = -(weights * torch.exp(log_prob - log_prob.detach())).sum(-1) if lvc else per_task
            return objective.sum(), per_task  # tasks are independent: the sum's gradient is each task's

        # the head's gradient, and its Hessian in (head parameters, MLP output) as the vjp of that gradient
        (g_head, g_out), self._head_hessian, (_, loss) = vjp(
            grad_and_value(head_loss, argnums=(0, 1), has_aux=True), self.head_params, self.out, has_aux=True)
        return g_head, g_out, loss

    @torch.no_grad()
    def __call__(self, w: Params) -> Params:
        r_out, r_inputs, r_pre = self.forward_tangent(w)
        r_head, r_delta = self._head_hessian(({k: w[k] for k in self.head_params}, r_out))
        out: Params = dict(r_head)
        # reverse pass of the tangent: R(dW_k) = R(delta_k)^T x_k + delta_k^T R(x_k), and R(delta) down the layers
        for i in range(self.last, -1, -1):
            g_weight = torch.bmm(r_delta.transpose(1, 2), self.inputs[i])
            if r_inputs[i] is not None:
                g_weight = g_weight.baddbmm_(self.delta[i].transpose(1, 2), r_inputs[i])
            out[f"l{i}.weight"] = g_weight
            out[f"l{i}.bias"] = r_delta.sum(1)
            if i > 0:
                r_upstream = torch.bmm(r_delta, self.weight[i]).baddbmm_(self.delta[i], w[f"l{i}.weight"])
                r_delta = self.d1[i - 1] * r_upstream
                if self.d2[i - 1] is not None:
                    r_delta = r_delta + self.d2[i - 1] * r_pre[i - 1] * self.upstream[i - 1]
        return self.ordered(out)
