"""A source file changing while ``publish`` streams it (issue 10, item 3): the publish is
abandoned with a SourceError naming the file, and nothing is committed (no manifest; the
previous generation stays the published one)."""

from __future__ import annotations

import os

import pytest

from s3sync import archive
from s3sync.errors import SourceError

from .conftest import MiB


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_a_file_rewritten_in_place_while_publish_reads_it_is_not_committed(kit, monkeypatch: pytest.MonkeyPatch) -> None:
    src = kit.tree({"a.bin": 3 * MiB, "b/c.bin": 2 * MiB, "b/d.txt": 100})
    first = kit.publish(src)
    victim = src / "b" / "c.bin"
    real_open = archive.open_regular

    class RewrittenWhileRead:
        """The source as a writer leaves it mid-read: same size, same inode, new bytes."""

        def __init__(self, f) -> None:
            self._f, self._done = f, False

        def read(self, n: int = -1) -> bytes:
            data = self._f.read(n)
            if not self._done:
                self._done = True
                before = os.stat(victim)
                with open(victim, "r+b") as w:
                    w.seek(MiB)
                    w.write(b"\xff" * 4096)
                while os.stat(victim).st_mtime_ns == before.st_mtime_ns:  # the same clock tick
                    os.utime(victim)
            return data

        def __getattr__(self, attr: str):
            return getattr(self._f, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._f.close()

    def open_regular(path, expect=None):
        f = real_open(path, expect)
        return RewrittenWhileRead(f) if os.fspath(path) == str(victim) else f

    with monkeypatch.context() as patch, pytest.raises(SourceError, match="changed while being read") as info:
        patch.setattr(archive, "open_regular", open_regular)
        kit.publish(src)
    assert str(victim) in str(info.value)
    # The first generation is still the one published, and it pulls whole.
    assert kit.pull(first).manifest.generation == first.manifest.generation
