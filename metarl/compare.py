"""``metarl compare``: several runs (MAML and its baselines) adapted on the same held-out tasks.

This is the MAML paper's Figure 5 protocol (Finn et al. 2017, section 5.3). Every run is
evaluated on the same held-out tasks (the ``EVALUATE`` stream, the tasks ``metarl evaluate``
uses), with the same number of episodes per step and the same rollout seeds. MAML adapts
with its own protocol (``inner_lr`` for the first step, ``inner_lr * later_lr_scale``
after). The oracle, which observes the task, is not adapted (one value at every step, as the
paper's horizontal line). A baseline (pretrained, random) adapts with one step size for every step,
picked from a grid around its config's ``inner_lr`` by the best mean return after the last
step on separate validation tasks (the ``VALIDATE`` stream), as the paper tuned its
baselines' step sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from metarl.errors import UserError
from metarl.output_files import PLOT_SUFFIXES, check_output_file, writing
from metarl.seeding import VALIDATE, derive_seed

# the --batch-steps option of `metarl evaluate` and `metarl compare`
BATCH_STEPS_HELP = ("collect whole episodes until each task has N environment steps, as the paper's test scripts "
                    "did (4000); --episodes is then how many are sampled at a time")

if TYPE_CHECKING:
    from torch import Tensor

    from metarl.training import TrainConfig
# torch, the envs and the training modules are imported where they are used, so that building the
# CLI's parser (which registers this command) stays fast

LR_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # baseline step-size grid, as multiples of the config's inner_lr


def run_names(run_dirs: Sequence[Path], methods: Sequence[str]) -> list[str]:
    """Each run's method name; a method that several runs share gets ``method (dir name)``."""
    counts = Counter(methods)
    names = [m if counts[m] == 1 else f"{m} ({d.name})" for d, m in zip(run_dirs, methods)]
    if len(set(names)) < len(names):  # same method and same directory name: fall back to the full path
        names = [m if counts[m] == 1 else f"{m} ({d})" for d, m in zip(run_dirs, methods)]
    return names


def choose_step_size(config: TrainConfig, params: dict[str, Tensor], steps: int, episodes: int, num_tasks: int,
                     seed: int, scales: Sequence[float] = LR_SCALES,
                     batch_steps: int | None = None) -> tuple[float, dict[float, float]]:
    """The grid step size with the best mean return after ``steps`` steps on validation tasks.

    Returns the chosen step size and every candidate's validation mean return. Validation tasks
    and rollouts come from the ``VALIDATE`` stream, so they never coincide with the held-out ones.
    """
    from metarl.evaluation import adaptation_returns, held_out_tasks

    tasks = held_out_tasks(config.env, num_tasks, seed, stream=VALIDATE)
    rollout_seed = derive_seed(VALIDATE, seed, 1)
    scores = {}
    for scale in scales:
        lr = config.inner_lr * scale
        scores[lr] = float(adaptation_returns(config, params, tasks, [lr] * steps, episodes, rollout_seed,
                                              batch_steps)[-1].mean())
    best = max(scores, key=scores.get)  # first of equals: the grid's order breaks ties
    return best, scores


def compare_runs(run_dirs: Sequence[str | Path], num_tasks: int | None = None, steps: int | None = None,
                 episodes: int | None = None, seed: int | Sequence[int] = 0, val_tasks: int = 10,
                 lr_scales: Sequence[float] = LR_SCALES, log: Callable[[str], None] | None = None,
                 batch_steps: int | None = None) -> dict[str, Any]:
    """Adaptation curves of every run on the same held-out tasks; the JSON-ready result of ``metarl compare``.

    ``num_tasks``, ``steps`` and ``episodes`` default to the first run's ``eval_tasks``,
    ``eval_steps`` and ``eval_episodes``. Several evaluation seeds (``seed=[0, 1, 2]``) pool their
    draws of ``num_tasks`` tasks into one comparison over all of them (as ``metarl evaluate --seed``
    pools: means and intervals over the pooled per-task returns); a baseline's step size is chosen
    once, on the first seed's validation tasks. Returns ``{"env", "tasks" (all draws), "steps",
    "episodes_per_step", "seed" (or "seeds" for several), "methods": {name: {"run_dir", "method",
    "iteration", "step_sizes", "returns" [steps + 1],
    "ci95" [steps + 1], "per_task" [{"task", "returns" [steps + 1]}], "validation" (baselines: {step
    size: mean return})}}}``; every method's ``per_task`` lists the same tasks in the same order, so
    methods can be compared task by task (paired). ``log`` receives
    a line as each run starts. With ``batch_steps`` every rollout collects whole episodes until each
    task has that many environment steps (``metarl.sampling.sample_step_counted``) and the result
    adds ``"batch_steps"``.
    """
    import numpy as np
    import torch

    from metarl.evaluation import adaptation_returns, check_seeds, held_out_tasks, per_task_entries, protocol, summarize
    from metarl.training import load_run, run_dir_of, step_sizes

    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise UserError("compare needs at least one run directory")
    repeated = [d for d, n in Counter(run_dir_of(d).resolve() for d in run_dirs).items() if n > 1]
    if repeated:
        raise UserError(f"run directory given twice: {repeated[0]}")
    runs = [load_run(d) for d in run_dirs]
    first_dir, (first, _) = run_dirs[0], runs[0]
    for d, (config, _) in zip(run_dirs[1:], runs[1:]):
        if config.env != first.env:
            raise UserError(f"runs do not share an environment: {first_dir} is {first.env}, {d} is {config.env}")
    num_tasks, steps, episodes = protocol(first, num_tasks, steps, episodes, batch_steps)
    if val_tasks < 1:
        raise UserError(f"--val-tasks must be at least 1, got {val_tasks}")
    if not lr_scales or min(lr_scales) <= 0:
        raise UserError(f"step-size scales must be positive numbers, got {list(lr_scales)}")
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if not seeds:
        raise UserError("--seed needs at least one evaluation seed")
    check_seeds(seeds)
    draws = {s: held_out_tasks(first.env, num_tasks, s) for s in seeds}
    methods: dict[str, Any] = {}
    held_out = f"{num_tasks} tasks" if len(seeds) == 1 else f"{len(seeds)} draws of {num_tasks} tasks"
    for name, d, (config, state) in zip(run_names(run_dirs, [c.method for c, _ in runs]), run_dirs, runs):
        if log is not None:
            log(f"{name}: {'choosing the step size, then ' if config.method in ('pretrained', 'random') and steps else ''}"
                f"adapting on {held_out}")
        torch.set_num_threads(config.num_threads)
        entry: dict[str, Any] = {"run_dir": str(d), "method": config.method, "iteration": int(state["iteration"])}
        if config.method == "oracle":  # it observes the task, so it is not adapted: the paper's flat line
            lrs = []
        elif config.method == "maml" or steps == 0:
            lrs = step_sizes(config.inner_lr, steps, config.later_lr_scale)
        else:
            lr, scores = choose_step_size(config, state["params"], steps, episodes, val_tasks, seeds[0], lr_scales,
                                          batch_steps)
            lrs = [lr] * steps
            entry["validation"] = {f"{k:g}": v for k, v in scores.items()}
        per_task = np.concatenate([adaptation_returns(config, state["params"], tasks, lrs, episodes, s, batch_steps)
                                   for s, tasks in draws.items()], axis=1)  # [steps + 1, all tasks]
        if not lrs:  # not adapted: the same policy after every number of steps
            per_task = np.repeat(per_task, steps + 1, axis=0)
        returns, ci95 = summarize(per_task)
        methods[name] = {**entry, "step_sizes": lrs, "returns": returns, "ci95": ci95,
                         "per_task": per_task_entries([t for tasks in draws.values() for t in tasks], per_task)}
    result = {"env": first.env, "tasks": num_tasks * len(seeds), "steps": steps, "episodes_per_step": episodes,
              **({"seed": seeds[0]} if len(seeds) == 1 else {"seeds": seeds}),
              "validation_tasks": val_tasks, "methods": methods}
    if batch_steps is not None:
        result["batch_steps"] = batch_steps
    return result


def step_headings(steps: int) -> list[str]:
    """``["0 steps", "1 step", "2 steps", ...]``: the columns of an adaptation table after 0..steps steps."""
    return [f"{k} step{'s' if k != 1 else ''}" for k in range(steps + 1)]


def format_table(result: dict[str, Any]) -> str:
    """Mean return +- 95% CI of every method after 0..steps gradient steps, one row per method."""
    from metarl.evaluation import describe_batches, describe_draws

    width = max(len("method"), *(len(n) for n in result["methods"]))
    cells = step_headings(result["steps"])
    lines = [f"{result['env']}: {result['tasks']} held-out tasks{describe_draws(result)}, {describe_batches(result)}, "
             "mean return +- 95% CI",
             f"{'method':<{width}}  " + "  ".join(f"{c:>16}" for c in cells) + "  step sizes"]
    for name, m in result["methods"].items():
        values = "  ".join(f"{f'{r:.1f} +- {c:.1f}':>16}" for r, c in zip(m["returns"], m["ci95"]))
        lrs = ", ".join(f"{lr:g}" for lr in m["step_sizes"]) or "-"
        chosen = " (validated)" if "validation" in m else ""
        lines.append(f"{name:<{width}}  {values}  {lrs}{chosen}")
    return "\n".join(lines)


def plot_curves(result: dict[str, Any], path: str | Path) -> Path:
    """Mean return against gradient steps with 95% CI bands (the paper's Figure 5); oracle dashed."""
    path = Path(path)
    check_output_file(path, "--plot", PLOT_SUFFIXES)
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no display needed

    figure = Figure(figsize=(5, 3.6), layout="constrained")
    axes = figure.add_subplot()
    x = list(range(result["steps"] + 1))
    for name, m in result["methods"].items():
        low = [r - c for r, c in zip(m["returns"], m["ci95"])]
        high = [r + c for r, c in zip(m["returns"], m["ci95"])]
        style = "--" if m["method"] == "oracle" else "-"
        (line,) = axes.plot(x, m["returns"], style, marker="o", label=name)
        axes.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xticks(x)
    axes.set_xlabel("number of gradient steps")
    axes.set_ylabel("average return")
    axes.set_title(result["env"].removeprefix("metarl/"))
    axes.legend()
    with writing(path, "--plot"):
        figure.savefig(path, dpi=120)
    return path


def _run(args: argparse.Namespace) -> int:
    check_output_file(args.plot, "--plot", PLOT_SUFFIXES)  # fail before the long evaluation
    result = compare_runs(args.run_dirs, num_tasks=args.tasks, steps=args.steps, episodes=args.episodes,
                          seed=args.seed, val_tasks=args.val_tasks, batch_steps=args.batch_steps,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result) if args.json else format_table(result))
    if args.plot is not None:
        plot_curves(result, args.plot)
        if not args.json:
            print(f"plot: {args.plot}")
    return 0


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``metarl compare`` on the CLI's subparsers."""
    p = sub.add_parser("compare", help="adaptation curves of several runs on the same held-out tasks (paper Fig. 5)")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="runs of one env (maml, pretrained, ...)")
    p.add_argument("--tasks", type=int, help="held-out tasks (default: the first run's eval_tasks, 40)")
    p.add_argument("--steps", type=int, help="gradient steps (default: the first run's eval_steps, 3)")
    p.add_argument("--episodes", type=int, help="episodes per task and step (default: the first run's eval_episodes, 20)")
    p.add_argument("--batch-steps", type=int, metavar="N", help=BATCH_STEPS_HELP)
    p.add_argument("--val-tasks", type=int, default=10, help="validation tasks for the baselines' step sizes (default 10)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], metavar="S",
                   help="evaluation seed (streams disjoint from training); several seeds pool their draws of --tasks "
                        "tasks, the baselines' step sizes chosen on the first seed's validation tasks")
    p.add_argument("--plot", type=Path, metavar="FILE", help="write the return-vs-steps figure (.png, .pdf, .svg)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_run)
