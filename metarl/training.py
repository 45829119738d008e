"""The MAML-TRPO training loop: config, run directory, logging, checkpoints, resume, Ctrl-C.

One iteration (Finn et al. 2017, Algorithm 3):
  sample tasks -> roll out theta -> inner step(s) -> roll out the adapted policies -> TRPO step on theta.
Every random draw of iteration ``i`` is seeded from ``(config.seed, i)``, so a run resumed from the
checkpoint after iteration ``i`` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm import tqdm

from metarl.checkpoint import drop_log_rows_after, exclusive_run, load_checkpoint, save_checkpoint
from metarl.config import check_resumable, config_to_dict, dump_toml, first_difference, load_config
from metarl.episodes import Episodes
from metarl.errors import UserError
from metarl.maml_trpo import INNER_OBJECTIVES, InnerCurvature, MAMLTRPO
from metarl import policies
from metarl.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from metarl.provenance import record_machine
from metarl.sampling import sample_episodes
from metarl.seeding import TRAIN, check_seed_key, derive_seed

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.toml"
METRICS = "metrics.jsonl"
CHECKPOINT_FORMAT = "metarl.maml_trpo/1"
METHODS = ("maml", "pretrained", "oracle", "random")
# Keys only MAML's adaptation and meta-objective read: a baseline trains plain TRPO on theta, so a paper row's
# config may change its MAML objective without invalidating the row's pretrained and oracle runs.
MAML_OBJECTIVE_KEYS = ("num_inner_steps", "first_order", "meta_step_weights", "meta_pre_weight", "inner_objective")


@dataclass
class TrainConfig:
    """Every setting of a meta-RL run; the defaults are the MAML paper's locomotion hyperparameters, except
    ``env`` (the gymnasium cheetah, not the paper's rllab one) and ``baseline_obs_clip`` (none; the paper's 10)."""

    env: str = "metarl/HalfCheetahVel-v0"
    # maml: meta-learn the initialization; pretrained: TRPO on the task mixture, no adaptation;
    # oracle: like pretrained, but the policy also observes the task; random: an untrained initialization
    method: str = "maml"
    iterations: int = 500
    meta_batch_size: int = 40  # tasks per meta-iteration
    episodes_per_task: int = 20  # episodes per task, before and after each inner step
    num_inner_steps: int = 1
    inner_lr: float = 0.1  # alpha
    first_order: bool = False
    # the meta-objective's weight on the policy after each inner step 1..K, each scored on the episodes it
    # sampled (normalized to sum 1); empty: the paper's, the policy after all K steps alone
    meta_step_weights: tuple[float, ...] = ()
    # the meta-objective's weight on the initialization itself, scored on the pre-update episodes it sampled, on
    # the scale of meta_step_weights (whose default is 1 on the last step); 0: the paper's objective
    meta_pre_weight: float = 0.0
    # the inner loss as the second-order meta-gradient differentiates it: "vpg" (the paper's) or "lvc" (ProMP's
    # low-variance curvature form: the same inner step, plus the pre-update sampling's term in the meta-gradient)
    inner_objective: str = "vpg"
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    # the linear baseline's features clip observations to +-baseline_obs_clip (inf: no clipping; rllab, the
    # paper's code, clips at 10, which learned more slowly on the cheetah rows: experiments/README.md)
    baseline_obs_clip: float = math.inf
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    fisher_subsample: float = 1.0  # fraction of the tasks (all their episodes) in Fisher-vector products (1 = all)
    ls_ratio: float = 0.8
    ls_max_steps: int = 15
    hidden_sizes: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    init_std: float = 1.0  # initial policy std, in normalized action units if normalize_actions
    normalize_actions: bool = True  # policy mean and std scaled by the half-width of the action box
    seed: int = 0
    checkpoint_every: int = 10  # iterations between checkpoints (one is always written at the end)
    num_threads: int = 2  # torch intra-op threads
    # inner steps after the first (training with num_inner_steps > 1, and evaluation) use inner_lr * later_lr_scale
    later_lr_scale: float = 0.5
    # evaluation protocol (metarl evaluate): step 1 at inner_lr, later steps at inner_lr * later_lr_scale
    eval_tasks: int = 40
    eval_steps: int = 3
    eval_episodes: int = 20

    def validate(self) -> None:
        import envs

        if self.env not in envs.ENV_IDS:
            raise UserError(f"config key 'env': unknown environment {self.env!r} (known: {', '.join(envs.ENV_IDS)})")
        if self.method not in METHODS:
            raise UserError(f"config key 'method' must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.meta_step_weights:
            weights = list(self.meta_step_weights)
            if len(weights) != self.num_inner_steps:
                raise UserError(f"config key 'meta_step_weights' needs one weight per inner step ({self.num_inner_steps}), got {weights}")
            if not all(w >= 0 and math.isfinite(w) for w in weights) or not weights[-1] > 0:
                raise UserError(f"config key 'meta_step_weights' must be finite and >= 0 with the last > 0, got {weights}")
        if not (self.meta_pre_weight >= 0 and math.isfinite(self.meta_pre_weight)):
            raise UserError(f"config key 'meta_pre_weight' must be finite and >= 0, got {self.meta_pre_weight}")
        if self.inner_objective not in INNER_OBJECTIVES:
            raise UserError(f"config key 'inner_objective' must be one of {', '.join(INNER_OBJECTIVES)}, got {self.inner_objective!r}")
        if self.activation not in policies.ACTIVATIONS:
            raise UserError(f"config key 'activation' must be one of {', '.join(policies.ACTIVATIONS)}, "
                            f"got {self.activation!r}")
        positive_ints = ("iterations", "meta_batch_size", "episodes_per_task", "num_inner_steps", "cg_iters",
                         "ls_max_steps", "checkpoint_every", "num_threads", "eval_episodes")
        for key in positive_ints:
            if getattr(self, key) < 1:
                raise UserError(f"config key {key!r} must be >= 1, got {getattr(self, key)}")
        if self.eval_tasks < 2:  # a confidence interval needs two tasks; say so before training, not after
            raise UserError(f"config key 'eval_tasks' must be >= 2, got {self.eval_tasks}")
        if self.eval_steps < 0:
            raise UserError(f"config key 'eval_steps' must be >= 0, got {self.eval_steps}")
        check_seed_key("seed", self.seed)
        positive_floats = ("inner_lr", "max_kl", "init_std", "later_lr_scale")
        for key in positive_floats:
            if not getattr(self, key) > 0 or not math.isfinite(getattr(self, key)):
                raise UserError(f"config key {key!r} must be a positive number, got {getattr(self, key)}")
        for key in ("gamma", "gae_lambda", "ls_ratio"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise UserError(f"config key {key!r} must be in (0, 1], got {getattr(self, key)}")
        if not 0.0 < self.fisher_subsample <= 1.0:
            raise UserError(f"config key 'fisher_subsample' must be in (0, 1], got {self.fisher_subsample}")
        if not self.baseline_obs_clip > 0:
            raise UserError(f"config key 'baseline_obs_clip' must be positive (inf: no clipping), got {self.baseline_obs_clip}")
        if not (self.cg_damping >= 0 and math.isfinite(self.cg_damping)):
            raise UserError(f"config key 'cg_damping' must be finite and >= 0, got {self.cg_damping}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise UserError(f"config key 'hidden_sizes' must be a non-empty list of positive sizes, got {list(self.hidden_sizes)}")


def step_sizes(inner_lr: float, steps: int, later_lr_scale: float) -> list[float]:
    """The paper's step sizes: ``inner_lr`` for step 1, ``inner_lr * later_lr_scale`` after."""
    return [inner_lr if k == 0 else inner_lr * later_lr_scale for k in range(steps)]


def make_env(config: TrainConfig, num_tasks: int, episodes_per_task: int):
    """The batched env for ``num_tasks x episodes_per_task`` rollouts of ``config.env``."""
    import envs

    return envs.make_batched(config.env, num_tasks * episodes_per_task, oracle=config.method == "oracle")


def make_policy(config: TrainConfig, env) -> GaussianMLPPolicy | CategoricalMLPPolicy:
    """A Gaussian MLP for continuous actions, a categorical one for discrete actions."""
    if getattr(env, "num_actions", None):
        return policies.make_policy("categorical", env.observation_dim, env.num_actions, config.hidden_sizes,
                                    config.activation)
    scale = 1.0
    if config.normalize_actions:  # the network acts in [-1, 1]; the env's box is symmetric
        scale = torch.as_tensor((env.action_high - env.action_low) / 2, dtype=torch.float32)
    return policies.make_policy("gaussian", env.observation_dim, env.action_dim, config.hidden_sizes,
                                config.activation, config.init_std, action_scale=scale)


def make_learner(config: TrainConfig, policy) -> MAMLTRPO:
    return MAMLTRPO(
        policy,
        inner_lr=config.inner_lr,
        first_order=config.first_order,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        max_kl=config.max_kl,
        cg_iters=config.cg_iters,
        cg_damping=config.cg_damping,
        ls_ratio=config.ls_ratio,
        ls_max_steps=config.ls_max_steps,
        normalize_advantages=config.normalize_advantages,
        baseline_obs_clip=config.baseline_obs_clip,
        fisher_subsample=config.fisher_subsample,
        meta_step_weights=list(config.meta_step_weights) or None,
        meta_pre_weight=config.meta_pre_weight,
        inner_objective=config.inner_objective,
    )


def broadcast(params: dict[str, Tensor], num_tasks: int) -> dict[str, Tensor]:
    """One parameter set repeated along a new leading task axis (a view, no copy)."""
    return {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}


def run_dir_of(run_dir: str | Path, paper_row: bool = True) -> Path:
    """``run_dir``, or with ``paper_row`` the MAML run a paper row's directory stands for
    (``experiments/results/<row>/`` holds one run per method; ``<row>/maml``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    if paper_row and not (run_dir / CONFIG).exists() and (run_dir / "maml" / CONFIG).exists():
        return run_dir / "maml"
    if not (run_dir / CONFIG).exists() and not (run_dir / CHECKPOINT).exists():
        raise UserError(f"{run_dir} is not a run directory (it holds no {CONFIG} or {CHECKPOINT})")
    return run_dir


def load_run(run_dir: str | Path, paper_row: bool = True) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and checkpoint state of a run directory (a paper row's: see :func:`run_dir_of`).

    ``config.toml`` must agree with the config the checkpoint was saved with (apart from the keys a
    resume may change, and keys newer than the checkpoint): an edited file would otherwise rebuild a
    different network or protocol around the saved parameters.
    """
    run_dir = run_dir_of(run_dir, paper_row)
    config = load_config(TrainConfig, run_dir / CONFIG)
    state = load_checkpoint(run_dir / CHECKPOINT)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {run_dir / CHECKPOINT} is not a {CHECKPOINT_FORMAT} checkpoint")
    saved, ours = state.get("config"), config_to_dict(config)
    key = first_difference(ours, saved) if isinstance(saved, dict) else None
    if key is not None:
        raise UserError(f"{run_dir / CONFIG} disagrees with its checkpoint on {key!r} ({ours[key]!r} vs "
                        f"{saved[key]!r} saved); restore the file or train a new run")
    return config, state


class MetaBatch(NamedTuple):
    """One meta-iteration's data: train episodes per inner step, post-adaptation episodes (both processed:
    advantages filled), the inner learning rates, and, for a second-order update, each inner step's
    curvature as the sampler computed it (the meta-update reuses it; ``None`` otherwise)."""

    train_episodes: list[Episodes]
    valid_episodes: Episodes
    lrs: list[float]
    curvatures: list[InnerCurvature] | None


def sample_meta_batch(config: TrainConfig, env, policy, learner: MAMLTRPO, params: dict[str, Tensor],
                      iteration: int) -> MetaBatch:
    """The episodes of meta-iteration ``iteration`` (0-based).

    theta -> episodes -> inner step -> ... -> post-adaptation episodes, all tasks batched; every draw is
    seeded by (seed, iteration), so a run's batch at any iteration can be drawn again.
    """
    tasks = env.sample_tasks(config.meta_batch_size, seed=derive_seed(TRAIN, config.seed, iteration, 0))
    task_params = broadcast(params, len(tasks))
    train_episodes = []
    inner_steps = config.num_inner_steps if config.method == "maml" else 0  # baselines: plain TRPO on theta
    lrs = step_sizes(config.inner_lr, inner_steps, config.later_lr_scale)
    curvatures = []
    for k in range(inner_steps):
        episodes = sample_episodes(env, policy, task_params, tasks, config.episodes_per_task,
                                   seed=derive_seed(TRAIN, config.seed, iteration, k + 1))
        train_episodes.append(learner.process(episodes))
        # second order, the step's gradient comes with the Hessian products the meta-update needs at the
        # same point: computed once, here
        task_params, curvature = learner.sampling_step(task_params, train_episodes[-1], lrs[k])
        curvatures.append(curvature)
    valid_episodes = learner.process(sample_episodes(
        env, policy, task_params, tasks, config.episodes_per_task,
        seed=derive_seed(TRAIN, config.seed, iteration, inner_steps + 1)))
    second_order = inner_steps > 0 and not learner.first_order
    return MetaBatch(train_episodes, valid_episodes, lrs, curvatures if second_order else None)


def meta_iteration(config: TrainConfig, env, policy, learner: MAMLTRPO, params: dict[str, Tensor],
                   iteration: int) -> tuple[dict[str, Tensor], dict[str, float]]:
    """One meta-iteration (iteration index ``iteration``, 0-based); returns the new parameters and a log row.

    Sampling (:func:`sample_meta_batch`), then one TRPO step on theta through the adaptation.
    """
    t0 = time.perf_counter()
    train_episodes, valid_episodes, lrs, curvatures = sample_meta_batch(config, env, policy, learner, params, iteration)
    t1 = time.perf_counter()
    params, info = learner.step(params, train_episodes, valid_episodes, lrs, curvatures)
    t2 = time.perf_counter()
    row = {"iteration": iteration + 1,
           "return_pre": float((train_episodes[0] if train_episodes else valid_episodes).undiscounted_returns().mean()),
           "return_post": float(valid_episodes.undiscounted_returns().mean()),
           **{k: float(v) for k, v in info.items()},
           "sampling_s": t1 - t0, "update_s": t2 - t1,
           "peak_rss_mb": peak_rss_mb()}
    return params, row


def peak_rss_mb() -> float:
    """Peak resident memory so far of this process plus its running child processes (the rllab ant's
    physics workers), in MiB. Linux reports ru_maxrss and VmHWM in KiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rpartition(")")[2].split()[1] != me:  # the field after the state is the parent pid
                continue
            status = (stat.parent / "status").read_text()
        except OSError:  # it ended meanwhile
            continue
        kib += sum(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return kib / 1024


def _last_iteration(config: TrainConfig) -> int:
    return 0 if config.method == "random" else config.iterations  # a random initialization is not trained


def train(config: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Run (or continue) MAML-TRPO meta-training; returns the run directory.

    The run directory holds ``config.toml``, ``checkpoint.pt`` (the latest completed iteration),
    ``metrics.jsonl`` (one object per iteration), ``machine.jsonl`` (the CPU and library versions, one
    object per start or resume) and ``tb/`` (TensorBoard scalars). One process
    at a time trains a run directory (``checkpoint.exclusive_run``).
    """
    run_dir = Path(run_dir)
    if resume and not run_dir.is_dir():
        load_run(run_dir, paper_row=False)  # the missing run's own error
    with exclusive_run(run_dir):
        return _train(config, run_dir, resume, progress)


def _train(config: TrainConfig, run_dir: Path, resume: bool, progress: bool) -> Path:
    # settle the config (and refuse a bad resume) before building anything from it
    if resume:
        saved, state = load_run(run_dir, paper_row=False)
        unread = MAML_OBJECTIVE_KEYS if config.method != "maml" else ()
        check_resumable(config, saved, also_may_change=unread)
        config = replace(config, **{k: getattr(saved, k) for k in unread})  # the run records what it was trained with
        if int(state["iteration"]) >= _last_iteration(config):
            # a finished run is left exactly as it is (a re-run of an experiment script only re-evaluates it)
            print(f"{run_dir}: already trained to iteration {int(state['iteration'])}; nothing to do", file=sys.stderr)
            return run_dir
    elif (run_dir / CHECKPOINT).exists():
        raise UserError(f"run directory {run_dir} already holds a checkpoint; pass --resume or choose another --out")

    torch.set_num_threads(config.num_threads)
    env = make_env(config, config.meta_batch_size, config.episodes_per_task)
    policy = make_policy(config, env)
    learner = make_learner(config, policy)

    if resume:
        params = {k: v.clone() for k, v in state["params"].items()}
        start = int(state["iteration"])
        drop_log_rows_after(run_dir / METRICS, start)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        params = policy.init_params(torch.Generator().manual_seed(config.seed))
        start = 0
        (run_dir / METRICS).unlink(missing_ok=True)
    (run_dir / CONFIG).write_text(dump_toml(config_to_dict(config)))
    record_machine(run_dir, start, config.num_threads)

    def save(iteration: int) -> None:
        save_checkpoint({"format": CHECKPOINT_FORMAT, "iteration": iteration, "params": params,
                         "config": config_to_dict(config)}, run_dir / CHECKPOINT)

    from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

    # iteration i is logged at step i; a resume from iteration `start` redoes the ones after it, so TensorBoard
    # drops their events (a crash can leave some past the checkpoint) and keeps `start`'s own
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1)
    metrics = open(run_dir / METRICS, "a")
    completed = start
    end = _last_iteration(config)
    bar = tqdm(range(start, end), initial=start, total=end, disable=not progress,
               desc="meta-train", unit="it", dynamic_ncols=True)
    try:
        for it in bar:
            params, row = meta_iteration(config, env, policy, learner, params, it)
            completed = it + 1
            if row.get("nan"):
                tqdm.write(f"iteration {completed}: NaN in the meta-update, step rejected")
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            for key, value in row.items():
                if key != "iteration":
                    writer.add_scalar(key, value, completed)
            bar.set_postfix(pre=f"{row['return_pre']:.1f}", post=f"{row['return_post']:.1f}",
                            kl=f"{row.get('kl', float('nan')):.4f}")
            if completed % config.checkpoint_every == 0 or completed == end:
                save(completed)
    except KeyboardInterrupt:
        save(completed)
        bar.close()
        tqdm.write(f"interrupted: saved iteration {completed} to {run_dir / CHECKPOINT}; continue with --resume")
        raise
    finally:
        metrics.close()
        writer.close()
        bar.close()
        env.close()
    if completed == start:  # a new run with nothing to train (a random initialization): its checkpoint
        save(completed)
    return run_dir
