"""A batch of few-shot tasks, task-major: the one type every supervised algorithm consumes."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class TaskBatch(NamedTuple):
    """``T`` tasks, each with a support set (adapt on it) and a query set (score on it).

    Regression: ``support_x [T, S, 1]`` float, ``support_y [T, S, 1]`` float.
    Classification: ``support_x [T, S, C, H, W]`` float in [0, 1], ``support_y [T, S]`` int64
    labels in ``0..ways-1`` (a fresh class-to-label assignment per task). Query tensors
    have the same layout with ``Q`` examples.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    def __len__(self) -> int:  # number of tasks
        return self.support_x.shape[0]
