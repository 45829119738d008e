"""The functional inner-loop update shared by meta-RL and supervised MAML.

Parameters are plain ``dict[str, Tensor]``; an update returns a new dict and never
mutates its input, so adaptation is a pure function that composes with
``torch.func.vmap`` (one set of adapted parameters per task) and with outer
autograd (second-order MAML differentiates through it).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor

Params = dict[str, Tensor]


def gradient_step(
    loss_fn: Callable[..., Tensor],
    params: Mapping[str, Tensor],
    lr: float | Tensor,
    *args,
    first_order: bool = False,
) -> Params:
    """One step ``theta' = theta - lr * d loss_fn(theta, *args) / d theta``.

    ``loss_fn(params, *args)`` must return a scalar. With ``first_order=False`` the
    step stays in the graph, so a loss evaluated at ``theta'`` can be differentiated
    with respect to ``theta`` through this step (Hessian terms included). With
    ``first_order=True`` the inner gradient is treated as a constant: the outer
    gradient is then the gradient at ``theta'`` (first-order MAML).
    """
    grads = torch.func.grad(loss_fn)(dict(params), *args)
    if first_order:
        grads = {k: g.detach() for k, g in grads.items()}
    return {k: p - lr * grads[k] for k, p in params.items()}
