"""Small file-system steps that must be atomic: replace a file's whole content in place.

Readers (and a process killed half-way) see the old content or the new, never a torn one:
the bytes go to a temporary file in the same directory, are flushed to disk, then
``os.replace`` (rename(2), atomic on POSIX) swaps it in and the directory is synced so the
rename itself survives a power loss.
"""

from __future__ import annotations

import os
from pathlib import Path


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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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
