"""Atomic file writes: write to a temporary file in the target folder, then rename over the target.

A crash mid-write never leaves a truncated output, so resumable jobs can trust that every file that
exists is complete. The file is fsync'ed before the rename and its folder after it (where the platform
allows), so a power loss cannot leave a renamed but empty checkpoint or table. Outputs get the modes a
plain write would give them (``0o666 & ~umask`` for files, ``0o777 & ~umask`` for folders), not
tempfile's private 0600/0700, so a team can read predictions and checkpoints.

Every output of rsuper goes through ``atomic_path`` (one file) or ``atomic_dir`` (one folder).

Example:
    >>> with atomic_path("out/table.csv") as tmp:
    ...     frame.to_csv(tmp, index=False)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask (read from /proc on Linux, so other threads never see a changed umask)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a file created by a plain ``open(path, "w")``: 0o666 & ~umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a folder created by a plain ``mkdir``: 0o777 & ~umask."""
    return 0o777 & ~current_umask()


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flushes a file's (or a folder's) data to disk; silently skipped where the OS cannot (e.g. folders on
    Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; fsyncs it and renames it onto ``path`` when the block succeeds.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.npy``) so writers that infer the
    format from the name work. Parent folders are created. The file gets ``0o666 & ~umask`` (a plain
    write's mode). After the rename the folder is fsync'ed. On error the temporary file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, file_mode())
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], prefix: str | None = None) -> Iterator[Path]:
    """Yields a temporary folder beside ``path``; on success it replaces ``path`` (an existing one is removed).

    The folder gets ``0o777 & ~umask`` (a plain mkdir's mode); the files in it are fsync'ed before the
    rename and the parent folder after it. On error the temporary folder is removed and ``path`` is kept.
    ``prefix`` names the temporary folder (default ``.<name>.``), e.g. for a cleanup of stale ones.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix or f".{target.name}.", dir=target.parent))
    try:
        os.chmod(tmp, dir_mode())
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                fsync_path(os.path.join(root, name))
            fsync_path(root)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Writes UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Writes JSON (indented, UTF-8) atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
