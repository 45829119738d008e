"""Adaptation curves: mean return after 0..k inner steps on held-out tasks, with 95% CIs.

The protocol follows the MAML paper: tasks come from a seed stream that training never
uses, every step rolls out ``episodes`` fresh episodes per task with the latest adapted
policy, step 1 uses ``inner_lr`` and later steps ``inner_lr * later_lr_scale``.

The paper's code counted its test batches in environment steps instead (whole episodes until
4,000 steps per task): ``batch_steps`` reproduces that rule. It matters where episodes end
early, as on 2D navigation once the policy reaches the goal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from metarl.episodes import Episodes
from metarl.errors import UserError
from metarl.sampling import sample_episodes, sample_step_counted
from metarl.seeding import EVALUATE, derive_seed
from metarl.stats import mean_ci95
from metarl.training import TrainConfig, broadcast, load_run, make_env, make_learner, make_policy, step_sizes


def adaptation_rollouts(env, policy, learner, params: dict[str, Tensor], tasks: Sequence[dict],
                        lrs: Sequence[float], episodes: int, seed: int,
                        batch_steps: int | None = None) -> Iterator[tuple[Episodes, dict[str, Tensor]]]:
    """Sample, step, sample, ...: yields the episodes after 0, 1, ..., ``len(lrs)`` inner steps.

    Each item is ``(episodes, task_params)``: the batch ``[tasks, T, E]`` and the task-batched
    parameters that sampled it (the last ones are the fully adapted policy). Rollout ``k`` is
    seeded from ``(EVALUATE, seed, k + 1)``, so every caller sees the same episodes. With
    ``batch_steps`` each rollout collects episodes by :func:`sample_step_counted` instead of
    ``episodes`` per task.
    """
    task_params = broadcast(params, len(tasks))
    for k in range(len(lrs) + 1):
        step_seed = derive_seed(EVALUATE, seed, k + 1)
        if batch_steps is None:
            batch = sample_episodes(env, policy, task_params, tasks, episodes, seed=step_seed)
        else:
            batch = sample_step_counted(env, policy, task_params, tasks, episodes, batch_steps, step_seed)
        yield batch, task_params
        if k < len(lrs):
            task_params = step_by_task_groups(learner, task_params, batch, lrs[k])
        del batch  # before the next rollout, which may be as large


# A step-counted batch is padded to the task that collected the most episodes, and among many tasks that
# one collects far more than the rest (1,000 navigation tasks: 537 episodes where 200 need at most 207), so
# its processing (returns, baseline features, advantages) and the inner step's policy activations would grow
# with tasks x that count. Groups of at most TASK_GROUP tasks, each trimmed to its own widest task and
# halved while they would hold more than GROUP_COLUMNS episode columns, bound it.
TASK_GROUP = 200
GROUP_COLUMNS = TASK_GROUP * 200  # tasks x episodes per group (200 navigation2d_steps tasks at 4,000 steps: up to 207)


def task_groups(collected: Tensor) -> list[slice]:
    """Consecutive task slices covering ``collected`` (``[tasks]`` episodes each task collected): at most
    ``TASK_GROUP`` tasks each, and at most ``GROUP_COLUMNS`` tasks x the slice's widest task unless it is one task."""
    groups, start = [], 0
    while start < len(collected):
        size = min(TASK_GROUP, len(collected) - start)
        while size > 1 and size * int(collected[start:start + size].max()) > GROUP_COLUMNS:
            size = (size + 1) // 2
        groups.append(slice(start, start + size))
        start += size
    return groups


def step_by_task_groups(learner, task_params: dict[str, Tensor], batch: Episodes, lr: float) -> dict[str, Tensor]:
    """Each task's first-order inner step on its episodes of ``batch`` (task-batched parameters in and out,
    no graph), processed by :func:`task_groups`, each group's episode axis cut to the episodes its tasks
    collected. Every task's step depends only on its own episodes, so up to float rounding this is one step
    on the whole batch (and exactly that when the batch is one group)."""
    collected = batch.collected().sum(1)  # [tasks]
    groups = []
    for tasks in task_groups(collected):
        group = batch if tasks == slice(0, batch.num_tasks) else batch.select(tasks=tasks)
        widest = int(collected[tasks].max())
        if widest < group.episodes_per_task:
            group = group.select(episodes=slice(0, widest))
        params = {n: v[tasks] for n, v in task_params.items()}
        groups.append(learner.inner_step(params, learner.process(group), lr, first_order=True))
    return {n: torch.cat([g[n] for g in groups]).detach() for n in groups[0]}


def adaptation_curve(
    config: TrainConfig,
    params: dict[str, Tensor],
    tasks: Sequence[dict],
    lrs: Sequence[float],
    episodes: int,
    seed: int,
    batch_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-task mean episode return, and the number of episodes it averages, before and after each inner step.

    Returns two arrays ``[len(lrs) + 1, len(tasks)]``: row ``k`` holds each task's mean return over
    the episodes sampled after ``k`` steps (``episodes`` of them, or as many as ``batch_steps`` takes)
    and their count.
    """
    env = make_env(config, len(tasks), episodes)
    policy = make_policy(config, env)
    learner = make_learner(config, policy)
    returns, counts = [], []
    try:
        for batch, _ in adaptation_rollouts(env, policy, learner, params, tasks, lrs, episodes, seed, batch_steps):
            returns.append(batch.mean_return().double().numpy())  # [tasks]
            counts.append(batch.collected().sum(1).double().numpy())
            del batch  # not held while the next rollout is sampled
    finally:
        env.close()
    return np.stack(returns), np.stack(counts)


def adaptation_returns(config: TrainConfig, params: dict[str, Tensor], tasks: Sequence[dict], lrs: Sequence[float],
                       episodes: int, seed: int, batch_steps: int | None = None) -> np.ndarray:
    """The returns of :func:`adaptation_curve`, ``[len(lrs) + 1, len(tasks)]``."""
    return adaptation_curve(config, params, tasks, lrs, episodes, seed, batch_steps)[0]


def protocol(config: TrainConfig, num_tasks: int | None, steps: int | None, episodes: int | None,
             batch_steps: int | None) -> tuple[int, int, int]:
    """``(tasks, steps, episodes)``: the config's evaluation protocol where an option is None; the one-line
    errors for bad ``--tasks``, ``--steps``, ``--episodes`` and ``--batch-steps`` (evaluate and compare)."""
    num_tasks = config.eval_tasks if num_tasks is None else num_tasks
    steps = config.eval_steps if steps is None else steps
    episodes = config.eval_episodes if episodes is None else episodes
    if num_tasks < 2:
        raise UserError(f"--tasks must be at least 2 (a confidence interval needs two tasks), got {num_tasks}")
    if steps < 0 or episodes < 1:
        raise UserError(f"--steps must be >= 0 and --episodes >= 1, got {steps} and {episodes}")
    if batch_steps is not None and batch_steps < 1:
        raise UserError(f"--batch-steps must be >= 1, got {batch_steps}")
    return num_tasks, steps, episodes


def held_out_tasks(env_id: str, num_tasks: int, seed: int, stream: int = EVALUATE) -> list[dict]:
    """Seed ``seed``'s draw of ``num_tasks`` tasks from ``stream`` (``EVALUATE``: the held-out tasks;
    ``VALIDATE``: the baselines' step-size tasks), streams training never uses."""
    import envs

    return envs.sample_tasks(env_id, num_tasks, seed=derive_seed(stream, seed, 0))


def check_seeds(seeds: Sequence[int]) -> None:
    """The one-line error for a negative seed, or an evaluation seed given twice (evaluate and compare pool
    draws by seed)."""
    negative = [seed for seed in seeds if seed < 0]
    if negative:
        raise UserError(f"--seed must be >= 0, got {negative[0]}")
    if len(set(seeds)) < len(seeds):
        raise UserError(f"--seed lists a seed twice ({' '.join(map(str, seeds))}): the same draw of tasks twice")


def describe_draws(result: dict[str, Any]) -> str:
    """``" (evaluation seeds 0, 1, 2)"`` for a result pooled over draws, else nothing; for table headings."""
    return f" (evaluation seeds {', '.join(map(str, result['seeds']))})" if "seeds" in result else ""


def describe_batches(result: dict[str, Any]) -> str:
    """How a result's batches were collected, for its table's heading."""
    if "batch_steps" in result:
        return f"whole episodes up to {result['batch_steps']} environment steps per task and step"
    return f"{result['episodes_per_step']} episodes per step"


def summarize(per_task: np.ndarray) -> tuple[list[float], list[float]]:
    """Means over tasks and their 95% half-widths, one per step."""
    stats = [mean_ci95(row) for row in per_task]
    return [m for m, _ in stats], [c for _, c in stats]


def per_task_entries(tasks: Sequence[dict], per_task: np.ndarray) -> list[dict[str, Any]]:
    """The JSON ``per_task`` list: each task with its mean return after each step (``per_task [steps + 1, tasks]``)."""
    return [{"task": task, "returns": [float(r) for r in per_task[:, i]]} for i, task in enumerate(tasks)]


def evaluate_run(run_dir: str | Path, num_tasks: int | None = None, steps: int | None = None, seed: int = 0,
                 episodes: int | None = None, batch_steps: int | None = None) -> dict[str, Any]:
    """Evaluate a trained run on held-out tasks; returns the JSON-ready result of ``metarl evaluate``.

    ``returns`` and ``ci95`` hold the mean over tasks and its 95% half-width after 0..steps steps;
    ``per_task`` lists each task (its parameters) with its own mean return after each step.

    With ``batch_steps`` every step collects whole episodes until each task has that many
    environment steps (the paper's test batches; ``episodes`` is then how many are sampled at a
    time) and the result adds ``batch_steps`` and ``episodes_collected`` (mean per task, per step).
    """
    config, state = load_run(run_dir)
    num_tasks, steps, episodes = protocol(config, num_tasks, steps, episodes, batch_steps)
    torch.set_num_threads(config.num_threads)
    tasks = held_out_tasks(config.env, num_tasks, seed)
    lrs = step_sizes(config.inner_lr, steps, config.later_lr_scale)
    per_task, counts = adaptation_curve(config, state["params"], tasks, lrs, episodes, seed, batch_steps)
    returns, ci95 = summarize(per_task)
    result = {"env": config.env, "tasks": num_tasks, "episodes_per_step": episodes, "iteration": int(state["iteration"]),
              "seed": seed, "step_sizes": lrs, "returns": returns, "ci95": ci95,
              "per_task": per_task_entries(tasks, per_task)}
    if batch_steps is not None:
        result.update(batch_steps=batch_steps, episodes_collected=[float(row.mean()) for row in counts])
    return result


def pool_results(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several :func:`evaluate_run` results of one run (different evaluation seeds) as one over all their tasks.

    ``returns`` and ``ci95`` are recomputed from the pooled per-task returns, as if the draws were one
    evaluation of ``sum(tasks)`` tasks; ``seed`` becomes ``seeds``. The draws must share everything else.
    """
    first = results[0]
    shared = {k: v for k, v in first.items() if k not in ("tasks", "seed", "returns", "ci95", "per_task",
                                                             "episodes_collected")}
    for other in results[1:]:
        if {k: other.get(k) for k in shared} != shared:
            raise ValueError("pool_results needs evaluations of one run under one protocol")
    per_task = [entry for result in results for entry in result["per_task"]]
    returns, ci95 = summarize(np.array([entry["returns"] for entry in per_task]).T)  # [steps + 1, tasks]
    pooled = {**shared, "tasks": len(per_task), "seeds": [r["seed"] for r in results], "returns": returns,
              "ci95": ci95, "per_task": per_task}
    if "episodes_collected" in first:
        weights = np.array([r["tasks"] for r in results], dtype=np.float64)
        collected = np.array([r["episodes_collected"] for r in results])  # [draws, steps + 1]
        pooled["episodes_collected"] = [float(x) for x in weights @ collected / weights.sum()]
    return pooled


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of mean return +- 95% CI after each number of steps."""
    if "batch_steps" in result:
        counts, header = [f"  {n:>8.1f}" for n in result["episodes_collected"]], f"  {'episodes':>8}"
    else:
        counts, header = [""] * len(result["returns"]), ""
    lines = [f"{result['env']}: {result['tasks']} held-out tasks{describe_draws(result)}, {describe_batches(result)}",
             f"{'steps':>5}  {'mean return':>12}  {'95% CI':>8}{header}"]
    for k, (r, c) in enumerate(zip(result["returns"], result["ci95"])):
        lines.append(f"{k:>5}  {r:>12.2f}  {c:>8.2f}{counts[k]}")
    return "\n".join(lines)
