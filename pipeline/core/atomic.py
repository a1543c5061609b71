"""Atomic file writing: write to a temporary file in the destination folder, then rename over the target.

A reader therefore sees either the old file or the complete new one, never a half-written file, and a crash leaves
no partial output behind (the temporary file is removed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the process umask); ``mkstemp`` uses 0o600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``, on error delete it.

    ``suffix`` defaults to the target's full suffix (e.g. ``.nii.gz``) so that libraries choosing a format from the
    file name (nibabel, matplotlib) write the right one.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    >>> oct((d / "a.txt").stat().st_mode & 0o777) == oct(_FILE_MODE)
    True
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``target`` to fill; when the block ends without an error it replaces
    ``target`` (an existing one is removed first), otherwise it is removed and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def folder_lock(folder: str | Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``folder`` for the block: a second writer of the same folder
    waits until the first is done (``on_wait`` is called once if it has to), so two runs into one output folder
    follow each other instead of interleaving. The lock is on the folder itself (no lock file among the outputs)
    and is released by the kernel when the process ends, even on SIGKILL. Where ``fcntl`` does not exist
    (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def write_bytes(target: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``target``; returns the target path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | Path, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``target``; returns the target path."""
    return write_bytes(target, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json(target: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (numpy scalars and arrays converted, NaN refused)."""
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=False, sort_keys=False)
    return write_text(target, text + "\n")
