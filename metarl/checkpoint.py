"""Checkpoint files: written atomically, read back without unpickling arbitrary objects.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts saved with
``torch.save``; it is loaded with ``torch.load(weights_only=True)``, so a file
cannot execute code. Writing goes to a temporary file in the same folder that is
then renamed over the target, so an interrupted write never destroys the last good
checkpoint.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import signal
import tempfile
import threading
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from metarl.errors import UserError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename, fsync of the folder); one
    writer per path (a run directory is locked, :func:`exclusive_run`), so older temporary files are
    leftovers of a crash and are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file owner-only; give it an ordinary file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself survive a power cut
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a write a crash cut short
        stale.unlink(missing_ok=True)


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a missing or corrupt file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        is_zip = zipfile.is_zipfile(path)
    except zipfile.BadZipFile:  # a damaged end record can fail the test itself
        is_zip = False
    if not is_zip:
        raise UserError(f"checkpoint {path} is corrupt or not a metarl checkpoint (not a torch zip archive)")
    try:  # torch.load does not check the archive's CRCs: flipped bytes in a tensor would load as wrong weights
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            # torch.load reads an entry flagged as a folder (a name ending in / or MS-DOS attribute 0x10) as empty,
            # which loads as junk weights; a checkpoint holds no folders
            folders = [info.filename for info in archive.infolist() if info.is_dir() or info.external_attr & 0x10]
    # a flipped bit in the zip index can also read as an unknown compression method or an encrypted entry
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError, zlib.error) as exc:
        raise UserError(f"checkpoint {path} is corrupt ({type(exc).__name__})") from None
    if damaged is not None:
        raise UserError(f"checkpoint {path} is corrupt (checksum mismatch in {damaged})")
    if folders:
        raise UserError(f"checkpoint {path} is corrupt (entry {folders[0]} marked as a folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            IndexError, zlib.error) as exc:
        reason = "holds objects other than tensors and plain values" if "Weights only" in str(exc) else type(exc).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a metarl checkpoint ({reason})") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} is not a metarl checkpoint (no state dict)")
    return state


def _int_field(line: str, key: str) -> int | None:
    """``int(row[key])`` of one JSONL line; None for a damaged line (a write torn by a crash or a power cut
    leaves a partial line or NUL bytes at the end of a log)."""
    try:
        return int(json.loads(line)[key])
    except (ValueError, KeyError, TypeError):
        return None


def drop_log_rows_after(path: str | Path, iteration: int, key: str = "iteration") -> None:
    """Forget JSONL rows whose ``key`` is past ``iteration`` (the checkpoint's), so a resumed run does not
    log an iteration twice, and damaged rows, so a crash mid-write does not stop the resume."""
    path = Path(path)
    if path.exists():
        kept = [line for line in path.read_text(errors="replace").splitlines()
                if (row_iteration := _int_field(line, key)) is not None and row_iteration <= iteration]
        path.write_text("".join(line + "\n" for line in kept))


LOCK = ".lock"


@contextmanager
def exclusive_run(run_dir: str | Path) -> Iterator[None]:
    """Hold the run directory for one training process: a second one gets a UserError instead of
    interleaving its checkpoints and log rows with the first's (an OS lock, released when the
    process ends however it ends; the lock file is removed on a normal exit).

    While held, SIGTERM (``kill``, a job scheduler) raises KeyboardInterrupt like Ctrl-C, so a
    stopped training saves its last completed iteration and removes the lock file.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / LOCK, "w")
    except (FileExistsError, NotADirectoryError):  # it, or a folder above it, is a file
        raise UserError(f"run directory {run_dir} is not a folder (a file of that name, or above it, exists)") from None
    except OSError as exc:  # no permission, a read-only or virtual file system, a name too long
        raise UserError(f"run directory {run_dir} cannot be written ({exc.strerror or exc})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"run directory {run_dir} is being trained by another process; wait for it or stop it first") from None
    main_thread = threading.current_thread() is threading.main_thread()  # handlers can only be set there
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    try:
        yield
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        (run_dir / LOCK).unlink(missing_ok=True)
        handle.close()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
