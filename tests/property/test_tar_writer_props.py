"""The tar writer against tarfile's own: the same bytes, member for member and stream for stream.

``archive.write_tar`` writes headers with ``TarInfo.tobuf`` but assembles the stream itself
(one write per small member, no ``TarFile.addfile``). These properties pin that the result
is byte for byte what ``tarfile.TarFile(format=PAX_FORMAT)`` writes for the same tree.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from s3sync import archive

names = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=120),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x00"),
            min_size=1, max_size=40),
).filter(lambda n: n not in (".", ".."))


@given(name=names, link=st.one_of(st.just(""), names),
       size=st.one_of(st.integers(0, 10**6), st.integers(8**11 - 2, 8**11 + 2)),
       mode=st.integers(0, 0o777), mtime=st.integers(0, 2**33), kind=st.sampled_from("file dir symlink".split()))
# Where ustar ends and PAX records begin: a 99-character directory name (100 with its
# slash), 99/100-character names and link names, the largest size and mtime in 11 digits.
@example(name="d" * 99, link="", size=0, mode=0o755, mtime=8**11 - 1, kind="dir")
@example(name="f" * 99, link="", size=8**11 - 1, mode=0o644, mtime=0, kind="file")
@example(name="f" * 100, link="", size=1, mode=0o644, mtime=1, kind="file")
@example(name="s", link="t" * 99, size=0, mode=0o777, mtime=1, kind="symlink")
@example(name="s", link="t" * 100, size=0, mode=0o777, mtime=1, kind="symlink")
def test_member_header_is_what_tarfile_writes_in_pax_format(name, link, size, mode, mtime, kind):
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = mode, mtime, 0, 0, "", ""
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, link or "x"
    elif kind == "dir":
        info.type = tarfile.DIRTYPE
    else:
        info.size = size
    assert archive.member_header(info) == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@given(files=st.dictionaries(names, st.integers(0, 3000), min_size=0, max_size=12),
       big=st.integers(0, 3 * 1024 * 1024 + 7))
def test_write_tar_is_byte_for_byte_tarfiles_pax_stream(files, big):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "src"
        (root / "sub").mkdir(parents=True)
        for i, (name, n) in enumerate(sorted(files.items())):
            (root / "sub" / name).write_bytes(bytes([i % 251]) * n)
        (root / "large.bin").write_bytes(os.urandom(16) * (big // 16))  # over SMALL_FILE: streamed
        (root / "link").symlink_to("sub")
        entries = archive.scan_tree(root)

        ours = io.BytesIO()
        spans = []
        archive.write_tar(entries, ours, spans.append)

        theirs = io.BytesIO()
        with tarfile.TarFile(fileobj=theirs, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
            for entry in entries:
                info = archive._tarinfo(entry)
                if info.isreg():
                    with open(entry.path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
        assert ours.getvalue() == theirs.getvalue()
        # Each span announced before a member is exactly what the member took.
        assert sum(spans) + 1024 <= len(ours.getvalue()) < sum(spans) + 1024 + tarfile.RECORDSIZE
