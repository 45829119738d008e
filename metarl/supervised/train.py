"""The supervised meta-training loop: MAML / FOMAML, Reptile or joint pretraining, top to bottom.

A run folder holds ``config.toml`` (the full config), ``checkpoint.pt`` (parameters,
config, iteration, training seconds, the Adam state and the task sampler's random state;
see :mod:`metarl.checkpoint`), ``machine.jsonl`` (the CPU and library versions of each start or
resume) and ``log.jsonl`` (one line per ``log_every`` iterations: mean training loss since the last line). ``resume`` continues a run from its checkpoint
exactly as if it had not stopped (only ``iterations`` and ``threads`` may change, and the meta step
size schedule where the iterations already trained would not see the change).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterable

import torch
from tqdm import tqdm

from metarl.adaptation import Params
from metarl.checkpoint import drop_log_rows_after, exclusive_run, load_checkpoint, save_checkpoint
from metarl.config import build_config, check_resumable, config_to_dict, dump_toml, load_config
from metarl.errors import UserError
from metarl.provenance import record_machine
from metarl.seeding import TRAIN, derive_seed
from metarl.supervised.algorithms import maml_meta_gradient, reptile_step
from metarl.supervised.config import SupervisedConfig
from metarl.supervised.problems import make_problem

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.toml"
LOG = "log.jsonl"


def _save(out_dir: Path, params: Params, config: SupervisedConfig, iteration: int, seconds: float,
          optimizer: torch.optim.Optimizer | None, generator: torch.Generator) -> None:
    state = {
        "params": {k: v.detach().clone() for k, v in params.items()},
        "config": config_to_dict(config),
        "iteration": iteration,
        "train_seconds": seconds,
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    save_checkpoint(state, out_dir / CHECKPOINT)


def _resume_state(config: SupervisedConfig, out_dir: Path) -> dict:
    """The checkpoint of ``out_dir`` after checking that it was trained with ``config`` (but ``iterations``)."""
    state = load_checkpoint(out_dir / CHECKPOINT)
    saved = build_config(SupervisedConfig, state.get("config", {}), str(out_dir / CHECKPOINT))
    schedule = ("meta_lr_milestones", "meta_lr_decay")
    check_resumable(config, saved, also_may_change=schedule)
    done = int(state["iteration"])
    if config.algorithm == "reptile" and config.iterations != saved.iterations:
        raise UserError(f"--resume: Reptile's outer step size decays linearly to 0 over 'iterations' ({saved.iterations} "
                        "in the saved run), so changing it changes the steps already trained; train a new run instead")
    # a schedule change is allowed where it changes nothing already trained (e.g. a decay added later)
    changed = next((i for i in range(1, done + 1) if config.meta_lr_factor(i) != saved.meta_lr_factor(i)), None)
    if changed is not None:
        raise UserError(f"--resume: the meta_lr schedule ({', '.join(schedule)}) differs from the run's saved config "
                        f"at iteration {changed}, which is already trained; only milestones from iteration {done} on "
                        "may be added")
    return state


def train(config: SupervisedConfig, out_dir: str | Path, progress: bool = True, resume: bool = False) -> Params:
    """Meta-train as ``config`` says, writing the run folder ``out_dir``; returns the final parameters.

    With ``resume``, continue the run in ``out_dir`` from its checkpoint. A checkpoint written
    before the optimizer and sampler state were saved resumes with a fresh Adam state and a
    sampler seeded from (seed, iteration), which is said on stderr. One process at a time trains
    a run folder (``checkpoint.exclusive_run``).
    """
    out_dir = Path(out_dir)
    problem = make_problem(config)  # reads the data first: a bad path fails before anything is written
    if resume and not out_dir.is_dir():
        load_checkpoint(out_dir / CHECKPOINT)  # the missing run's own error
    with exclusive_run(out_dir):
        return _train(config, problem, out_dir, progress, resume)


def _train(config: SupervisedConfig, problem, out_dir: Path, progress: bool, resume: bool) -> Params:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    params = problem.init_params(generator)
    state = _resume_state(config, out_dir) if resume else None
    if state is not None and int(state["iteration"]) >= config.iterations:
        # a finished run is left exactly as it is (a re-run of an experiment script only re-evaluates it)
        print(f"{out_dir}: already trained to iteration {int(state['iteration'])}; nothing to do", file=sys.stderr)
        return {k: v.clone() for k, v in state["params"].items()}
    if state is None and (out_dir / CHECKPOINT).exists():
        raise UserError(f"run folder {out_dir} already holds a checkpoint; pass --resume or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG).write_text(dump_toml(config_to_dict(config)))

    # MAML, FOMAML and pretraining follow their gradient with Adam; Reptile interpolates (below).
    optimizer = torch.optim.Adam(list(params.values()), lr=config.meta_lr) if config.algorithm != "reptile" else None
    first, seconds_before = 1, 0.0
    if state is not None:
        for k, p in params.items():
            p.data.copy_(state["params"][k])
        first, seconds_before = int(state["iteration"]) + 1, float(state.get("train_seconds", 0.0))
        if "generator" in state:
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        else:
            generator.manual_seed(derive_seed(TRAIN, config.seed, first - 1))
        if optimizer is not None and "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        if "generator" not in state or (optimizer is not None and "optimizer" not in state):
            print(f"note: {out_dir / CHECKPOINT} predates saved optimizer and sampler state: "
                  "Adam's moments and the task draws start afresh", file=sys.stderr)
        drop_log_rows_after(out_dir / LOG, first - 1)
    record_machine(out_dir, first - 1, config.threads)
    start, window = time.perf_counter() - seconds_before, []
    iteration = first - 1
    with open(out_dir / LOG, "a" if state is not None else "w") as log, tqdm(
        total=config.iterations, initial=first - 1, desc=f"{config.task} {config.method}", unit="it", disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        phase = "done"
        try:
            for iteration in range(first, config.iterations + 1):
                # what a Ctrl-C may save: the state before this iteration's draws, until the update starts
                phase, draws = "compute", (generator.get_state(), torch.get_rng_state())
                if config.algorithm == "reptile":
                    # Outer step size decays linearly to 0, as in the Reptile paper.
                    step_size = config.meta_lr * config.meta_lr_factor(iteration) * (1 - (iteration - 1) / config.iterations)
                    tasks = problem.sample_train(config.meta_batch_size, generator)
                    new_params, loss = reptile_step(
                        problem.loss_fn, params, tasks, config.inner_lr, config.inner_steps, step_size, config.vmap_tasks
                    )
                    phase = "update"
                    params = new_params
                    phase = "done"
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
                    for group in optimizer.param_groups:
                        group["lr"] = config.meta_lr * config.meta_lr_factor(iteration)
                    phase = "update"  # Adam changes the parameters in place: an interrupt here saves nothing
                    optimizer.step()
                    phase = "done"
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
                    _save(out_dir, params, config, iteration, time.perf_counter() - start, optimizer, generator)
        except KeyboardInterrupt:
            if phase == "compute":  # nothing of this iteration was applied: save the one before it
                generator.set_state(draws[0])
                torch.set_rng_state(draws[1])
                _save(out_dir, params, config, iteration - 1, time.perf_counter() - start, optimizer, generator)
            elif phase == "done":
                _save(out_dir, params, config, iteration, time.perf_counter() - start, optimizer, generator)
            raise
    _save(out_dir, params, config, iteration, time.perf_counter() - start, optimizer, generator)
    return params


def train_from_cli(config_path: str, out: str | None, seed: int | None, overrides: Iterable[str],
                   resume: bool = False) -> int:
    """``metarl supervised train``: returns the exit status (130 after Ctrl-C, checkpoint kept)."""
    overrides = list(overrides) + ([f"seed={seed}"] if seed is not None else [])
    config = load_config(SupervisedConfig, config_path, overrides)
    out_dir = Path(out) if out else Path("runs") / Path(config_path).stem
    try:
        train(config, out_dir, resume=resume)
    except KeyboardInterrupt:
        print(f"interrupted; last checkpoint in {out_dir / CHECKPOINT}")
        return 130
    print(f"run folder: {out_dir} (evaluate with: metarl supervised evaluate {out_dir})")
    return 0
