"""The config schema of ``metarl supervised train`` (one flat TOML table, see experiments/)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from metarl.errors import UserError
from metarl.seeding import check_seed_key

TASKS = ("sinusoid", "omniglot", "folders")
ALGORITHMS = ("maml", "reptile", "pretrain")


@dataclass
class SupervisedConfig:
    """Every knob of supervised meta-training and evaluation.

    ``algorithm``: ``maml`` (second order; ``first_order = true`` for FOMAML), ``reptile``
    (``inner_steps`` SGD steps on a task's support + query data, then move the
    initialization a fraction ``meta_lr`` of the way toward the mean adapted weights,
    ``meta_lr`` decayed linearly to 0), or ``pretrain`` (one network trained on all
    training tasks jointly with Adam; fine-tuned at test time like the others).
    ``shots`` / ``query``: support / query examples per class (per task for sinusoid).
    ``meta_lr_milestones`` / ``meta_lr_decay``: the meta step size is multiplied by
    ``meta_lr_decay`` for every milestone iteration already completed (a step schedule, as
    torch's MultiStepLR); a resumed run may add milestones after its saved iteration.
    Data paths are relative to the working directory.
    """

    task: str = "sinusoid"
    algorithm: str = "maml"
    first_order: bool = False
    seed: int = 0
    iterations: int = 70000
    meta_batch_size: int = 25
    meta_lr: float = 0.001
    meta_lr_milestones: list[int] = field(default_factory=list)
    meta_lr_decay: float = 0.1
    inner_lr: float = 0.01
    inner_steps: int = 1
    ways: int = 5
    shots: int = 10
    query: int = 10
    # evaluation: held-out tasks, adaptation steps (and their step size) at test time
    eval_tasks: int = 600
    eval_steps: int = 10
    eval_inner_lr: float | None = None
    eval_query: int = 100
    eval_seed: int = 2017
    # networks: MLP hidden sizes (sinusoid); conv filters per block (images)
    hidden_sizes: list[int] = field(default_factory=lambda: [40, 40])
    filters: int = 64
    # images: sources (folders or zips), Omniglot alphabets per split (empty: all in the sources)
    train_data: list[str] = field(default_factory=list)
    test_data: list[str] = field(default_factory=list)
    train_alphabets: list[str] = field(default_factory=list)
    test_alphabets: list[str] = field(default_factory=list)
    rotations: bool = True
    # training only: mirrored classes (before rotations), and a random affine map per image per draw
    mirrors: bool = False
    augment_rotation: float = 0.0  # degrees, uniform in [-r, r]
    augment_shift: float = 0.0  # pixels per axis, uniform in [-s, s]
    augment_scale: float = 0.0  # zoom factor uniform in [1 - s, 1 + s]
    image_size: int = 28
    grayscale: bool = False
    # batching over tasks: torch.func.vmap (pays for small MLPs) or a Python loop (faster for convs on CPU);
    # unset: vmap for sinusoid, the loop for images
    vmap_tasks: bool | None = None
    threads: int = 1
    log_every: int = 100
    checkpoint_every: int = 1000

    def validate(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"config key 'task' must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.algorithm not in ALGORITHMS:
            raise UserError(f"config key 'algorithm' must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        for name in ("iterations", "meta_batch_size", "shots", "query", "eval_tasks", "eval_query", "image_size",
                     "filters", "threads", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"config key {name!r} must be at least 1, got {getattr(self, name)}")
        for name in ("inner_steps", "eval_steps"):
            if getattr(self, name) < 0:
                raise UserError(f"config key {name!r} must be at least 0, got {getattr(self, name)}")
        for name in ("seed", "eval_seed"):
            check_seed_key(name, getattr(self, name))
        if self.ways < 2:
            raise UserError(f"config key 'ways' must be at least 2, got {self.ways}")
        for name in ("meta_lr", "inner_lr"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise UserError(f"config key {name!r} must be a positive number, got {getattr(self, name)}")
        if not 0 < self.meta_lr_decay <= 1:
            raise UserError(f"config key 'meta_lr_decay' must be in (0, 1], got {self.meta_lr_decay}")
        milestones = self.meta_lr_milestones
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones) or milestones != sorted(set(milestones)):
            raise UserError(f"config key 'meta_lr_milestones' must list increasing positive iterations, got {milestones}")
        for name in ("augment_rotation", "augment_shift"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise UserError(f"config key {name!r} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 <= self.augment_scale < 1:
            raise UserError(f"config key 'augment_scale' must be in [0, 1), got {self.augment_scale}")
        if self.eval_inner_lr is not None and not (self.eval_inner_lr > 0 and math.isfinite(self.eval_inner_lr)):
            raise UserError(f"config key 'eval_inner_lr' must be a positive number, got {self.eval_inner_lr}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise UserError(f"config key 'hidden_sizes' must be a non-empty list of positive sizes, got {self.hidden_sizes}")
        if self.task != "sinusoid":
            for name in ("train_data", "test_data"):
                if not getattr(self, name):
                    raise UserError(f"config key {name!r} must list at least one folder or zip for task {self.task!r}")
        # a key that this task or algorithm never reads, set away from its default, is refused rather than ignored
        defaults = SupervisedConfig()
        unread = [("first_order", self.algorithm != "maml", "algorithm 'maml' only"),
                  ("inner_steps", self.algorithm == "pretrain", "algorithms 'maml' and 'reptile' only"),
                  ("hidden_sizes", self.task != "sinusoid", "task 'sinusoid' only")]
        unread += [(name, self.task == "sinusoid", "image tasks only")
                   for name in ("train_data", "test_data", "filters", "image_size", "rotations", "mirrors",
                                "augment_rotation", "augment_shift", "augment_scale")]
        unread.append(("grayscale", self.task != "folders", "task 'folders' only (Omniglot is always read grey)"))
        unread += [(name, self.task != "omniglot", "task 'omniglot' only") for name in ("train_alphabets", "test_alphabets")]
        for name, unused, reader in unread:
            if unused and getattr(self, name) != getattr(defaults, name):
                raise UserError(f"config key {name!r} applies to {reader}; this config has task {self.task!r} and "
                                f"algorithm {self.algorithm!r}")
        if self.vmap_tasks is None:
            self.vmap_tasks = self.task == "sinusoid"
        # torch 2.13's vmap gets the second derivatives through batch norm wrong (conv weights off by a few %
        # against finite differences, where the loop matches them), so the conv net's meta-gradient needs the loop
        if self.vmap_tasks and self.task != "sinusoid" and self.algorithm == "maml" and not self.first_order:
            raise UserError("config key 'vmap_tasks' must be false for second-order MAML on images: torch.func.vmap "
                            "gives wrong second derivatives through batch norm")

    def meta_lr_factor(self, iteration: int) -> float:
        """The step schedule's factor for ``iteration`` (1-based): ``meta_lr_decay`` per milestone before it."""
        return self.meta_lr_decay ** sum(iteration > m for m in self.meta_lr_milestones)

    @property
    def method(self) -> str:
        """The method's name in logs and results: ``algorithm``, but "fomaml" for first-order MAML."""
        return "fomaml" if self.algorithm == "maml" and self.first_order else self.algorithm

    @property
    def test_inner_lr(self) -> float:
        return self.inner_lr if self.eval_inner_lr is None else self.eval_inner_lr
