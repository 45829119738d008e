"""The two numerical pieces of a TRPO update: conjugate gradient and the backtracking line search.

Both work on flat vectors; :func:`flatten` / :func:`unflatten` convert parameter dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor


def flatten(tensors: Mapping[str, Tensor]) -> Tensor:
    """A dict of tensors -> one flat vector (dict order)."""
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def unflatten(vector: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`flatten`: split ``vector`` into tensors shaped as ``like``."""
    out, i = {}, 0
    for k, t in like.items():
        out[k] = vector[i : i + t.numel()].view_as(t)
        i += t.numel()
    return out


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> tuple[Tensor, Tensor]:
    """Approximately solve ``A x = b`` for symmetric positive definite ``A`` given only ``matvec(v) = A v``.

    Returns ``(x, A x)``; ``A x = b - r`` comes from the recursive residual ``r``, which
    saves the extra product TRPO would otherwise spend on ``x^T A x``.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r.dot(r)
    for _ in range(iters):
        if rr.item() < residual_tol:
            break
        ap = matvec(p)
        alpha = rr / p.dot(ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, b - r


@dataclass
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    ``fraction`` is the accepted multiple of the full step (0.0 when rejected);
    ``loss``/``kl`` are the values there (the values before the step when rejected);
    ``steps`` the number of candidates tried; ``nan`` whether a candidate was not finite.
    """

    accepted: bool
    fraction: float
    loss: float
    kl: float
    steps: int
    nan: bool


def backtracking_line_search(
    evaluate: Callable[[float], tuple[float, float]],
    loss_before: float,
    max_kl: float,
    ratio: float = 0.8,
    max_steps: int = 15,
) -> LineSearchResult:
    """Try fractions ``ratio**i`` (i = 0 .. max_steps-1) of a full step; accept the first that lowers the loss
    and keeps ``kl <= max_kl``.

    ``evaluate(fraction) -> (loss, kl)`` at ``params + fraction * full_step``. A non-finite
    loss or KL rejects the whole step at once (``nan`` is set): the direction is not to be
    trusted. When nothing is accepted the caller keeps its parameters unchanged.
    """
    for i in range(max_steps):
        fraction = ratio**i
        loss, kl = evaluate(fraction)
        if not (math.isfinite(loss) and math.isfinite(kl)):
            return LineSearchResult(False, 0.0, loss_before, 0.0, i + 1, True)
        if loss < loss_before and kl <= max_kl:
            return LineSearchResult(True, fraction, loss, kl, i + 1, False)
    return LineSearchResult(False, 0.0, loss_before, 0.0, max_steps, False)
