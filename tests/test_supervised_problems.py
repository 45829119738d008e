"""The supervised problems: what each split's tasks hold, and which images are augmented."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def test_sinusoid_problem_draws_the_configured_numbers_of_points():
    from metarl.supervised.config import SupervisedConfig
    from metarl.supervised.problems import sinusoid_problem

    problem = sinusoid_problem(SupervisedConfig(meta_batch_size=4, shots=3, query=5, eval_query=7))
    g = torch.Generator().manual_seed(0)
    train = problem.sample_train(2, g)
    assert train.support_x.shape == (2, 3, 1) and train.query_x.shape == (2, 5, 1)
    for sample in (problem.sample_test, problem.sample_validation):
        held_out = sample(2, g, 4)
        assert held_out.support_x.shape == (2, 4, 1) and held_out.query_x.shape == (2, 7, 1)
    # joint training (the pretrained baseline) sees as many points per task as a meta-training task
    x, y = problem.joint_batch(g)
    assert x.shape == y.shape == (4, 3 + 5, 1)


def _class_folders(root: Path, prefix: str, classes: int, images: int = 3, offset: int = 0) -> Path:
    for c in range(classes):
        folder = root / f"{prefix}{c}"
        folder.mkdir(parents=True)
        for i in range(images):
            pixels = np.zeros((8, 8), np.uint8)
            k = c + offset
            pixels[k % 8, :] = 255  # a row per class
            pixels[:, i] = 128 + 40 * i  # a column per image
            pixels[(k * 3 + i) % 8, (k + 2 * i) % 8] = 60
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _contains(images: torch.Tensor, image: torch.Tensor) -> bool:
    return bool((images == image).flatten(1).all(1).any())


@pytest.fixture
def folders(tmp_path):
    from metarl.supervised.images import read_image_folders

    train = _class_folders(tmp_path / "train", "tr", 4)
    test = _class_folders(tmp_path / "test", "te", 4, offset=4)
    raw_train = torch.cat(read_image_folders([train], 8, True).images)
    raw_test = torch.cat(read_image_folders([test], 8, True).images)
    return train, test, raw_train, raw_test


def _image_config(train, test, **extra):
    from metarl.supervised.config import SupervisedConfig

    config = SupervisedConfig(task="folders", train_data=[str(train)], test_data=[str(test)], image_size=8,
                              grayscale=True, ways=2, shots=1, query=1, eval_query=1, filters=4, meta_batch_size=3,
                              rotations=False, **extra)
    config.validate()
    return config


def test_held_out_image_tasks_come_from_the_test_classes(folders):
    from metarl.supervised.problems import image_problem

    train, test, raw_train, raw_test = folders
    problem = image_problem(_image_config(train, test))
    tasks = problem.sample_test(6, torch.Generator().manual_seed(0), 1)
    images = torch.cat([tasks.support_x.flatten(0, 1), tasks.query_x.flatten(0, 1)])
    assert all(_contains(raw_test, x) and not _contains(raw_train, x) for x in images)
    validation = problem.sample_validation(6, torch.Generator().manual_seed(0), 1)
    images = torch.cat([validation.support_x.flatten(0, 1), validation.query_x.flatten(0, 1)])
    assert all(_contains(raw_train, x) and not _contains(raw_test, x) for x in images)


def test_augmentation_reaches_every_training_image(folders):
    """Support, query and joint-training images are all augmented draws, not images as read."""
    from metarl.supervised.problems import image_problem

    train, test, raw_train, _ = folders
    plain = image_problem(_image_config(train, test))
    augmented = image_problem(_image_config(train, test, augment_rotation=20.0, augment_shift=1.5))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    p, a = plain.sample_train(4, g()), augmented.sample_train(4, g())
    for as_read, drawn in ((p.support_x, a.support_x), (p.query_x, a.query_x)):
        assert all(_contains(raw_train, x) for x in as_read.flatten(0, 1))  # without augmentation: as read
        assert not any(_contains(raw_train, x) for x in drawn.flatten(0, 1))
    (px, py), (ax, ay) = plain.joint_batch(g()), augmented.joint_batch(g())
    assert torch.equal(py, ay) and all(_contains(raw_train, x) for x in px)
    assert not any(_contains(raw_train, x) for x in ax)
