"""Image readers, rotations, splits, N-way K-shot tasks and the image CLI, on generated folders and zips."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metarl.cli import main
from metarl.config import load_config
from metarl.errors import UserError
from metarl.supervised.config import SupervisedConfig
from metarl.supervised.images import (
    affine_images,
    base_name,
    check_disjoint,
    random_affine,
    read_image_folders,
    read_omniglot,
    sample_image_tasks,
    with_mirrors,
    with_rotations,
)
from metarl.supervised.problems import image_problem, load_image_splits

SIDE = 35  # generated "Omniglot" images: 1-bit, white background, one black square per character


def _glyph(seed: int, drawer: int) -> Image.Image:
    pixels = np.ones((SIDE, SIDE), dtype=bool)
    r, c = divmod(seed % 16, 4)
    pixels[r * 7 : r * 7 + 7, c * 7 + drawer % 3 : c * 7 + 7] = False
    return Image.fromarray(pixels)


def make_omniglot(root: Path, alphabets: dict[str, int], drawers: int = 4, start: int = 0) -> Path:
    """``root/<top>/<alphabet>/characterNN/*.png`` like the Omniglot release; returns ``root``."""
    for a, (alphabet, n_chars) in enumerate(alphabets.items()):
        for c in range(1, n_chars + 1):
            folder = root / "images_background" / alphabet / f"character{c:02d}"
            folder.mkdir(parents=True)
            for d in range(drawers):
                _glyph(start + 5 * a + c, d).save(folder / f"{a:02d}{c:02d}_{d + 1:02d}.png")
    return root


def zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.rglob("*")):
            archive.write(file, file.relative_to(folder).as_posix())
    return path


@pytest.fixture
def omniglot(tmp_path):
    """Two archives sharing the alphabet Greek (like the two small background subsets)."""
    one = make_omniglot(tmp_path / "one", {"Greek": 2, "Korean": 3, "Latin": 2})
    two = make_omniglot(tmp_path / "two", {"Greek": 2, "Tagalog": 3, "Sanskrit": 2}, start=0)
    return zip_folder(one, tmp_path / "one.zip"), zip_folder(two, tmp_path / "two.zip"), one


def test_zip_and_folder_read_the_same_characters(omniglot):
    one_zip, _, one_dir = omniglot
    from_zip = read_omniglot([one_zip], image_size=14)
    from_dir = read_omniglot([one_dir], image_size=14)
    assert from_zip.names == ["Greek/character01", "Greek/character02", "Korean/character01", "Korean/character02",
                              "Korean/character03", "Latin/character01", "Latin/character02"]
    assert from_zip.names == from_dir.names
    for a, b in zip(from_zip.images, from_dir.images):
        assert a.shape == (4, 1, 14, 14) and a.dtype == torch.float32
        torch.testing.assert_close(a, b)
    # inverted: the white background reads 0, the black stroke 1
    x = from_zip.images[0][0, 0]
    assert x[-1, -1] == pytest.approx(0, abs=1e-3) and x.max() == pytest.approx(1, abs=1e-2)


def test_an_alphabet_in_two_archives_is_one_set_of_characters(omniglot):
    one_zip, two_zip, _ = omniglot
    both = read_omniglot([one_zip, two_zip], image_size=10)
    assert len(both) == 2 + 3 + 2 + 3 + 2  # Greek once, Korean, Latin, Tagalog, Sanskrit
    greek = [x for n, x in zip(both.names, both.images) if n.startswith("Greek/")]
    assert len(greek) == 2 and all(len(x) == 4 for x in greek)  # not 8 images: the copies are read once
    only = read_omniglot([one_zip, two_zip], ["Tagalog"], image_size=10)
    assert [n.split("/")[0] for n in only.names] == ["Tagalog"] * 3
    with pytest.raises(UserError, match="alphabet 'Cyrillic' not found"):
        read_omniglot([one_zip], ["Cyrillic"])


def test_rotations_are_extra_classes():
    x = torch.zeros(2, 1, 4, 4)
    x[:, 0, 0, 0] = 1.0  # top-left corner
    rotated = with_rotations(read_free_classes(x))
    assert rotated.names == ["a", "a/rot90", "a/rot180", "a/rot270"]
    # torch.rot90 turns counter-clockwise: top-left -> bottom-left -> bottom-right -> top-right
    corners = [tuple(torch.nonzero(img[0, 0]).tolist()[0]) for img in rotated.images]
    assert corners == [(0, 0), (3, 0), (3, 3), (0, 3)]
    assert [base_name(n) for n in rotated.names] == ["a"] * 4
    # a character whose own name is a suffix's word is not a copy of anything
    assert base_name("mirror") == "mirror" and base_name("rot90") == "rot90"


def test_mirrors_then_rotations_are_extra_classes_of_the_same_character(omniglot):
    x = torch.zeros(2, 1, 4, 4)
    x[:, 0, 0, 0] = 1.0
    mirrored = with_rotations(with_mirrors(read_free_classes(x)))
    assert mirrored.names[:4] == ["a", "a/mirror", "a/rot90", "a/mirror/rot90"]
    assert tuple(torch.nonzero(mirrored.images[1][0, 0]).tolist()[0]) == (0, 3)  # left-right flip
    assert {base_name(n) for n in mirrored.names} == {"a"} and len(mirrored) == 8
    one_zip, two_zip, _ = omniglot
    config = SupervisedConfig(task="omniglot", train_data=[str(one_zip)], test_data=[str(two_zip)],
                              test_alphabets=["Tagalog", "Sanskrit"], image_size=10, mirrors=True)
    train, test = load_image_splits(config)
    assert len(train) == 8 * 7 and len(test) == 5  # the test split is never mirrored or rotated
    with pytest.raises(UserError, match="in both"):
        check_disjoint(train, with_mirrors(read_omniglot([two_zip], ["Greek"], 10)))


def test_affine_images_rotate_and_shift_like_exact_pixel_moves():
    x = torch.rand(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    ones, zeros = torch.ones(3), torch.zeros(3)
    torch.testing.assert_close(affine_images(x, zeros, ones, zeros, zeros), x, atol=1e-6, rtol=0)
    # a quarter turn counter-clockwise is torch.rot90's, a half turn its k=2
    torch.testing.assert_close(affine_images(x, ones * torch.pi / 2, ones, zeros, zeros),
                               torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(affine_images(x, ones * torch.pi, ones, zeros, zeros),
                               torch.rot90(x, 2, dims=(-2, -1)), atol=1e-5, rtol=0)
    # one pixel right and two down; the uncovered edge is 0
    moved = affine_images(x, zeros, ones, ones, 2 * ones)
    torch.testing.assert_close(moved[..., 2:, 1:], x[..., :-2, :-1], atol=1e-6, rtol=0)
    assert moved[..., :2, :].abs().max() < 1e-6 and moved[..., :, 0].abs().max() < 1e-6
    # a 2x zoom puts the centre 2x2 block (pixel centres at +-0.5) onto the centre 4x4 with interpolation
    zoomed = affine_images(x, zeros, 2 * ones, zeros, zeros)
    torch.testing.assert_close(zoomed[..., 2, 2], 0.75 * (0.75 * x[..., 2, 2] + 0.25 * x[..., 2, 3])
                               + 0.25 * (0.75 * x[..., 3, 2] + 0.25 * x[..., 3, 3]), atol=1e-5, rtol=0)


def test_random_affine_is_seeded_bounded_and_off_at_zero():
    x = torch.zeros(4, 5, 1, 9, 9)
    x[..., 4, 4] = 1.0  # one bright centre pixel per image
    assert random_affine(x, torch.Generator(), 0.0, 0.0, 0.0) is x
    a = random_affine(x, torch.Generator().manual_seed(1), 10.0, 2.0, 0.1)
    b = random_affine(x, torch.Generator().manual_seed(1), 10.0, 2.0, 0.1)
    assert a.shape == x.shape and torch.equal(a, b)
    flat = a.reshape(20, 9, 9)
    assert len({tuple(img.flatten().tolist()) for img in flat}) == 20  # each image its own map
    rows, cols = torch.arange(9.0).view(9, 1), torch.arange(9.0).view(1, 9)
    mass = flat.sum((1, 2))
    centre_r, centre_c = (flat * rows).sum((1, 2)) / mass, (flat * cols).sum((1, 2)) / mass
    # rotation and zoom act about the centre, so the pixel moves only by the shift (<= 2 per axis)
    assert (centre_r - 4).abs().max() <= 2.01 and (centre_c - 4).abs().max() <= 2.01
    assert (centre_r - 4).abs().max() > 0.5  # and it does move
    # the two axes are shifted independently, not along one diagonal
    assert ((centre_r - 4) - (centre_c - 4)).abs().max() > 1.0


def test_augmentation_changes_training_draws_only(omniglot):
    one_zip, two_zip, _ = omniglot
    base = dict(task="omniglot", train_data=[str(one_zip)], test_data=[str(two_zip)],
                test_alphabets=["Tagalog", "Sanskrit"], image_size=10, ways=3, shots=1, query=1, eval_query=2)
    plain = image_problem(SupervisedConfig(**base))
    augmented = image_problem(SupervisedConfig(**base, augment_rotation=15, augment_shift=2, augment_scale=0.1))
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    p, a = plain.sample_train(4, g()), augmented.sample_train(4, g())
    # the same tasks and labels (augmentation draws after the tasks), other pixels
    assert torch.equal(p.support_y, a.support_y) and not torch.allclose(p.support_x, a.support_x)
    assert a.query_x.shape == p.query_x.shape and 0 <= a.query_x.min() and a.query_x.max() <= 1 + 1e-6
    test_p, test_a = plain.sample_test(4, g(), 1), augmented.sample_test(4, g(), 1)
    assert torch.equal(test_p.support_x, test_a.support_x) and torch.equal(test_p.query_x, test_a.query_x)
    for scale in (1.5, 1.0):  # a zoom of 1 - 1 = 0 would collapse the image
        with pytest.raises(UserError, match=f"'augment_scale' must be in \\[0, 1\\), got {scale}"):
            SupervisedConfig(**base, augment_scale=scale).validate()
    SupervisedConfig(**base, augment_scale=0.99).validate()
    with pytest.raises(UserError, match="'mirrors' applies to image tasks only"):
        SupervisedConfig(mirrors=True).validate()



def test_validation_tasks_use_the_training_classes_as_read(omniglot):
    one_zip, two_zip, _ = omniglot
    config = SupervisedConfig(task="omniglot", train_data=[str(one_zip)], test_data=[str(two_zip)],
                              test_alphabets=["Tagalog", "Sanskrit"], image_size=10, ways=3, shots=1, query=2, eval_query=2,
                              mirrors=True, augment_rotation=15)
    problem = image_problem(config)
    as_read = read_omniglot([one_zip], [], 10).images  # the 7 training characters, no mirrors or rotations
    tasks = problem.sample_validation(6, torch.Generator().manual_seed(0), 1)
    assert tasks.support_x.shape == (6, 3, 1, 10, 10) and tasks.query_x.shape == (6, 6, 1, 10, 10)
    for t in range(6):
        for label in range(3):
            images = torch.cat([tasks.support_x[t][tasks.support_y[t] == label],
                                tasks.query_x[t][tasks.query_y[t] == label]])
            # every image of a label is an unaltered image of one and the same training character
            owners = [c for c, x in enumerate(as_read) if all((x == image).all(-1).all(-1).all(-1).any() for image in images)]
            assert owners, f"task {t} label {label} is not a training character as read"


def read_free_classes(x):
    from metarl.supervised.images import ImageClasses

    return ImageClasses(["a"], [x])


def test_splits_never_share_a_character(omniglot):
    one_zip, two_zip, _ = omniglot
    config = SupervisedConfig(task="omniglot", train_data=[str(one_zip)], test_data=[str(two_zip)],
                              test_alphabets=["Tagalog", "Sanskrit"], image_size=10)
    train, test = load_image_splits(config)
    assert len(train) == 4 * 7 and len(test) == 5
    assert not {base_name(n) for n in train.names} & set(test.names)
    with pytest.raises(UserError, match="'Greek/character01' is in both the train and the test split"):
        load_image_splits(SupervisedConfig(task="omniglot", train_data=[str(one_zip)], test_data=[str(two_zip)]))
    with pytest.raises(UserError, match="in both"):
        check_disjoint(train, with_rotations(read_omniglot([two_zip], ["Greek"], 10)))


def test_folder_per_class_reader(tmp_path):
    for c, color in enumerate([(255, 0, 0), (0, 0, 255)]):
        folder = tmp_path / "train" / f"n0{c}"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 12), color).save(folder / f"{i}.jpg" if c else folder / f"{i}.png")
    classes = read_image_folders([tmp_path / "train"], image_size=8)
    assert classes.names == ["n00", "n01"]
    assert classes.images[0].shape == (3, 3, 8, 8)
    assert classes.images[0][:, 0].mean() > 0.95 and classes.images[0][:, 2].mean() < 0.05  # red stays red
    # rows stay rows: an image red on the left and blue on the right reads so in [channel, row, column]
    halves = np.zeros((8, 8, 3), np.uint8)
    halves[:, :4, 0], halves[:, 4:, 2] = 255, 255
    (tmp_path / "halves" / "c").mkdir(parents=True)
    Image.fromarray(halves).save(tmp_path / "halves" / "c" / "0.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "halves" / "stray.png")  # a file beside the class folders
    read = read_image_folders([tmp_path / "halves"], image_size=8)
    assert read.names == ["c"]  # the stray file is no class
    assert read.images[0][0, 0, :, :3].min() > 0.9 and read.images[0][0, 2, :, 5:].min() > 0.9
    gray = read_image_folders([zip_folder(tmp_path / "train", tmp_path / "t.zip")], image_size=8, grayscale=True)
    assert gray.images[1].shape == (3, 1, 8, 8)


def test_a_class_name_in_two_folders_of_one_source_is_an_error_not_a_merge(tmp_path):
    for group in ("x", "y"):  # x/c1 and y/c1 would have read as one class, the second's 0.png dropped
        (tmp_path / "set" / group / "c1").mkdir(parents=True)
        Image.new("L", (8, 8), 255).save(tmp_path / "set" / group / "c1" / "0.png")
    with pytest.raises(UserError, match=r"class 'c1' is found in two folders of .*set \(x/c1 and y/c1\)"):
        read_image_folders([tmp_path / "set"], image_size=8)
    # given as two sources, the name is one class on purpose (the Omniglot subsets' Greek), read once
    both = read_image_folders([tmp_path / "set" / "x", tmp_path / "set" / "y"], image_size=8)
    assert both.names == ["c1"] and both.images[0].shape[0] == 1


def test_16_bit_greys_are_scaled_not_clipped(tmp_path):
    folder = tmp_path / "set" / "c1"
    folder.mkdir(parents=True)
    ramp = np.repeat(np.linspace(0, 65535, 16).astype(np.uint16)[None], 16, axis=0)  # left black, right white
    Image.fromarray(ramp).save(folder / "0.png")
    assert Image.open(folder / "0.png").mode == "I;16"
    image = read_image_folders([tmp_path / "set"], image_size=16, grayscale=True).images[0][0, 0]
    assert image[:, 0].max() < 0.01 and image[:, -1].min() > 0.99
    assert 0.4 < image.mean() < 0.6  # clipping at 255 of 65535 had made it almost all white
    # mid grey is 128 of 255: the high byte, not the value modulo 256 (the ramp's steps of 17 * 257 hide that)
    Image.fromarray(np.full((8, 8), 0x8000, np.uint16)).save(folder / "0.png")
    image = read_image_folders([tmp_path / "set"], image_size=8, grayscale=True).images[0]
    assert image.mean().item() == pytest.approx(128 / 255, abs=1e-3)


def test_task_sampler_shapes_labels_and_distinct_examples(omniglot):
    classes = read_omniglot([omniglot[0]], image_size=10)
    # make every image unique so repeats are detectable
    classes.images = [torch.arange(4 * 100, dtype=torch.float32).view(4, 1, 10, 10) + 1000 * i for i in range(7)]
    tasks = sample_image_tasks(classes, 6, 3, 1, 2, torch.Generator().manual_seed(0))
    assert tasks.support_x.shape == (6, 3, 1, 10, 10) and tasks.query_x.shape == (6, 6, 1, 10, 10)
    assert tasks.support_y.tolist() == [[0, 1, 2]] * 6 and tasks.query_y.tolist() == [[0, 0, 1, 1, 2, 2]] * 6
    for t in range(6):
        ids = torch.cat([tasks.support_x[t], tasks.query_x[t]])[:, 0, 0, 0]
        assert len(set(ids.tolist())) == 9  # no image twice in a task
        support_class = (tasks.support_x[t, :, 0, 0, 0] // 1000).tolist()
        query_class = (tasks.query_x[t, :, 0, 0, 0] // 1000).tolist()
        assert len(set(support_class)) == 3 and query_class == [c for c in support_class for _ in range(2)]
    again = sample_image_tasks(classes, 6, 3, 1, 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.query_x, tasks.query_x)
    with pytest.raises(UserError, match="exceeds the 4 images"):
        sample_image_tasks(classes, 1, 3, 2, 3, torch.Generator())
    with pytest.raises(UserError, match="8-way tasks need 8 classes"):
        sample_image_tasks(classes, 1, 8, 1, 1, torch.Generator())
    sample_image_tasks(classes, 1, 7, 1, 1, torch.Generator())  # as many ways as classes is fine
    # over many tasks every class is drawn, and with several shots the labels stay grouped with their images
    tasks = sample_image_tasks(classes, 20, 3, 2, 1, torch.Generator().manual_seed(0))
    support_class = tasks.support_x[:, :, 0, 0, 0] // 1000
    assert set(support_class.flatten().tolist()) == set(range(7))
    assert tasks.support_y.tolist() == [[0, 0, 1, 1, 2, 2]] * 20
    assert (support_class[:, 0::2] == support_class[:, 1::2]).all()


def test_bad_data_paths_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=f"data path not found: {tmp_path / 'nope.zip'}$"):
        read_omniglot([tmp_path / "nope.zip"])
    with pytest.raises(UserError, match=r"data path not found: data/nope.zip \(relative to .*: a config's data paths "
                                        r"are read from the working directory\)$"):
        read_omniglot(["data/nope.zip"])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="neither a folder nor a zip"):
        read_omniglot([tmp_path / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images in the <alphabet>/<character>/\\*.png layout"):
        read_omniglot([tmp_path / "empty"])
    bad = tmp_path / "bad" / "A" / "character01"
    bad.mkdir(parents=True)
    (bad / "x.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image .*x.png"):
        read_omniglot([tmp_path / "bad"])
    # a zip whose deflated bytes are damaged (zlib's error, not a bad CRC)
    good = tmp_path / "good" / "A" / "character01"
    good.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(good / "x.png")
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(good / "x.png", "A/character01/x.png")
    with zipfile.ZipFile(damaged) as archive:
        info = archive.infolist()[0]
    data = bytearray(damaged.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 2:start + 40] = bytes(range(38))
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserError, match="cannot read .*damaged.zip:A/character01/x.png"):
        read_omniglot([damaged])


def test_symlinked_folders_are_read_and_macos_resource_forks_skipped(omniglot, tmp_path):
    _, _, one_dir = omniglot
    top = one_dir / "images_background"
    linked = tmp_path / "linked" / "images_background"
    linked.mkdir(parents=True)
    (linked / "Greek").symlink_to(top / "Greek", target_is_directory=True)  # a linked alphabet
    (linked / "Korean").mkdir()
    for character in sorted((top / "Korean").iterdir()):  # linked characters beside a real one
        (linked / "Korean" / character.name).symlink_to(character, target_is_directory=True)
    (linked / "Korean" / "loop").symlink_to(linked, target_is_directory=True)  # a cycle ends
    (linked / "Latin").mkdir()
    (linked / "Latin" / "character01").symlink_to(top / "Latin" / "character01", target_is_directory=True)
    (linked / "Latin" / "character02").mkdir()
    for image in (top / "Latin" / "character02").iterdir():
        (linked / "Latin" / "character02" / image.name).write_bytes(image.read_bytes())
    # what macOS leaves in a folder it copied or zipped: not images
    (linked / "Latin" / "character02" / "._0000_01.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (linked / ".DS_Store").write_bytes(b"Bud1")
    direct, through_links = read_omniglot([one_dir], image_size=14), read_omniglot([linked], image_size=14)
    assert through_links.names == direct.names and len(direct) == 7
    # a folder and a link to it, side by side: both are read, each under its own name (only cycles are cut)
    both = tmp_path / "both" / "images_background"
    both.mkdir(parents=True)
    (both / "Greek").symlink_to(top / "Greek", target_is_directory=True)
    (both / "Alias").symlink_to(top / "Greek", target_is_directory=True)
    assert read_omniglot([both.parent], image_size=14).names == ["Alias/character01", "Alias/character02",
                                                                 "Greek/character01", "Greek/character02"]
    for a, b in zip(direct.images, through_links.images):
        assert torch.equal(a, b)
    mac = tmp_path / "mac.zip"
    with zipfile.ZipFile(mac, "w") as archive:
        for file in sorted(top.rglob("*.png")):
            name = file.relative_to(top.parent).as_posix()
            archive.write(file, name)
            archive.writestr(f"__MACOSX/{name.rpartition('/')[0]}/._{file.name}", b"\x00\x05\x16\x07 resource fork")
    assert read_omniglot([mac], image_size=14).names == direct.names


def test_damaged_or_truncated_zip_archives_are_one_line_errors(omniglot, tmp_path):
    one_zip = omniglot[0]
    data = one_zip.read_bytes()
    directory = tmp_path / "directory.zip"  # the end record intact, the central directory damaged
    directory.write_bytes(data.replace(b"PK\x01\x02", b"PK\x09\x09", 1))
    with pytest.raises(UserError, match="directory.zip is not a readable zip archive"):
        read_omniglot([directory])
    method = bytearray(data)  # an entry in a compression method zipfile cannot read (as Deflate64 from Windows)
    entry = data.index(b"PK\x01\x02")
    while entry != -1:  # every entry of the central directory
        method[entry + 10:entry + 12] = (99).to_bytes(2, "little")
        entry = data.find(b"PK\x01\x02", entry + 4)
    (tmp_path / "method.zip").write_bytes(bytes(method))
    with pytest.raises(UserError, match="cannot read .*method.zip:.*compression method"):
        read_omniglot([tmp_path / "method.zip"])
    truncated = tmp_path / "truncated.zip"  # a download cut short
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"truncated.zip is not a readable zip archive \(truncated or corrupt\?\)"):
        read_omniglot([truncated])
    with pytest.raises(UserError, match=r"x.png \(not an image format PIL reads\)$"):
        bad = tmp_path / "bad" / "A" / "character01"
        bad.mkdir(parents=True)
        (bad / "x.png").write_bytes(b"not a png")
        read_omniglot([tmp_path / "bad"])


def _write_config(tmp_path, one_zip, two_zip, **extra):
    lines = {"task": '"omniglot"', "train_data": f'["{one_zip}"]', "test_data": f'["{two_zip}"]',
             "test_alphabets": '["Tagalog", "Sanskrit"]', "ways": "3", "shots": "1", "query": "1",
             "eval_query": "2", "image_size": "10", "filters": "4", "meta_batch_size": "2", "iterations": "3",
             "inner_lr": "0.4", "eval_tasks": "4", "eval_steps": "2", "vmap_tasks": "false", **extra}
    path = tmp_path / "omni.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
    return path


@pytest.mark.parametrize("algorithm", ["maml", "reptile", "pretrain"])
def test_cli_trains_and_evaluates_an_image_run(omniglot, tmp_path, capsys, algorithm):
    one_zip, two_zip, _ = omniglot
    config = _write_config(tmp_path, one_zip, two_zip, algorithm=f'"{algorithm}"',
                           vmap_tasks="true" if algorithm == "reptile" else "false")
    run = tmp_path / "run"
    assert main(["supervised", "train", str(config), "--out", str(run)]) == 0
    assert main(["supervised", "evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"task": "omniglot", "ways": 3, "shots": 1}.items() <= result.items()
    assert 0 <= result["accuracy"] <= 1 and result["ci95"] >= 0 and result["train_iterations"] == 3
    assert json.loads((run / "evaluation.json").read_text()) == result
    assert load_config(SupervisedConfig, run / "config.toml").algorithm == algorithm
    assert main(["supervised", "evaluate", str(run), "--json", "--shots", "2", "--steps", "0"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["shots"] == 2 and other["steps"] == 0 and other["accuracy"] == other["accuracy_before"]
    assert json.loads((run / "evaluation_2shot_0steps.json").read_text()) == other
    if algorithm == "pretrain":
        # the all-class head is replaced by a zero 3-way head: before fine-tuning every logit ties, argmax says
        # class 0, and the balanced query sets score exactly 1/3; fine-tuning moves it
        assert result["accuracy_before"] == pytest.approx(1 / 3) and result["accuracy"] != pytest.approx(1 / 3)
    # of several test step sizes, the one with the best validation accuracy is used
    assert main(["supervised", "evaluate", str(run), "--json", "--inner-lr", "0.001", "0.4", "4", "--val-tasks", "4"]) == 0
    chosen = json.loads(capsys.readouterr().out)
    scores = {float(k): v for k, v in chosen["validation"]["scores"].items()}
    assert len(set(scores.values())) == 3 and chosen["inner_lr"] == max(scores, key=scores.get)


def test_cli_names_a_missing_data_file(omniglot, tmp_path, capsys):
    one_zip, _, _ = omniglot
    config = _write_config(tmp_path, one_zip, tmp_path / "missing.zip")
    assert main(["supervised", "train", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: data path not found: {tmp_path / 'missing.zip'}\n"
    assert not (tmp_path / "run").exists()  # nothing written for a run that could not start


@pytest.mark.parametrize("key, value, message", [
    ("eval_query", "10", "shots + eval_query = 1 + 10 exceeds the 4 images of the smallest test class"),
    ("query", "4", "shots + query = 1 + 4 exceeds the 4 images of the smallest train class"),
    ("ways", "6", "6-way tasks need 6 classes, the test split has 5"),
    ("ways", "29", "29-way tasks need 29 classes, the train split has 28"),  # 7 characters x 4 rotations
])
def test_task_sizes_the_classes_cannot_fill_are_refused_before_training(omniglot, tmp_path, capsys, key, value, message):
    # the default eval_query (100, the sinusoid's) would otherwise train a run that can never be evaluated
    one_zip, two_zip, _ = omniglot
    config = _write_config(tmp_path, one_zip, two_zip, **{key: value})
    assert main(["supervised", "train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "run").exists()
    # evaluating a trained run with more shots than the test classes hold names the same sum
    config = _write_config(tmp_path, one_zip, two_zip)
    assert main(["supervised", "train", str(config), "--out", str(tmp_path / "ok")]) == 0
    assert main(["supervised", "evaluate", str(tmp_path / "ok"), "--shots", "3"]) == 2
    assert capsys.readouterr().err.endswith(
        "error: shots + eval_query = 3 + 2 exceeds the 4 images of the smallest test class\n")
