"""Small file-system steps that must be atomic: replace a file's whole content in place.

Readers (and a process killed half-way) see the old content or the new, never a torn one:
the bytes go to a temporary file in the same directory, are flushed to disk, then
``os.replace`` (rename(2), atomic on POSIX) swaps it in and the directory is synced so the
rename itself survives a power loss.

The temporary file of ``DIR/NAME`` is ``DIR/.NAME.tmp-PID`` (``temp_name``; PID is the
writer's process id). A writer killed with SIGKILL (or a power loss) leaves it behind:
whoever owns ``NAME`` and knows that no other writer of it is alive (a build holding its
directory's lock) removes such leftovers with ``remove_stale_temps``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TEMP_INFIX = ".tmp-"
"""``write_atomic``'s temporary file of ``NAME`` is ``.NAME`` + ``TEMP_INFIX`` + the writer's pid."""


def temp_name(path: Path, pid: int | None = None) -> Path:
    """The temporary file ``write_atomic`` uses for ``path`` in process ``pid`` (default: this one)."""
    return path.with_name(f".{path.name}{TEMP_INFIX}{os.getpid() if pid is None else pid}")


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files earlier ``write_atomic`` calls for ``path`` left
    (``.NAME.tmp-PID``, any pid); return them. Call it only while no other process can be
    writing ``path`` (e.g. under the lock of the build that owns it).

    Raises:
        OSError: the directory cannot be listed or a leftover cannot be removed (a missing
            directory is not an error).
    """
    pattern = re.compile(re.escape(f".{path.name}{TEMP_INFIX}") + r"[0-9]+")
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        if pattern.fullmatch(name):
            stale = path.parent / name
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Make ``path`` hold exactly ``data`` (bytes), atomically.

    Args:
        path: the file to create or replace; its directory must exist.
        data: the whole new content.
        sync: fsync the file and its directory (skip for scratch files).

    Raises:
        OSError: from the file system (ENOSPC, EACCES...); the temporary file is removed and
            ``path`` is unchanged.
    """
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
