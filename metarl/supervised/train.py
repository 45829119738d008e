"""The supervised meta-training loop: MAML / FOMAML, Reptile or joint pretraining, top to bottom.

A run folder holds ``config.toml`` (the full config), ``checkpoint.pt`` (parameters,
config, iteration, training seconds; see :mod:`metarl.checkpoint`) and ``log.jsonl``
(one line per ``log_every`` iterations: mean training loss since the last line).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

import torch
from tqdm import tqdm

from metarl.adaptation import Params
from metarl.checkpoint import save_checkpoint
from metarl.config import config_to_dict, dump_toml, load_config
from metarl.supervised.algorithms import maml_meta_gradient, reptile_step
from metarl.supervised.config import SupervisedConfig
from metarl.supervised.problems import make_problem

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.toml"
LOG = "log.jsonl"


def _save(out_dir: Path, params: Params, config: SupervisedConfig, iteration: int, seconds: float) -> None:
    state = {
        "params": {k: v.detach().clone() for k, v in params.items()},
        "config": config_to_dict(config),
        "iteration": iteration,
        "train_seconds": seconds,
    }
    save_checkpoint(state, out_dir / CHECKPOINT)


def train(config: SupervisedConfig, out_dir: str | Path, progress: bool = True) -> Params:
    """Meta-train as ``config`` says, writing the run folder ``out_dir``; returns the final parameters."""
    out_dir = Path(out_dir)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    problem = make_problem(config)  # reads the data first: a bad path fails before anything is written
    params = problem.init_params(generator)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG).write_text(dump_toml(config_to_dict(config)))

    # MAML, FOMAML and pretraining follow their gradient with Adam; Reptile interpolates (below).
    optimizer = torch.optim.Adam(list(params.values()), lr=config.meta_lr) if config.algorithm != "reptile" else None
    name = "fomaml" if config.algorithm == "maml" and config.first_order else config.algorithm
    start, window = time.perf_counter(), []
    iteration = 0
    with open(out_dir / LOG, "w") as log, tqdm(
        total=config.iterations, desc=f"{config.task} {name}", unit="it", disable=not progress, dynamic_ncols=True
    ) as bar:
        try:
            for iteration in range(1, config.iterations + 1):
                if config.algorithm == "reptile":
                    # Outer step size decays linearly to 0, as in the Reptile paper.
                    step_size = config.meta_lr * (1 - (iteration - 1) / config.iterations)
                    tasks = problem.sample_train(config.meta_batch_size, generator)
                    params, loss = reptile_step(
                        problem.loss_fn, params, tasks, config.inner_lr, config.inner_steps, step_size, config.vmap_tasks
                    )
                else:
                    if config.algorithm == "maml":
                        tasks = problem.sample_train(config.meta_batch_size, generator)
                        grads, loss = maml_meta_gradient(
                            problem.loss_fn, params, tasks, config.inner_lr, config.inner_steps,
                            config.first_order, config.vmap_tasks,
                        )
                    else:  # pretrain: no adaptation, all training data in one model
                        x, y = problem.joint_batch(generator)
                        grads, loss = torch.func.grad_and_value(problem.loss_fn)(params, x, y)
                    for k, p in params.items():
                        p.grad = grads[k]
                    optimizer.step()
                window.append(float(loss))
                bar.update()
                if iteration % config.log_every == 0 or iteration == config.iterations:
                    mean = sum(window) / len(window)
                    seconds = time.perf_counter() - start
                    log.write(json.dumps({"iteration": iteration, "loss": mean, "seconds": round(seconds, 2)}) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{mean:.4g}")
                    window = []
                if iteration % config.checkpoint_every == 0:
                    _save(out_dir, params, config, iteration, time.perf_counter() - start)
        except KeyboardInterrupt:
            iteration -= 1  # the interrupted iteration did not finish
            _save(out_dir, params, config, iteration, time.perf_counter() - start)
            raise
    _save(out_dir, params, config, iteration, time.perf_counter() - start)
    return params


def train_from_cli(config_path: str, out: str | None, seed: int | None, overrides: Iterable[str]) -> int:
    """``metarl supervised train``: returns the exit status (130 after Ctrl-C, checkpoint kept)."""
    overrides = list(overrides) + ([f"seed={seed}"] if seed is not None else [])
    config = load_config(SupervisedConfig, config_path, overrides)
    out_dir = Path(out) if out else Path("runs") / Path(config_path).stem
    try:
        train(config, out_dir)
    except KeyboardInterrupt:
        print(f"interrupted; last checkpoint in {out_dir / CHECKPOINT}")
        return 130
    print(f"run folder: {out_dir} (evaluate with: metarl supervised evaluate {out_dir})")
    return 0
