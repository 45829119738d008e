"""Stochastic MLP policies whose parameters are an explicit ``dict[str, Tensor]``.

A policy object holds only its architecture; the weights live in a plain dict, so an
adapted parameter set is just another dict and the policies of all tasks run in one
call with a leading task axis (``torch.func.vmap`` over that axis).

Both policies expose the same functional interface used by the MAML-TRPO core:

- ``dist_params(params, obs) -> tuple`` the distribution's parameters per observation
  (Gaussian: ``(mean, log_std)`` both ``[..., act_dim]``; categorical: ``(log_probs,)``, normalised
  logits ``[..., num_actions]``);
- ``log_prob(params, obs, actions) -> [...]`` and ``dist_log_prob(dist, actions)``;
- ``kl(old, new) -> [...]`` KL(old || new) between two ``dist_params`` tuples;
- ``fisher_product(dist, tangent) -> tuple`` the Fisher matrix of the distribution in
  the space of its parameters times a tangent there (used for Gauss-Newton
  Fisher-vector products in TRPO);
- ``act(task_params, obs)`` batched sampling for the sampler: one ``baddbmm`` per layer
  (``task_batched_mlp``), then ``head`` (MLP output -> distribution) and ``sample`` per class.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from metarl.errors import UserError

Params = dict[str, Tensor]

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


class _MLP:
    """Shared MLP body: Xavier-uniform weights, zero biases, ``l{i}.weight [out, in]``, ``l{i}.bias [out]``."""

    def __init__(self, in_dim: int, out_dim: int, hidden_sizes: Sequence[int], activation: str):
        if activation not in ACTIVATIONS:
            raise UserError(f"unknown activation {activation!r} (known: {', '.join(sorted(ACTIVATIONS))})")
        if in_dim < 1 or out_dim < 1 or any(int(h) < 1 for h in hidden_sizes):
            raise UserError(f"policy sizes must be positive, got in={in_dim}, out={out_dim}, hidden={tuple(hidden_sizes)}")
        self.sizes = [int(in_dim), *[int(h) for h in hidden_sizes], int(out_dim)]
        self.activation = activation
        self._act = ACTIVATIONS[activation]

    def init_mlp(self, generator: torch.Generator | None) -> Params:
        params: Params = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            weight = (torch.rand(fan_out, fan_in, generator=generator) * 2.0 - 1.0) * bound
            params[f"l{i}.weight"] = weight
            params[f"l{i}.bias"] = torch.zeros(fan_out)
        return params

    def mlp(self, params: Params, x: Tensor) -> Tensor:
        """x [..., in_dim] -> [..., out_dim] for one parameter set (no task axis)."""
        last = len(self.sizes) - 2
        for i in range(last + 1):
            x = torch.nn.functional.linear(x, params[f"l{i}.weight"], params[f"l{i}.bias"])
            if i < last:
                x = self._act(x)
        return x

    def task_batched_mlp(self, task_params: Params, x: Tensor) -> Tensor:
        """x [tasks, N, in_dim] -> [tasks, N, out_dim], one parameter set per task (equal to vmap of ``mlp``).

        One ``baddbmm`` per layer: the sampler calls this every time step, where vmap's
        per-call overhead was several times the arithmetic.
        """
        last = len(self.sizes) - 2
        for i in range(last + 1):
            weight, bias = task_params[f"l{i}.weight"], task_params[f"l{i}.bias"]
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            if i < last:
                x = self._act(x)
        return x

    def is_task_batched(self, params: Params) -> bool:
        """True if ``params`` has a leading task axis (``l0.weight`` is 3-d)."""
        return params["l0.weight"].dim() == 3

    @torch.no_grad()
    def act(
        self,
        task_params: Params,
        obs: Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> Tensor:
        """task_params with a task axis, obs [tasks, E, obs_dim] -> actions [tasks, E, act_dim] (Gaussian,
        float) or [tasks, E] (categorical, int64); random draws come from ``generator``."""
        dist = self.head(task_params, self.task_batched_mlp(task_params, obs))
        return self.sample(dist, generator, deterministic)


class GaussianMLPPolicy(_MLP):
    """Diagonal Gaussian with an MLP mean and a state-independent ``log_std [act_dim]``.

    ``action_scale [act_dim]`` (default 1) maps the network's units to the env's: the mean is
    ``action_scale * MLP(obs)`` and the std ``action_scale * exp(log_std)``. With the half-width of a
    symmetric action box as the scale, the network works in actions normalized to [-1, 1] whatever
    the env's bounds (as the MAML paper's code did), so ``init_std`` and step sizes mean the same on
    every env. All distribution parameters (``dist_params``, ``kl``, ``fisher_product``) are in the
    env's units.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        init_std: float = 1.0,
        action_scale: Sequence[float] | float = 1.0,
    ):
        super().__init__(obs_dim, act_dim, hidden_sizes, activation)
        if not init_std > 0:
            raise UserError(f"init_std must be positive, got {init_std}")
        self.obs_dim, self.act_dim, self.init_std = int(obs_dim), int(act_dim), float(init_std)
        self.action_scale = torch.broadcast_to(torch.as_tensor(action_scale, dtype=torch.float32), (self.act_dim,))
        if not bool((self.action_scale > 0).all()):
            raise UserError(f"action_scale must be positive, got {self.action_scale.tolist()}")
        self.log_action_scale = torch.log(self.action_scale)

    def init_params(self, generator: torch.Generator | None = None) -> Params:
        params = self.init_mlp(generator)
        params["log_std"] = torch.full((self.act_dim,), math.log(self.init_std))
        return params

    def dist_params(self, params: Params, obs: Tensor) -> tuple[Tensor, Tensor]:
        """obs [..., obs_dim] -> (mean, log_std), both [..., act_dim] (log_std broadcast per observation)."""
        return self.head(params, self.mlp(params, obs))

    def head(self, params: Params, out: Tensor) -> tuple[Tensor, Tensor]:
        """MLP output [..., act_dim] -> (mean, log_std) in the env's units; ``params`` with or without
        a task axis (then ``out`` is [tasks, N, act_dim])."""
        log_std = params["log_std"] + self.log_action_scale.to(out.dtype)
        if log_std.dim() == 2:  # task axis: one log_std per task, broadcast over the task's rows
            log_std = log_std.unsqueeze(1)
        return out * self.action_scale.to(out.dtype), log_std.expand_as(out)

    def log_prob(self, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
        """obs [..., obs_dim], actions [..., act_dim] -> log density [...] (nats)."""
        return self.dist_log_prob(self.dist_params(params, obs), actions)

    @staticmethod
    def dist_log_prob(dist: tuple[Tensor, Tensor], actions: Tensor) -> Tensor:
        """Log density [...] of actions [..., act_dim] under (mean, log_std)."""
        mean, log_std = dist
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @staticmethod
    def kl(old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]) -> Tensor:
        """KL(old || new) per observation [...], summed over action dimensions."""
        (mu0, ls0), (mu1, ls1) = old, new
        var_ratio = torch.exp(2 * (ls0 - ls1))
        return (ls1 - ls0 + 0.5 * (var_ratio + (mu0 - mu1).pow(2) * torch.exp(-2 * ls1)) - 0.5).sum(-1)

    @staticmethod
    def fisher_product(dist: tuple[Tensor, Tensor], tangent: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Fisher of N(mean, exp(log_std)^2) in (mean, log_std) coordinates: diag(1/std^2, 2)."""
        (_, log_std), (d_mean, d_log_std) = dist, tangent
        return d_mean * torch.exp(-2 * log_std), 2.0 * d_log_std

    @staticmethod
    def sample(dist: tuple[Tensor, Tensor], generator: torch.Generator | None, deterministic: bool) -> Tensor:
        """Actions [..., act_dim]: mean + std * noise, or the mean when deterministic."""
        mean, log_std = dist
        if deterministic:
            return mean
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + torch.exp(log_std) * noise


class CategoricalMLPPolicy(_MLP):
    """Categorical distribution over ``num_actions`` with MLP logits."""

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
    ):
        super().__init__(obs_dim, num_actions, hidden_sizes, activation)
        self.obs_dim, self.num_actions = int(obs_dim), int(num_actions)

    def init_params(self, generator: torch.Generator | None = None) -> Params:
        return self.init_mlp(generator)

    def dist_params(self, params: Params, obs: Tensor) -> tuple[Tensor]:
        """obs [..., obs_dim] -> (log-probabilities [..., num_actions],) (normalised logits)."""
        return self.head(params, self.mlp(params, obs))

    @staticmethod
    def head(params: Params, out: Tensor) -> tuple[Tensor]:
        """MLP output (logits) [..., num_actions] -> (log-probabilities,)."""
        return (torch.log_softmax(out, dim=-1),)

    def log_prob(self, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
        """obs [..., obs_dim], actions [...] int64 -> log probability [...]."""
        return self.dist_log_prob(self.dist_params(params, obs), actions)

    @staticmethod
    def dist_log_prob(dist: tuple[Tensor], actions: Tensor) -> Tensor:
        """Log probability [...] of actions [...] int64 under (log-probabilities,)."""
        (logp,) = dist
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def kl(old: tuple[Tensor], new: tuple[Tensor]) -> Tensor:
        """KL(old || new) per observation [...]."""
        (lp0,), (lp1,) = old, new
        return (lp0.exp() * (lp0 - lp1)).sum(-1)

    @staticmethod
    def fisher_product(dist: tuple[Tensor], tangent: tuple[Tensor]) -> tuple[Tensor]:
        """Fisher of softmax(logits) in logit coordinates: (diag(p) - p p^T) u."""
        (logp,), (u,) = dist, tangent
        p = logp.exp()
        return (p * (u - (p * u).sum(-1, keepdim=True)),)

    @staticmethod
    def sample(dist: tuple[Tensor], generator: torch.Generator | None, deterministic: bool) -> Tensor:
        """Actions [...] int64: a categorical draw, or the most probable action when deterministic."""
        (logp,) = dist
        if deterministic:
            return logp.argmax(-1)
        flat = logp.exp().reshape(-1, logp.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).reshape(logp.shape[:-1])


Policy = GaussianMLPPolicy | CategoricalMLPPolicy


def make_policy(
    kind: str,
    obs_dim: int,
    act_dim_or_n: int,
    hidden_sizes: Sequence[int] = (100, 100),
    activation: str = "relu",
    init_std: float = 1.0,
    action_scale: Sequence[float] | float | Tensor = 1.0,
) -> Policy:
    """``kind`` is ``"gaussian"`` (continuous actions) or ``"categorical"`` (discrete actions)."""
    if kind == "gaussian":
        return GaussianMLPPolicy(obs_dim, act_dim_or_n, hidden_sizes, activation, init_std, action_scale)
    if kind == "categorical":
        return CategoricalMLPPolicy(obs_dim, act_dim_or_n, hidden_sizes, activation)
    raise UserError(f"unknown policy kind {kind!r} (known: categorical, gaussian)")
