"""What differs between sinusoid regression and image classification, behind one small interface.

A :class:`Problem` holds the task's loss and test metric, the initial parameters,
and samplers for training tasks, held-out tasks and joint-training batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from metarl.adaptation import Params
from metarl.supervised.config import SupervisedConfig
from metarl.supervised.images import (
    ImageClasses,
    base_name,
    check_disjoint,
    check_task_size,
    random_affine,
    read_image_folders,
    read_omniglot,
    sample_image_tasks,
    with_mirrors,
    with_rotations,
)
from metarl.supervised.nets import convnet_forward, init_convnet, init_mlp, mlp_forward
from metarl.supervised.sinusoid import sample_sinusoid_tasks
from metarl.supervised.tasks import TaskBatch


def mse_loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of the MLP on ``x, y [N, 1]``."""
    return F.mse_loss(mlp_forward(params, x), y)


def cross_entropy_loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of the conv net on ``x [N, C, H, W]``, ``y [N]``."""
    return F.cross_entropy(convnet_forward(params, x), y)


def accuracy(params: Params, x: Tensor, y: Tensor) -> Tensor:
    """Fraction of ``x [N, C, H, W]`` classified as ``y [N]`` (batch norm on this batch)."""
    return (convnet_forward(params, x).argmax(-1) == y).float().mean()


@dataclass
class Problem:
    loss_fn: Callable[[Params, Tensor, Tensor], Tensor]
    metric_fn: Callable[[Params, Tensor, Tensor], Tensor]
    metric: str  # "mse" or "accuracy"
    sample_train: Callable[[int, torch.Generator], TaskBatch]
    sample_test: Callable[[int, torch.Generator, int], TaskBatch]  # (n_tasks, generator, shots)
    # tasks for choosing a test step size, disjoint from the test classes (images: the training
    # classes as read; sinusoid: fresh tasks), same signature
    sample_validation: Callable[[int, torch.Generator, int], TaskBatch]
    init_params: Callable[[torch.Generator], Params]
    # joint training (the pretrained baseline): a batch (x, y) with labels over all training classes
    joint_batch: Callable[[torch.Generator], tuple[Tensor, Tensor]]
    # the parameters fine-tuned at test time from trained parameters (pretrain: a fresh N-way head)
    test_params: Callable[[Params], Params]


def sinusoid_problem(config: SupervisedConfig) -> Problem:
    def joint(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        tasks, _, _ = sample_sinusoid_tasks(config.meta_batch_size, config.shots + config.query, 0, generator)
        return tasks.support_x, tasks.support_y

    def held_out(n: int, generator: torch.Generator, shots: int) -> TaskBatch:
        return sample_sinusoid_tasks(n, shots, config.eval_query, generator)[0]

    return Problem(
        loss_fn=mse_loss,
        metric_fn=mse_loss,
        metric="mse",
        sample_train=lambda n, g: sample_sinusoid_tasks(n, config.shots, config.query, g)[0],
        sample_test=held_out,
        sample_validation=held_out,  # the same distribution, drawn from another seed
        init_params=lambda g: init_mlp([1, *config.hidden_sizes, 1], g),
        joint_batch=joint,
        test_params=lambda params: params,
    )


def load_image_splits(config: SupervisedConfig) -> tuple[ImageClasses, ImageClasses]:
    """The train classes (with mirrored / rotated copies if ``mirrors`` / ``rotations``) and the test
    classes, checked disjoint."""
    if config.task == "omniglot":
        train = read_omniglot(config.train_data, config.train_alphabets, config.image_size)
        test = read_omniglot(config.test_data, config.test_alphabets, config.image_size)
    else:
        train = read_image_folders(config.train_data, config.image_size, config.grayscale)
        test = read_image_folders(config.test_data, config.image_size, config.grayscale)
    check_disjoint(train, test)
    if config.mirrors:
        train = with_mirrors(train)
    return (with_rotations(train) if config.rotations else train), test


def image_problem(config: SupervisedConfig) -> Problem:
    train, test = load_image_splits(config)
    channels = train.images[0].shape[1]
    pretrain = config.algorithm == "pretrain"
    num_outputs = len(train) if pretrain else config.ways
    flat_x = torch.cat(train.images)
    flat_y = torch.cat([torch.full((len(x),), i) for i, x in enumerate(train.images)])

    def augment(x: Tensor, generator: torch.Generator) -> Tensor:
        # training draws only: held-out tasks are always scored on the images as read
        return random_affine(x, generator, config.augment_rotation, config.augment_shift, config.augment_scale)

    def sample_train(n: int, generator: torch.Generator) -> TaskBatch:
        tasks = sample_image_tasks(train, n, config.ways, config.shots, config.query, generator, "query", "train")
        return TaskBatch(augment(tasks.support_x, generator), tasks.support_y,
                         augment(tasks.query_x, generator), tasks.query_y)

    def joint(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n = config.meta_batch_size * config.ways * (config.shots + config.query)
        idx = torch.randint(len(flat_x), (n,), generator=generator)
        return augment(flat_x[idx], generator), flat_y[idx]

    def test_params(params: Params) -> Params:
        if not pretrain:
            return params
        # The all-class head cannot label a new task's classes: fine-tune a zero N-way head (and the body).
        head = params["out.weight"]
        return {**params, "out.weight": head.new_zeros(config.ways, head.shape[1]), "out.bias": head.new_zeros(config.ways)}

    # before anything is written: a run that could train but never be evaluated is refused up front (the
    # pretrained baseline trains on batches of images, not tasks: its training classes need only the ways)
    train_shots, train_query = (0, 0) if pretrain else (config.shots, config.query)
    check_task_size(train, config.ways, train_shots, train_query, "query", "train")
    check_task_size(test, config.ways, config.shots, config.eval_query, "eval_query", "test")
    as_read = [i for i, name in enumerate(train.names) if base_name(name) == name]  # no mirrors or rotations
    validation = ImageClasses([train.names[i] for i in as_read], [train.images[i] for i in as_read])

    def held_out(classes: ImageClasses, name: str) -> Callable[[int, torch.Generator, int], TaskBatch]:
        return lambda n, g, shots: sample_image_tasks(classes, n, config.ways, shots, config.eval_query, g,
                                                      "eval_query", name)

    return Problem(
        loss_fn=cross_entropy_loss,
        metric_fn=accuracy,
        metric="accuracy",
        sample_train=sample_train,
        sample_test=held_out(test, "test"),
        sample_validation=held_out(validation, "validation (training, as read)"),
        init_params=lambda g: init_convnet(channels, config.image_size, num_outputs, g, filters=config.filters),
        joint_batch=joint,
        test_params=test_params,
    )


def make_problem(config: SupervisedConfig) -> Problem:
    return sinusoid_problem(config) if config.task == "sinusoid" else image_problem(config)
