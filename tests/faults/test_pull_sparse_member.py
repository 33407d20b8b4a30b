"""A sparse tar member (GNU 'S' type, or PAX GNU.sparse.*) in a hand-made dataset whose every
digest matches: tarfile reports the expanded size, extraction copied that many bytes straight
from the stream (the data and headers after it) and then failed with "internal error:
ValueError: cannot seek back". It is refused as an unsafe archive, naming the member."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from s3sync.errors import UnsafeArchiveError


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_member_is_refused_clearly(kit, fmt):
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is needed to write a sparse member")
    src = kit.tmp / "sparse-src"
    src.mkdir()
    with open(src / "sparse.bin", "wb") as f:
        f.seek(5000)
        f.write(b"mid" * 100)
        f.seek(300000)
        f.write(b"end")
    (src / "after.txt").write_bytes(b"after")
    tar = subprocess.run(["tar", "--sparse", f"--format={fmt}", "-cf", "-", "-C", str(src), "sparse.bin",
                          "after.txt"], check=True, capture_output=True).stdout
    # Zeros after the end-of-archive marker make the stream long enough for the expanded
    # size the manifest counts (its consistency rules need members*512 + data <= size).
    pub = kit.put_tar(tar + bytes(512 * 700))
    dest_parent = kit.tmp / "dest"
    with pytest.raises(UnsafeArchiveError, match="sparse.bin.*sparse file refused"):
        kit.pull(pub, dest_parent)
    assert not (dest_parent / pub.name).exists()
