"""Files named on the command line (plots, videos): checked before any work, written with a one-line error.

A plot or video comes at the end of a long evaluation, so a name that cannot be written is refused
first (a wrong type, an existing folder of that name, a file where a folder should be, no write
permission); an OS error that only the write itself meets (a full disk, a read-only mount) is one
line too.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from metarl.errors import UserError

PLOT_SUFFIXES = (".png", ".pdf", ".svg")
VIDEO_SUFFIXES = (".mp4", ".gif")


def check_output_file(path: str | Path | None, option: str, suffixes: tuple[str, ...]) -> None:
    """Refuse ``path`` (given as ``option``) unless a file of one of ``suffixes`` can be written there;
    missing folders are fine (the write creates them). ``None``: nothing asked for."""
    if path is None:
        return
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{option} {path}: the file name must end in {', '.join(suffixes)}")
    try:
        if path.is_dir():
            raise UserError(f"{option} {path}: a folder of that name exists; give a file name")
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise UserError(f"{option} {path}: {folder} is a file, not a folder")
        writable = os.access(path if path.exists() else folder, os.W_OK)
    except OSError as exc:  # a name the system refuses outright (too long, say)
        raise UserError(f"{option} {path}: {exc.strerror or exc}") from None
    if not writable:
        raise UserError(f"{option} {path}: no permission to write {'it' if path.exists() else f'in {folder}'}")


@contextmanager
def writing(path: str | Path, option: str) -> Iterator[Path]:
    """Create ``path``'s folder; an OS error inside the block becomes a one-line UserError naming ``option``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None
