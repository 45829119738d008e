"""Image readers (Omniglot release layout, folder-per-class), rotated classes, N-way K-shot tasks.

A data source is a folder or a ``.zip`` archive. Omniglot keeps every character at
``<anything>/<alphabet>/<character>/<file>.png``; a generic image set (the usual
MiniImagenet layout) keeps every class at ``<anything>/<class>/<file>.{png,jpg,jpeg}``.
Only the last path components count, so the archive's top folder name does not matter
and the same alphabet read from two archives is one alphabet (a character found in
both is read once).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from metarl.errors import UserError
from metarl.supervised.tasks import TaskBatch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ROTATIONS = (90, 180, 270)


@dataclass
class ImageClasses:
    """Named classes of equally sized images: ``images[i] [n_i, C, H, W]`` float32 in [0, 1].

    ``names[i]`` is ``"<alphabet>/<character>"`` (Omniglot) or ``"<class>"``, with a
    ``"/mirror"`` suffix for mirrored copies and a ``"/rot90"``-style one for rotated
    copies; :func:`base_name` strips them.
    """

    names: list[str]
    images: list[Tensor]

    def __len__(self) -> int:
        return len(self.names)


def base_name(name: str) -> str:
    """The character or class a (possibly mirrored and rotated) class name came from."""
    head, _, tail = name.rpartition("/")
    if head and (tail == "mirror" or (tail.startswith("rot") and tail[3:].isdigit())):
        return base_name(head)
    return name


def _skipped(parts: Sequence[str]) -> bool:
    """Hidden files and folders, and the resource forks macOS adds to archives (``__MACOSX/``, ``._x.png``)."""
    return any((part.startswith(".") and part not in (".", "..")) or part == "__MACOSX" for part in parts)


def _folder_images(source: Path) -> list[tuple[tuple[str, ...], Path]]:
    """Every image file under the folder ``source`` as (path parts below it, path), sorted by parts;
    symlinked folders are followed like folders, except a link back to a folder above it (a cycle)."""
    found, real_of = [], {}
    for folder, subfolders, files in os.walk(source, followlinks=True):
        subfolders.sort()
        here = Path(folder)
        real = os.path.realpath(folder)
        if real in {real_of[above] for above in here.parents if above in real_of}:
            subfolders[:] = []
            continue
        real_of[here] = real
        below = here.relative_to(source).parts
        for name in files:
            path = Path(folder, name)
            if name.lower().endswith(IMAGE_SUFFIXES) and not _skipped((*below, name)) and path.is_file():
                found.append(((*below, name), path))
    return sorted(found)


def _image_files(source: Path) -> Iterator[tuple[tuple[str, ...], Callable[[], bytes], str]]:
    """Every image under ``source``: (path parts, a reader of its bytes, a printable location).

    A reader is only valid while the iteration is running (the archive is closed after it).
    """
    if not source.exists():
        where = "" if source.is_absolute() else f" (relative to {Path.cwd()}: a config's data paths are read from the working directory)"
        raise UserError(f"data path not found: {source}{where}")
    if source.is_dir():
        for parts, path in _folder_images(source):
            yield parts, path.read_bytes, str(path)
        return
    if not zipfile.is_zipfile(source):
        if source.suffix.lower() == ".zip":
            raise UserError(f"data path {source} is not a readable zip archive (truncated or corrupt?)")
        raise UserError(f"data path {source} is neither a folder nor a zip archive")
    try:
        archive = zipfile.ZipFile(source)
        names = sorted(n for n in archive.namelist()
                       if n.lower().endswith(IMAGE_SUFFIXES) and not _skipped(n.split("/")))
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"data path {source} is not a readable zip archive ({exc})") from None
    with archive:
        for name in names:
            yield tuple(name.split("/")), (lambda n=name: archive.read(n)), f"{source}:{name}"


def _decode(data: bytes, where: str, image_size: int, grayscale: bool, invert: bool) -> np.ndarray:
    """Bytes -> ``[C, image_size, image_size]`` float32 in [0, 1]."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode.startswith("I;16"):  # 16-bit grey: convert() would clip at 255, not scale
                image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8), "L")
            image = image.convert("L" if grayscale else "RGB").resize((image_size, image_size), Image.LANCZOS)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except UnidentifiedImageError:
        raise UserError(f"cannot read image {where} (not an image format PIL reads)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read image {where} ({exc})") from None
    if invert:
        array = 1.0 - array
    return array[None] if grayscale else array.transpose(2, 0, 1)


def _read_classes(
    sources: Iterable[str | Path],
    depth: int,
    image_size: int,
    grayscale: bool,
    invert: bool,
    keep: Callable[[tuple[str, ...]], bool],
    layout: str,
) -> ImageClasses:
    """Group images by the ``depth`` folder names above each file (1: class, 2: alphabet/character)."""
    images: dict[str, dict[str, np.ndarray]] = {}
    for source in sources:
        source = Path(source)
        found = 0
        folder_of: dict[str, tuple[str, ...]] = {}  # class -> the folder it was read from, in this source
        for parts, read, where in _image_files(source):
            if len(parts) < depth + 1:
                continue
            found += 1
            key, file = "/".join(parts[-depth - 1 : -1]), parts[-1]
            if not keep(parts[-depth - 1 : -1]):
                continue
            # Two folders of one source with the same class name would merge two classes (and drop the
            # files they share names with); across sources the same name is the same class, read once
            # (Greek is in both Omniglot subsets).
            if folder_of.setdefault(key, parts[:-1]) != parts[:-1]:
                raise UserError(f"class {key!r} is found in two folders of {source} ({'/'.join(folder_of[key])} and "
                                f"{'/'.join(parts[:-1])}); class names must be unique there (give the folders as "
                                "separate sources to merge them)")
            if file in images.get(key, {}):
                continue
            try:
                data = read()
            # a damaged entry can also read as an unknown compression method (or Deflate64) or an encrypted one
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
                raise UserError(f"cannot read {where} ({exc})") from None
            images.setdefault(key, {})[file] = _decode(data, where, image_size, grayscale, invert)
        if found == 0:
            raise UserError(f"no images in the {layout} layout under {source}")
    names = sorted(images)
    return ImageClasses(names, [torch.from_numpy(np.stack(list(images[n].values()))) for n in names])


def read_omniglot(
    sources: Sequence[str | Path], alphabets: Sequence[str] = (), image_size: int = 28
) -> ImageClasses:
    """Omniglot characters from release-layout folders or zips, one class per ``alphabet/character``.

    ``alphabets`` keeps only those alphabets (all when empty; a name found in no source
    is an error). Images are resized to ``image_size`` and inverted, so strokes are 1.
    """
    wanted = set(alphabets)
    classes = _read_classes(
        sources, 2, image_size, True, True, lambda key: not wanted or key[0] in wanted, "<alphabet>/<character>/*.png"
    )
    missing = sorted(wanted - {name.split("/")[0] for name in classes.names})
    if missing:
        raise UserError(f"alphabet {missing[0]!r} not found in {', '.join(map(str, sources))}")
    return classes


def read_image_folders(
    sources: Sequence[str | Path], image_size: int, grayscale: bool = False
) -> ImageClasses:
    """A folder-per-class image set (``<class>/<image>``), resized to ``image_size`` squares."""
    return _read_classes(sources, 1, image_size, grayscale, False, lambda key: True, "<class>/<image>")


def _with_copies(classes: ImageClasses, copies: Sequence[tuple[str, Callable[[Tensor], Tensor]]]) -> ImageClasses:
    """``classes``, then for each ``(suffix, transform)`` every class transformed, named ``<name>/<suffix>``."""
    names, images = list(classes.names), list(classes.images)
    for suffix, transform in copies:
        names += [f"{name}/{suffix}" for name in classes.names]
        images += [transform(x) for x in classes.images]
    return ImageClasses(names, images)


def with_rotations(classes: ImageClasses) -> ImageClasses:
    """Add each class rotated by 90, 180 and 270 degrees as three new classes."""
    return _with_copies(
        classes, [(f"rot{d}", lambda x, k=d // 90: torch.rot90(x, k=k, dims=(-2, -1))) for d in ROTATIONS]
    )


def with_mirrors(classes: ImageClasses) -> ImageClasses:
    """Add each class mirrored left to right as a new class (a mirrored character is another character)."""
    return _with_copies(classes, [("mirror", lambda x: torch.flip(x, dims=(-1,)))])


def affine_images(x: Tensor, angle: Tensor, scale: Tensor, shift_x: Tensor, shift_y: Tensor) -> Tensor:
    """Rotate, scale and shift each image of ``x [B, C, H, W]`` about its centre (bilinear; uncovered
    pixels are 0, Omniglot's background after inversion, as torchvision fills them).

    Per image: ``angle`` in radians (counter-clockwise, as :func:`torch.rot90`), ``scale`` a
    zoom factor (> 1 enlarges), ``shift_x`` / ``shift_y`` in pixels (right / down); all ``[B]``.
    """
    _, _, height, width = x.shape
    # affine_grid maps each output location to the input location it reads, in [-1, 1] units:
    # the inverse transform, so the rotation angle and the zoom enter inverted.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    tx, ty = -2 * shift_x / width, -2 * shift_y / height
    row_x = torch.stack([cos, -sin, cos * tx - sin * ty], -1)
    row_y = torch.stack([sin, cos, sin * tx + cos * ty], -1)
    grid = F.affine_grid(torch.stack([row_x, row_y], -2), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(x: Tensor, generator: torch.Generator, rotation: float, shift: float, scale: float) -> Tensor:
    """Each image of ``x [..., C, H, W]`` under its own random affine map, uniform within the bounds.

    ``rotation`` in degrees, ``shift`` in pixels (each axis), ``scale`` a relative zoom
    (factor in [1 - scale, 1 + scale]). All zero returns ``x`` itself.
    """
    if rotation == shift == scale == 0:
        return x
    flat = x.reshape(-1, *x.shape[-3:])
    u = torch.rand(4, len(flat), generator=generator) * 2 - 1
    out = affine_images(flat, u[0] * math.radians(rotation), 1 + u[1] * scale, u[2] * shift, u[3] * shift)
    return out.reshape(x.shape)


def check_disjoint(train: ImageClasses, test: ImageClasses) -> None:
    """Raise a UserError naming a character (or class) that is in both splits."""
    shared = sorted({base_name(n) for n in train.names} & {base_name(n) for n in test.names})
    if shared:
        raise UserError(f"{shared[0]!r} is in both the train and the test split ({len(shared)} shared in all)")


def check_task_size(
    classes: ImageClasses, ways: int, shots: int, query: int, query_key: str = "query", split: str = "",
) -> None:
    """The one-line error when ``classes`` cannot make a ``ways``-way task of ``shots + query`` images per
    class (too few classes, or a class too small); the message names the config key of ``query`` and the
    split (``"test"``, ...)."""
    if ways > len(classes):
        raise UserError(f"{ways}-way tasks need {ways} classes, the {split + ' ' if split else ''}split has "
                        f"{len(classes)}")
    smallest = min(len(x) for x in classes.images)
    if shots + query > smallest:
        raise UserError(f"shots + {query_key} = {shots} + {query} exceeds the {smallest} images of the smallest "
                        f"{split + ' ' if split else ''}class")


def sample_image_tasks(
    classes: ImageClasses, n_tasks: int, ways: int, shots: int, query: int, generator: torch.Generator,
    query_key: str = "query", split: str = "",
) -> TaskBatch:
    """``n_tasks`` N-way K-shot tasks: ``support_x [T, N*K, C, H, W]``, ``query_x [T, N*Q, C, H, W]``.

    Each task draws ``ways`` distinct classes in random order (label i = i-th drawn
    class) and, per class, ``shots + query`` distinct images; examples are grouped
    by label (``support_y = [0]*K + [1]*K + ...``). ``query_key`` and ``split`` name the
    query size's config key and the split in the error for classes too small.
    """
    check_task_size(classes, ways, shots, query, query_key, split)
    support, queries = [], []
    for _ in range(n_tasks):
        chosen = torch.randperm(len(classes), generator=generator)[:ways].tolist()
        s, q = [], []
        for c in chosen:
            x = classes.images[c]
            picked = x[torch.randperm(len(x), generator=generator)[: shots + query]]
            s.append(picked[:shots])
            q.append(picked[shots:])
        support.append(torch.cat(s))
        queries.append(torch.cat(q))
    labels = torch.arange(ways)
    return TaskBatch(
        torch.stack(support),
        labels.repeat_interleave(shots).expand(n_tasks, -1).clone(),
        torch.stack(queries),
        labels.repeat_interleave(query).expand(n_tasks, -1).clone(),
    )
