"""Linear feature baseline (Duan et al. 2016), fitted per task by ridge least squares, batched over tasks.

Features of an observation ``o`` at step ``t`` are ``[o, o^2, s, s^2, s^3, 1]`` with
``s = t / 100``, optionally with ``o`` clipped to ``[-obs_clip, obs_clip]``. rllab's baseline (the
MAML paper's) clips at 10, which a running cheetah's joint velocities often exceed; unclipped
features learned faster in our cheetah runs (experiments/README.md), so clipping is off by default. Steps with
mask 0 have all-zero features, so they neither enter the fit nor receive a value. The normal equations are solved in float64 for all tasks at once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metarl.errors import UserError


def baseline_features(observations: Tensor, mask: Tensor, obs_clip: float = math.inf) -> Tensor:
    """observations [tasks, T, E, obs_dim], mask [tasks, T, E] -> features [tasks, T, E, 2*obs_dim + 4] float64."""
    obs = observations.to(torch.float64).clamp(-obs_clip, obs_clip)
    m = mask.to(torch.float64).unsqueeze(-1)
    steps = torch.arange(obs.shape[1], dtype=torch.float64) / 100.0
    s = steps.view(1, -1, 1, 1).expand(*obs.shape[:3], 1)
    feats = torch.cat([obs, obs.pow(2), s, s.pow(2), s.pow(3), torch.ones_like(s)], dim=-1)
    return feats * m


class LinearFeatureBaseline:
    """Per-task linear value function; ``fit`` then ``predict`` on the same tasks.

    ``reg_coeff`` is the initial ridge term; when a task's system is singular or its
    solution is not finite, that task's term is raised tenfold, up to 5 times. ``obs_clip``
    bounds the observations in the features (rllab: 10; ``math.inf``: no clipping).
    """

    max_raises = 5

    def __init__(self, reg_coeff: float = 1e-5, obs_clip: float = math.inf):
        if not obs_clip > 0:
            raise ValueError(f"obs_clip must be positive, got {obs_clip}")
        if not (reg_coeff > 0 and math.isfinite(reg_coeff)):  # a zero ridge term stays zero when raised tenfold
            raise ValueError(f"reg_coeff must be a positive number, got {reg_coeff}")
        self.reg_coeff = float(reg_coeff)
        self.obs_clip = float(obs_clip)
        self.weights: Tensor | None = None  # [tasks, num_features] float64

    def fit(self, observations: Tensor, returns: Tensor, mask: Tensor) -> "LinearFeatureBaseline":
        """observations [tasks, T, E, obs_dim], returns and mask [tasks, T, E]."""
        x = baseline_features(observations, mask, self.obs_clip).flatten(1, 2)  # [tasks, T*E, F]
        y = (returns.to(torch.float64) * mask.to(torch.float64)).reshape(x.shape[0], -1, 1)
        xtx = x.mT @ x
        xty = x.mT @ y
        eye = torch.eye(xtx.shape[-1], dtype=torch.float64)
        reg = torch.full((xtx.shape[0], 1, 1), self.reg_coeff, dtype=torch.float64)
        weights = torch.zeros_like(xty)
        todo = torch.ones(xtx.shape[0], dtype=torch.bool)
        for _ in range(self.max_raises + 1):
            # One task's system at a time: oneMKL's batched LU, given a batch whose features include columns that
            # stay zero (rllab's ant: contact forces of bodies that never touch), fails on entry to DLASWP with
            # two threads and never returns. Each single solve is bitwise the batched one where that works.
            idx = todo.nonzero().squeeze(1)
            results = [torch.linalg.solve_ex(xtx[k] + reg[k] * eye, xty[k]) for k in idx.tolist()]
            sol = torch.stack([r[0] for r in results])
            info = torch.stack([r[1] for r in results])
            ok = (info == 0) & torch.isfinite(sol).all(dim=(1, 2))
            weights[idx[ok]] = sol[ok]
            todo[idx[ok]] = False
            if not todo.any():
                break
            reg[todo] *= 10.0
        else:
            bad = todo.nonzero().squeeze(1).tolist()
            raise UserError(f"linear baseline fit failed for tasks {bad}: their observations or returns are not finite "
                            "(a diverged policy; is a step size too large?)")
        self.weights = weights.squeeze(-1)
        return self

    def predict(self, observations: Tensor, mask: Tensor) -> Tensor:
        """observations [tasks, T, E, obs_dim], mask [tasks, T, E] -> values [tasks, T, E] (dtype of observations)."""
        if self.weights is None:
            raise RuntimeError("LinearFeatureBaseline.predict called before fit")
        feats = baseline_features(observations, mask, self.obs_clip)
        values = torch.einsum("ktef,kf->kte", feats, self.weights)
        return values.to(observations.dtype)
