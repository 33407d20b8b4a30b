"""GNU sparse members (issue 11) extract to their logical content through any chunking, and a
hostile sparse map is refused.

Members are PAX format 0.1 sparse members (``GNU.sparse.map``, ``GNU.sparse.size``: the GNU
tar manual, "Sparse Formats"), written with ``tarfile``'s own PAX writer: the stored data is
the regions' bytes one after the other, the logical file has zeros (holes) elsewhere.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prop_helpers import ignore, make_extractor, reader_over

from s3sync import archive, hashing
from s3sync.errors import UnsafeArchiveError


def sparse_tar(regions: list[tuple[int, int]], real_size: int, stored: bytes | None = None,
               after: bytes = b"after") -> tuple[bytes, bytes]:
    """A tar holding a sparse member ``s.bin`` with ``regions`` ((offset, bytes) each) then a
    regular ``z.txt``; and the logical content of ``s.bin``. ``stored`` replaces the data."""
    logical = bytearray(real_size)
    data = bytearray()
    for i, (offset, size) in enumerate(regions):
        blob = bytes((i * 37 + j) % 251 + 1 for j in range(size))
        logical[offset:offset + size] = blob
        data += blob
    data = bytes(data) if stored is None else stored
    info = tarfile.TarInfo("s.bin")
    info.size = len(data)
    info.mtime = 1_700_000_000
    info.pax_headers = {"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.name": "s.bin",
                        "GNU.sparse.size": str(real_size),
                        "GNU.sparse.map": ",".join(f"{o},{n}" for o, n in regions)}
    tail = tarfile.TarInfo("z.txt")
    tail.size = len(after)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
        tar.addfile(tail, io.BytesIO(after))
    return buf.getvalue(), bytes(logical)


@st.composite
def sparse_maps(draw) -> tuple[list[tuple[int, int]], int]:
    regions = []
    at = 0
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        at += draw(st.integers(min_value=0, max_value=5000))
        size = draw(st.integers(min_value=0, max_value=3000))
        regions.append((at, size))
        at += size
    real_size = at + draw(st.integers(min_value=0, max_value=4000))
    return regions + [(real_size, 0)], real_size  # GNU tar ends every map with (size, 0)


@given(sparse=sparse_maps(), chunk_size=st.integers(min_value=37, max_value=4000),
       parts=st.lists(st.integers(min_value=0, max_value=6000), min_size=1, max_size=4))
def test_sparse_members_extract_to_their_logical_content(sparse, chunk_size, parts) -> None:
    regions, real_size = sparse
    data, logical = sparse_tar(regions, real_size)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_extractor(root).extract(reader_over(data, chunk_size, parts), lambda _o, r: records.append(r))
        assert (root / "s.bin").read_bytes() == logical
        assert (root / "z.txt").read_bytes() == b"after"
    assert [(r.path, r.size, r.digest) for r in records] == [
        ("s.bin", real_size, hashing.digest(logical)), ("z.txt", 5, hashing.digest(b"after"))]


HOSTILE = {
    "overlapping": ([(0, 100), (50, 100)], 1000, None),
    "out-of-order": ([(500, 10), (0, 10)], 1000, None),
    "beyond-real-size": ([(0, 10), (995, 10)], 1000, None),
    "negative-offset": ([(-10, 10)], 1000, None),
    "more-data-than-stored": ([(0, 600), (700, 600)], 2000, bytes(200)),
}


@pytest.mark.parametrize("sparse_map", ["", "1,x", "a,b"])
@pytest.mark.parametrize("first", [True, False], ids=["first-member", "later-member"])
def test_unreadable_sparse_maps_are_refused(sparse_map: str, first: bool, tmp_path: Path) -> None:
    """tarfile's ``int()`` of a bad ``GNU.sparse.map`` raises ValueError; as the first member
    (read by ``TarFile()`` itself) it escaped as an "internal error"."""
    info = tarfile.TarInfo("s.bin")
    info.pax_headers = {"GNU.sparse.map": sparse_map, "GNU.sparse.size": "10"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if not first:
            tar.addfile(tarfile.TarInfo("ok"), io.BytesIO(b""))
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(UnsafeArchiveError, match="unreadable"):
        make_extractor(tmp_path).extract(reader_over(buf.getvalue(), 512), ignore)
    assert not (tmp_path / "s.bin").exists()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_sparse_maps_are_refused_naming_the_member(case: str, tmp_path: Path) -> None:
    regions, real_size, stored = HOSTILE[case]
    data, _ = sparse_tar(regions, real_size, stored)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UnsafeArchiveError, match="'s.bin': sparse map"):
        make_extractor(root).extract(reader_over(data, 512), ignore)
    assert not (root / "z.txt").exists()
    assert os.listdir(tmp_path) == ["root"]


def test_a_sparse_map_on_a_link_is_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("l")
    info.type, info.linkname = tarfile.SYMTYPE, "x"
    info.pax_headers = {"GNU.sparse.map": "0,10", "GNU.sparse.size": "10"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="'l': sparse map on a"):
        make_extractor(tmp_path).extract(reader_over(buf.getvalue(), 512), ignore)
    assert not os.path.lexists(tmp_path / "l")


def test_extractor_writes_sparse_members_only_through_write_sparse() -> None:
    """``extract`` must not take a small sparse member for a small regular file (its size is
    the logical size, not the bytes stored): the batch path would copy headers as data."""
    data, logical = sparse_tar([(100, 10)], 1000)
    with tempfile.TemporaryDirectory() as tmp:
        make_extractor(Path(tmp)).extract(reader_over(data, 700), ignore)
        assert Path(tmp, "s.bin").read_bytes() == logical
        assert archive.file_digest(Path(tmp, "s.bin")) == hashing.digest(logical)
