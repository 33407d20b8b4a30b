"""A sparse tar member (GNU 'S' type, or PAX GNU.sparse.*) in a hand-made dataset whose every
digest matches. Before issue 11 tarfile's expanded size made extraction copy the data and the
headers after it ("internal error: ValueError: cannot seek back"), and then sparse members were
refused. Now (archives that s3sync did not publish hold them) the member extracts with its
holes, its index record holds the digest of the whole logical file (holes as zeros), and
``s3sync verify`` agrees. s3sync's own publish still never writes one
(``test_publish_never_writes_a_sparse_member``)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile

import pytest
from corpus import require_tool

from s3sync import archive
from s3sync.verify import verify


def sparse_source(root):
    src = root / "sparse-src"
    src.mkdir()
    with open(src / "sparse.bin", "wb") as f:
        f.seek(5000)
        f.write(b"mid" * 100)
        f.seek(300000)
        f.write(b"end")
    (src / "after.txt").write_bytes(b"after")
    return src


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_member_pulls_with_holes_and_verifies(kit, fmt):
    if kit.server.name != "moto":
        pytest.skip("the extraction is the client's; one server is enough")
    src = sparse_source(kit.tmp)
    tar = subprocess.run([require_tool("tar"), "--sparse", f"--format={fmt}", "-cf", "-", "-C", str(src),
                          "sparse.bin", "after.txt"], check=True, capture_output=True).stdout
    # Zeros after the end-of-archive marker make the stream long enough for the expanded
    # size the manifest counts (its consistency rules need members*512 + data <= size).
    pub = kit.put_tar(tar + bytes(512 * 700))
    result = kit.pull(pub, kit.tmp / "dest")
    assert (result.dest / "sparse.bin").read_bytes() == (src / "sparse.bin").read_bytes()
    assert (result.dest / "after.txt").read_bytes() == b"after"
    if os.stat(src / "sparse.bin").st_blocks * 512 < 300003:  # this file system keeps holes
        assert os.stat(result.dest / "sparse.bin").st_blocks * 512 < 300003
    assert verify(result.dest).problems == ()


def test_publish_never_writes_a_sparse_member(tmp_path):
    """A sparse source file is published as an ordinary member holding its zeros."""
    src = sparse_source(tmp_path)
    out = io.BytesIO()
    archive.write_tar(archive.scan_tree(src), out, lambda _span: None)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = {m.name: m for m in tar}
        assert not members["sparse.bin"].issparse()
        assert members["sparse.bin"].type == tarfile.REGTYPE
        assert tar.extractfile("sparse.bin").read() == (src / "sparse.bin").read_bytes()
