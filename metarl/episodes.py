"""Episodes of many tasks in one task-major container, and the returns computed from them.

Layout (see docs/architecture.md), float32 unless noted:

- ``observations [tasks, T, E, obs_dim]``: observation before the action at step t
- ``actions [tasks, T, E, act_dim]`` (Gaussian) or ``[tasks, T, E]`` int64 (categorical)
- ``rewards [tasks, T, E]``
- ``mask [tasks, T, E]``: 1.0 where step t was taken, 0.0 after the episode terminated (and in the
  padding episodes of a step-counted batch that a task did not collect)

Steps with mask 0 never contribute: rewards there are zeroed before any sum, and every
average is mask-weighted (:func:`masked_mean`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Episodes:
    """A batch of episodes, ``E`` per task over ``T`` steps; ``returns``/``advantages`` are filled by processing."""

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    returns: Tensor | None = None
    advantages: Tensor | None = None

    def __post_init__(self) -> None:
        lead = tuple(self.rewards.shape)
        if len(lead) != 3:
            raise ValueError(f"rewards must be [tasks, T, E], got shape {lead}")
        if tuple(self.mask.shape) != lead or tuple(self.observations.shape[:3]) != lead:
            raise ValueError(
                f"shape mismatch: rewards {lead}, mask {tuple(self.mask.shape)}, "
                f"observations {tuple(self.observations.shape)}"
            )
        if tuple(self.actions.shape[:3]) != lead:
            raise ValueError(f"actions {tuple(self.actions.shape)} do not start with [tasks, T, E] = {lead}")

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[0]

    @property
    def horizon(self) -> int:
        return self.rewards.shape[1]

    @property
    def episodes_per_task(self) -> int:
        return self.rewards.shape[2]

    def replace(self, **changes: Tensor) -> "Episodes":
        """A copy with some fields replaced (the tensors are shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def select(self, tasks: slice | Tensor = slice(None), episodes: slice = slice(None)) -> "Episodes":
        """Some tasks (a slice or a tensor of indices) and/or episodes of each task (contiguous copies),
        ``[tasks', T, E', ...]``."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Episodes(**{k: None if t is None else t[tasks, :, episodes].contiguous() for k, t in fields.items()})

    def undiscounted_returns(self) -> Tensor:
        """Total reward of each episode [tasks, E] (masked steps excluded)."""
        return (self.rewards * self.mask).sum(1)

    def collected(self) -> Tensor:
        """1.0 for each episode that took a step, else 0.0 [tasks, E] (an episode whose mask is all zero
        was not collected: see :func:`metarl.sampling.sample_step_counted`)."""
        return self.mask.amax(dim=1)

    def mean_return(self) -> Tensor:
        """Mean total reward per task [tasks] over the :meth:`collected` episodes."""
        collected = self.collected()
        return (self.undiscounted_returns() * collected).sum(1) / collected.sum(1).clamp_min(1.0)


def masked_mean(x: Tensor, mask: Tensor, dims: tuple[int, ...] = (-2, -1)) -> Tensor:
    """Mean of ``x`` over ``dims`` counting only entries where ``mask`` is 1 (``x``, ``mask`` same shape)."""
    return (x * mask).sum(dims) / mask.sum(dims).clamp_min(1.0)


def normalize_per_task(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """x [tasks, T, E] -> (x - mean) / (std + eps) per task, mask-weighted; masked entries become 0."""
    mean = masked_mean(x, mask)[:, None, None]
    var = masked_mean((x - mean).pow(2), mask)[:, None, None]
    return (x - mean) / (var.sqrt() + eps) * mask


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """R_t = sum_k gamma^k r_{t+k} over the taken steps; rewards, mask [tasks, T, E] -> [tasks, T, E]."""
    r = rewards * mask
    out = torch.empty_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1] - 1, -1, -1):
        running = r[:, t] + gamma * running
        out[:, t] = running
    return out * mask


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates [tasks, T, E].

    ``values [tasks, T, E]`` are baseline predictions at each step; the value after the
    last taken step is 0 (episodes end there or are cut at the horizon, as in the
    reference implementations). With ``lam = 1`` and zero values this is
    :func:`discounted_returns`.
    """
    r = rewards * mask
    v = values * mask
    v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)
    deltas = r + gamma * v_next - v
    out = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[:, 0])
    for t in range(deltas.shape[1] - 1, -1, -1):
        running = deltas[:, t] + gamma * lam * running
        out[:, t] = running
    return out * mask
