"""Sinusoid regression tasks of the MAML paper: y = A sin(x - phi).

A ~ U[0.1, 5], phi ~ U[0, pi], inputs x ~ U[-5, 5].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metarl.supervised.tasks import TaskBatch

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


def _uniform(n: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def sinusoid(x: Tensor, amplitude: Tensor, phase: Tensor) -> Tensor:
    """``A sin(x - phi)`` with ``amplitude, phase [T]`` broadcast over ``x [T, N, 1]``."""
    return amplitude[:, None, None] * torch.sin(x - phase[:, None, None])


def sample_sinusoid_tasks(
    n_tasks: int, shots: int, query: int, generator: torch.Generator
) -> tuple[TaskBatch, Tensor, Tensor]:
    """``n_tasks`` tasks with ``shots`` support and ``query`` query points each.

    Returns the batch (``x, y [T, N, 1]``) and the tasks' ``amplitude [T]`` and ``phase [T]``.
    """
    amplitude = _uniform((n_tasks,), *AMPLITUDE, generator)
    phase = _uniform((n_tasks,), *PHASE, generator)
    support_x = _uniform((n_tasks, shots, 1), *X_RANGE, generator)
    query_x = _uniform((n_tasks, query, 1), *X_RANGE, generator)
    batch = TaskBatch(support_x, sinusoid(support_x, amplitude, phase), query_x, sinusoid(query_x, amplitude, phase))
    return batch, amplitude, phase
