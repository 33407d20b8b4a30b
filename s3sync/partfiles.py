"""Part files of a ``pull --no-extract``: chunk pieces written in place as they arrive.

``PartFiles`` creates every part file at its final size and writes pieces of chunks at
their offsets with ``pwrite`` from the fetch workers (``ChunkFetcher.fetch_to``). Bytes
land before their chunk is verified; the pull's journal only ever advances over
verified chunks, and a chunk that fails is written again by its retry or by the rerun.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from .archive import NotRegularFile, open_regular_for_write, translate_os_error
from .errors import DestinationError, Interrupted
from .planning import ChunkJob


class PartFiles:
    """The part files of one dataset in a directory, open for writing.

    Args:
        directory: where the part files go (it exists).
        parts: ``(file name, size in bytes)`` per part index.
        shown: ``directory`` as named in messages (default: ``directory``).
    """

    def __init__(self, directory: Path, parts: list[tuple[str, int]], shown: Path | None = None) -> None:
        self.directory = directory
        self.shown = shown or directory
        self.parts = parts
        self._fds: dict[int, int] = {}
        # One writer per part file at a time: concurrent pwrite()s to one inode contend on
        # its lock in the kernel (measured: twice the system CPU of serialised writes).
        self._locks: dict[int, threading.Lock] = {}
        # Writes may still be arriving from fetch workers when the pull stops (Ctrl-C, a
        # failed chunk): files are closed only once no write is in progress and none can
        # start, so a recycled descriptor number never receives chunk data and no
        # unverified byte lands after the pull has returned.
        self._gate = threading.Condition()
        self._writing = 0
        self._closed = False

    def open(self) -> PartFiles:
        """Create (or reopen, on resume) every part file at its final size.

        Raises:
            DestinationError: a file cannot be created or sized.
        """
        try:
            for i, (name, size) in enumerate(self.parts):
                try:
                    fd = open_regular_for_write(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
                                                | os.O_CLOEXEC, 0o644)
                except OSError as err:
                    if err.errno == errno.ELOOP or isinstance(err, NotRegularFile):  # a symlink, a FIFO...
                        raise DestinationError(
                            f"{self.shown / name}: a symlink or a special file where pull keeps a part; not followed",
                            hint=f"remove {self.shown.parent} (a partial pull; it only costs a fresh start), "
                                 "then run the command again") from err
                    raise
                self._fds[i] = fd
                self._locks[i] = threading.Lock()
                os.ftruncate(fd, size)
        except DestinationError:
            self.close()
            raise
        except OSError as err:
            self.close()
            raise translate_os_error(err, str(self.shown)) from err
        return self

    def write(self, job: ChunkJob, offset: int, data: memoryview) -> None:
        """Write ``data`` at byte ``offset`` of ``job``'s part file.

        Raises:
            Interrupted: the files were closed (the pull stopped).
            InsufficientSpaceError: ENOSPC or EDQUOT.
            DestinationError: any other write failure.
        """
        with self._gate:
            if self._closed:
                raise Interrupted("pull stopped")
            self._writing += 1
        try:
            with self._locks[job.part_index]:
                fd = self._fds[job.part_index]
                while data:
                    n = os.pwrite(fd, data, offset)
                    data, offset = data[n:], offset + n
        except OSError as err:
            raise translate_os_error(err, str(self.shown)) from err
        finally:
            with self._gate:
                self._writing -= 1
                self._gate.notify_all()

    def close(self) -> None:
        """Refuse new writes, wait for the ones in progress, close every file."""
        with self._gate:
            self._closed = True
            self._gate.wait_for(lambda: self._writing == 0)
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
