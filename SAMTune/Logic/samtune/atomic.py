"""Atomic file writes and umask-respecting modes: shared helpers below every layer.

Readers see the old file or the complete new one, never a part; files made through ``tempfile``
get the mode a plain create would have given them. Used by the run folders, checkpoints, model
folders, the library and the image writers alike.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def umask_mode(*, directory: bool = False) -> int:
    """The permission bits the user's umask gives a new file (``0o666 & ~umask``) or folder (``0o777 & ~umask``)."""
    return (0o777 if directory else 0o666) & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux), since setting it
    to read it back could let another thread create a file with the wrong mode meanwhile."""
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


def as_if_created(path: str | Path, *, directory: bool = False) -> None:
    """Give a file or folder made by ``tempfile`` (always 0600 / 0700) the mode a plain create would
    have given it, so outputs and model folders follow the user's umask (a shared group can read them)."""
    os.chmod(path, umask_mode(directory=directory))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename."""
    atomic_write(path, lambda stream: stream.write(data))


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(stream)`` on a temporary sibling of ``path``, flush it to disk, then rename it
    over ``path``: readers see the old file or the complete new one, never a part."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        as_if_created(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ["as_if_created", "atomic_write", "atomic_write_bytes", "atomic_write_text", "umask_mode"]
