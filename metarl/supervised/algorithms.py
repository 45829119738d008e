"""MAML, first-order MAML, Reptile and plain fine-tuning as pure functions of a parameter dict.

``loss_fn(params, x, y) -> scalar`` is one task's loss. Per-task work is batched over
tasks either with ``torch.func.vmap`` or a Python loop (``vmap_tasks``); both give
the same numbers.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from metarl.adaptation import Params, gradient_step
from metarl.supervised.tasks import TaskBatch

LossFn = Callable[[Params, Tensor, Tensor], Tensor]


def adapt(loss_fn: LossFn, params: Params, x: Tensor, y: Tensor, lr: float, steps: int, first_order: bool = False) -> Params:
    """``steps`` gradient steps of ``loss_fn`` on ``(x, y)`` from ``params`` (the MAML inner loop)."""
    for _ in range(steps):
        params = gradient_step(loss_fn, params, lr, x, y, first_order=first_order)
    return params


def per_task(fn: Callable[..., Tensor], tasks: TaskBatch, vmap_tasks: bool) -> Tensor:
    """``fn(support_x, support_y, query_x, query_y)`` for every task, stacked on a leading task axis."""
    if vmap_tasks:
        return torch.func.vmap(fn, randomness="error")(*tasks)
    return torch.stack([fn(*task) for task in zip(*tasks)])


def maml_loss(
    loss_fn: LossFn, params: Params, tasks: TaskBatch, lr: float, steps: int, first_order: bool, vmap_tasks: bool
) -> Tensor:
    """The MAML objective: mean over tasks of the query loss after ``steps`` inner steps on the support set.

    Differentiate it with respect to ``params`` for the meta-gradient; with
    ``first_order`` the inner gradients are constants (FOMAML).
    """

    def task_loss(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        return loss_fn(adapt(loss_fn, params, sx, sy, lr, steps, first_order), qx, qy)

    return per_task(task_loss, tasks, vmap_tasks).mean()


def maml_meta_gradient(
    loss_fn: LossFn, params: Params, tasks: TaskBatch, lr: float, steps: int, first_order: bool, vmap_tasks: bool
) -> tuple[Params, Tensor]:
    """``(d maml_loss / d params, maml_loss)``."""
    return torch.func.grad_and_value(lambda p: maml_loss(loss_fn, p, tasks, lr, steps, first_order, vmap_tasks))(params)


def reptile_step(
    loss_fn: LossFn, params: Params, tasks: TaskBatch, lr: float, steps: int, step_size: float, vmap_tasks: bool
) -> tuple[Params, Tensor]:
    """One Reptile update: ``theta + step_size * mean_i (phi_i - theta)``.

    ``phi_i`` is ``steps`` SGD steps from ``theta`` on task i's support and query data
    together. Returns the new parameters and the mean loss of ``theta`` on that data.
    """
    names = list(params)

    def adapted(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        x, y = torch.cat([sx, qx]), torch.cat([sy, qy])
        phi = adapt(loss_fn, params, x, y, lr, steps, first_order=True)
        # A flat vector per task, so vmap and the loop both stack to [tasks, n_params].
        return torch.cat([phi[k].reshape(-1) for k in names] + [loss_fn(params, x, y).reshape(1)])

    with torch.no_grad():
        out = per_task(adapted, tasks, vmap_tasks)
    phi_mean, loss = out[:, :-1].mean(0), out[:, -1].mean()
    new, offset = {}, 0
    for k in names:
        n = params[k].numel()
        new[k] = params[k] + step_size * (phi_mean[offset : offset + n].view_as(params[k]) - params[k])
        offset += n
    return new, loss


def adaptation_curve(
    loss_fn: LossFn,
    metric_fn: Callable[[Params, Tensor, Tensor], Tensor],
    params: Params,
    tasks: TaskBatch,
    lr: float,
    steps: int,
    vmap_tasks: bool,
    record_every_step: bool = True,
) -> Tensor:
    """Query metric per task after 0, 1, ..., ``steps`` SGD steps on the support set: ``[tasks, steps + 1]``.

    With ``record_every_step=False`` only 0 and ``steps`` are scored: ``[tasks, 2]``.
    """

    def curve(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        p, values = params, [metric_fn(params, qx, qy)]
        for step in range(1, steps + 1):
            p = gradient_step(loss_fn, p, lr, sx, sy, first_order=True)
            if record_every_step or step == steps:
                values.append(metric_fn(p, qx, qy))
        if steps == 0 and not record_every_step:
            values.append(values[0])
        return torch.stack([v.detach() for v in values])

    return per_task(curve, tasks, vmap_tasks)
