"""Adaptation curves: mean return after 0..k inner steps on held-out tasks, with 95% CIs.

The protocol follows the MAML paper: tasks come from a seed stream that training never
uses, every step rolls out ``episodes`` fresh episodes per task with the latest adapted
policy, step 1 uses ``inner_lr`` and later steps ``inner_lr * later_lr_scale``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from metarl.episodes import Episodes
from metarl.errors import UserError
from metarl.sampling import sample_episodes
from metarl.seeding import EVALUATE, derive_seed
from metarl.stats import mean_ci95
from metarl.training import TrainConfig, broadcast, load_run, make_env, make_learner, make_policy, step_sizes


def adaptation_rollouts(env, policy, learner, params: dict[str, Tensor], tasks: Sequence[dict],
                        lrs: Sequence[float], episodes: int, seed: int) -> Iterator[tuple[Episodes, dict[str, Tensor]]]:
    """Sample, step, sample, ...: yields the episodes after 0, 1, ..., ``len(lrs)`` inner steps.

    Each item is ``(episodes, task_params)``: the batch ``[tasks, T, E]`` and the task-batched
    parameters that sampled it (the last ones are the fully adapted policy). Rollout ``k`` is
    seeded from ``(EVALUATE, seed, k + 1)``, so every caller sees the same episodes.
    """
    task_params = broadcast(params, len(tasks))
    for k in range(len(lrs) + 1):
        batch = sample_episodes(env, policy, task_params, tasks, episodes, seed=derive_seed(EVALUATE, seed, k + 1))
        yield batch, task_params
        if k < len(lrs):
            adapted = learner.inner_step(task_params, learner.process(batch), lrs[k], first_order=True)
            task_params = {n: v.detach() for n, v in adapted.items()}


def adaptation_returns(
    config: TrainConfig,
    params: dict[str, Tensor],
    tasks: Sequence[dict],
    lrs: Sequence[float],
    episodes: int,
    seed: int,
) -> np.ndarray:
    """Per-task mean episode return before and after each inner step.

    Returns an array ``[len(lrs) + 1, len(tasks)]``: row ``k`` holds each task's mean return over
    ``episodes`` episodes sampled after ``k`` steps.
    """
    env = make_env(config, len(tasks), episodes)
    policy = make_policy(config, env)
    learner = make_learner(config, policy)
    try:
        rows = [batch.undiscounted_returns().mean(dim=1).double().numpy()  # [tasks]
                for batch, _ in adaptation_rollouts(env, policy, learner, params, tasks, lrs, episodes, seed)]
    finally:
        env.close()
    return np.stack(rows)


def summarize(per_task: np.ndarray) -> tuple[list[float], list[float]]:
    """Means over tasks and their 95% half-widths, one per step."""
    stats = [mean_ci95(row) for row in per_task]
    return [m for m, _ in stats], [c for _, c in stats]


def evaluate_run(run_dir: str | Path, num_tasks: int | None = None, steps: int | None = None, seed: int = 0,
                 episodes: int | None = None) -> dict[str, Any]:
    """Evaluate a trained run on held-out tasks; returns the JSON-ready result of ``metarl evaluate``."""
    config, state = load_run(run_dir)
    num_tasks = config.eval_tasks if num_tasks is None else num_tasks
    steps = config.eval_steps if steps is None else steps
    episodes = config.eval_episodes if episodes is None else episodes
    if num_tasks < 2:
        raise UserError(f"--tasks must be at least 2 (a confidence interval needs two tasks), got {num_tasks}")
    if steps < 0 or episodes < 1:
        raise UserError(f"--steps must be >= 0 and --episodes >= 1, got {steps} and {episodes}")
    torch.set_num_threads(config.num_threads)
    import envs

    tasks = envs.sample_tasks(config.env, num_tasks, seed=derive_seed(EVALUATE, seed, 0))
    lrs = step_sizes(config.inner_lr, steps, config.later_lr_scale)
    returns, ci95 = summarize(adaptation_returns(config, state["params"], tasks, lrs, episodes, seed))
    return {"env": config.env, "tasks": num_tasks, "episodes_per_step": episodes, "iteration": int(state["iteration"]),
            "step_sizes": lrs, "returns": returns, "ci95": ci95}


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of mean return +- 95% CI after each number of steps."""
    lines = [f"{result['env']}: {result['tasks']} held-out tasks, {result['episodes_per_step']} episodes per step",
             f"{'steps':>5}  {'mean return':>12}  {'95% CI':>8}"]
    for k, (r, c) in enumerate(zip(result["returns"], result["ci95"])):
        lines.append(f"{k:>5}  {r:>12.2f}  {c:>8.2f}")
    return "\n".join(lines)
