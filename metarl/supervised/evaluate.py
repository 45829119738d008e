"""Evaluation of a trained run on held-out tasks (mean and 95% CI), and the sinusoid figure."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from metarl.adaptation import Params
from metarl.checkpoint import load_checkpoint
from metarl.config import build_config
from metarl.errors import UserError
from metarl.output_files import PLOT_SUFFIXES, check_output_file, writing
from metarl.seeding import VALIDATE, derive_seed
from metarl.stats import mean_ci95
from metarl.supervised.algorithms import adapt, adaptation_curve
from metarl.supervised.config import SupervisedConfig
from metarl.supervised.nets import mlp_forward
from metarl.supervised.problems import Problem, make_problem, mse_loss
from metarl.supervised.sinusoid import X_RANGE, sample_sinusoid_tasks, sinusoid
from metarl.supervised.tasks import TaskBatch
from metarl.supervised.train import CHECKPOINT

CHUNK = 50  # held-out tasks scored per batch: bounds memory for image tasks


def load_run(run_dir: str | Path) -> tuple[SupervisedConfig, dict]:
    """The config and checkpoint state of a run folder written by ``train``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    state = load_checkpoint(run_dir / CHECKPOINT)
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("params"), dict):
        raise UserError(f"checkpoint {run_dir / CHECKPOINT} is not a supervised run (no config or params)")
    return build_config(SupervisedConfig, state["config"], str(run_dir / CHECKPOINT)), state


def _scores(problem: Problem, params: Params, sample: Callable[[int, torch.Generator, int], TaskBatch],
            n_tasks: int, seed: int, shots: int, lr: float, steps: int, vmap_tasks: bool,
            desc: str) -> np.ndarray:
    """The metric per task after 0..``steps`` steps of ``lr`` (regression) or after 0 and ``steps``
    (classification): ``[n_tasks, steps recorded]``, on ``n_tasks`` tasks of ``sample`` drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    regression = problem.metric == "mse"
    values = []
    with tqdm(total=n_tasks, desc=desc, unit="task", leave=False, disable=regression) as bar:
        for start in range(0, n_tasks, CHUNK):
            batch = sample(min(CHUNK, n_tasks - start), generator, shots)
            values.append(adaptation_curve(problem.loss_fn, problem.metric_fn, params, batch, lr, steps,
                                           vmap_tasks, record_every_step=regression))
            bar.update(len(batch))
    return torch.cat(values).double().numpy()


def evaluate(
    config: SupervisedConfig, params: Params, tasks: int | None = None, shots: int | None = None,
    steps: int | None = None, inner_lrs: Sequence[float] | None = None, val_tasks: int = 100,
) -> dict:
    """Fine-tune ``params`` on held-out tasks and score the query sets.

    Sinusoid: MSE after 0..``eval_steps`` steps. Images: accuracy after ``eval_steps``
    steps. ``tasks``, ``shots`` and ``steps`` override the config's ``eval_tasks``,
    ``shots`` and ``eval_steps``. Held-out tasks come from ``eval_seed``, so every run
    sees the same tasks. ``inner_lrs`` overrides the test step size (the config's
    ``eval_inner_lr``, else ``inner_lr``); given several, the one with the best metric after
    the last step on ``val_tasks`` validation tasks is used (images: tasks of the training
    classes as read, never the test classes; sinusoid: tasks from another seed), and
    every candidate's validation score is returned under ``validation``.
    """
    torch.set_num_threads(config.threads)
    n_tasks = config.eval_tasks if tasks is None else tasks
    shots = config.shots if shots is None else shots
    steps = config.eval_steps if steps is None else steps
    lrs = [config.test_inner_lr] if inner_lrs is None else list(inner_lrs)
    for option, value, least in (("--tasks", n_tasks, 1), ("--val-tasks", val_tasks, 1), ("--shots", shots, 1),
                                 ("--steps", steps, 0)):
        if value < least:
            raise UserError(f"{option} must be >= {least}, got {value}")
    if not lrs or not all(lr > 0 and math.isfinite(lr) for lr in lrs):
        raise UserError(f"test step sizes must be positive numbers, got {lrs}")
    problem = make_problem(config)
    params = problem.test_params(params)
    regression = problem.metric == "mse"  # lower is better; every step recorded
    result: dict = {}
    lr = lrs[0]
    if len(lrs) > 1:
        seed = derive_seed(VALIDATE, config.eval_seed)
        found = {c: float(_scores(problem, params, problem.sample_validation, val_tasks, seed, shots, c, steps,
                                   config.vmap_tasks, f"validate {c:g}")[:, -1].mean()) for c in lrs}
        # best metric first; a diverged candidate (inf or NaN) last; the order given breaks ties
        lr = min(found, key=lambda c: (not math.isfinite(found[c]), found[c] if regression else -found[c]))
        result["validation"] = {"tasks": val_tasks, "scores": {str(k): v for k, v in found.items()}}
    values = _scores(problem, params, problem.sample_test, n_tasks, config.eval_seed, shots, lr, steps,
                     config.vmap_tasks, "evaluate")
    stats = [mean_ci95(values[:, j]) for j in range(values.shape[1])]
    if regression:
        return {"task": "sinusoid", "k": shots, "mse": [m for m, _ in stats], "ci95": [c for _, c in stats],
                "algorithm": config.method, "steps": steps, "tasks": n_tasks, "inner_lr": lr, **result}
    (before, _), (acc, ci) = stats[0], stats[-1]
    return {"task": config.task, "ways": config.ways, "shots": shots, "accuracy": acc, "ci95": ci,
            "algorithm": config.method, "steps": steps, "accuracy_before": before, "tasks": n_tasks,
            "inner_lr": lr, **result}


def evaluate_from_cli(
    run_dir: str, as_json: bool, tasks: int | None, shots: int | None = None, steps: int | None = None,
    inner_lrs: Sequence[float] | None = None, val_tasks: int = 100,
) -> int:
    """``metarl supervised evaluate``: print the result, write it to
    ``evaluation[_<K>shot][_<S>steps][_<N>tasks][_lr<LR> | _lrchosen].json`` (a part only where it differs
    from the config, so a quick check on a few tasks never overwrites the full evaluation)."""
    config, state = load_run(run_dir)
    result = evaluate(config, state["params"], tasks, shots, steps, inner_lrs, val_tasks)
    result["train_iterations"] = state.get("iteration")
    result["train_seconds"] = state.get("train_seconds")
    name = "evaluation"
    if result.get("shots", result.get("k")) != config.shots:
        name += f"_{shots}shot"
    if result["steps"] != config.eval_steps:
        name += f"_{steps}steps"
    if result["tasks"] != config.eval_tasks:
        name += f"_{result['tasks']}tasks"
    if inner_lrs is not None:
        name += "_lrchosen" if "validation" in result else f"_lr{result['inner_lr']:g}"
    (Path(run_dir) / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        print(json.dumps(result))
    elif result["task"] == "sinusoid":
        print(f"sinusoid {result['algorithm']}, K={result['k']}, {result['tasks']} tasks")
        for step, (m, c) in enumerate(zip(result["mse"], result["ci95"])):
            print(f"  steps {step:2d}: MSE {m:.3f} ± {c:.3f}")
    else:
        print(f"{result['task']} {result['algorithm']} {result['ways']}-way {result['shots']}-shot, "
              f"{result['tasks']} tasks, {result['steps']} steps: accuracy {100 * result['accuracy']:.2f} "
              f"± {100 * result['ci95']:.2f} %")
    if "validation" in result:
        scores = ", ".join(f"{lr}: {v:.4g}" for lr, v in result["validation"]["scores"].items())
        print(f"test step size {result['inner_lr']:g}, chosen on {result['validation']['tasks']} validation tasks "
              f"({scores})", file=sys.stderr if as_json else sys.stdout)  # --json: stdout holds the one object
    return 0


def figure_from_cli(maml_run: str, baseline_run: str, out: str) -> int:
    """``metarl supervised figure``: one held-out sinusoid, MAML beside the pretrained baseline (.png, .pdf, .svg)."""
    check_output_file(out, "--out", PLOT_SUFFIXES)  # before loading the runs
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load_run(maml_run), load_run(baseline_run)]
    for config, _ in runs:
        if config.task != "sinusoid":
            raise UserError("the figure is drawn for sinusoid runs only")
    config = runs[0][0]
    tasks, amplitude, phase = sample_sinusoid_tasks(1, config.shots, 1, torch.Generator().manual_seed(config.eval_seed))
    sx, sy = tasks.support_x[0], tasks.support_y[0]
    x = torch.linspace(*X_RANGE, 200).unsqueeze(-1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3), sharey=True)
    for ax, (run_config, state), title in zip(axes, runs, ["MAML", "pretrained"]):
        ax.plot(x, sinusoid(x[None], amplitude, phase)[0], color="red", label="ground truth")
        ax.scatter(sx, sy, marker="^", color="purple", zorder=3, label=f"{config.shots} points used for gradient")
        params, done = state["params"], 0
        for steps, style in [(0, ":"), (1, "-"), (10, "--")]:
            params = adapt(mse_loss, params, sx, sy, run_config.test_inner_lr, steps - done)
            done = steps
            with torch.no_grad():
                label = "pre-update" if steps == 0 else f"after {steps} grad step{'s' if steps > 1 else ''}"
                ax.plot(x, mlp_forward(params, x), linestyle=style, color="green" if steps else "lightgreen", label=label)
        ax.set_title(f"{title}, K={config.shots}")
        ax.set_xlim(*X_RANGE)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out_path = Path(out)
    try:
        with writing(out_path, "--out"):
            fig.savefig(out_path, dpi=120)
    finally:
        plt.close(fig)
    print(f"wrote {out_path}")
    return 0

