"""Tar shapes other tools write, in hand-made datasets whose every digest matches (issue 10):
- a member whose parent directories have no member of their own (`tar cf x.tar a/b.txt`): the
  pull creates them; `s3sync verify` listed them as "extra" and exited 1;
- a member path ~1,100 directories deep (fits in PATH_MAX): extraction recursed once per level
  (RecursionError: "internal error"), and so did verify (Python 3.11's os.walk);
- a hard link to itself: extraction removed the file, then failed to link it ("No such file
  or directory", with a hint about permissions); now refused as an unsafe archive;
- the staging directory of such a deep pull, left by another generation: clearing it recursed
  too (shutil.rmtree);
- a PAX mtime os.utime cannot take (1e20, inf, nan): OverflowError or ValueError, "internal
  error"; now refused as an unsafe archive; so is a negative (GNU base-256) size, with which
  tarfile seeks backwards ("internal error: ValueError: cannot seek back").
"""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from s3sync.errors import UnsafeArchiveError
from s3sync.journal import Journal, rmtree_at


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    return info, data


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, None


def remove(path) -> None:
    """Remove a (possibly very deep) directory: pytest's own clean-up recurses per level."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rmtree_at(fd, path.name)
    finally:
        os.close(fd)


def moto_only(kit) -> None:
    if kit.server.name != "moto":
        pytest.skip("the extraction is the client's; one server is enough")


@pytest.mark.parametrize("path", ["a/b/c.txt", "/".join(["d"] * 1100) + "/f.txt"], ids=["implicit-parents", "deep"])
def test_members_without_parent_members_pull_and_verify(kit, path):
    moto_only(kit)
    pub = kit.put_tar(tar_of(reg("top.txt", b"top"), reg(path, b"data")))
    result = kit.pull(pub, kit.tmp / "dest")
    assert (result.dest / path).read_bytes() == b"data"
    proc = kit.cli("verify", result.dest)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-500:]
    remove(result.dest)


def test_hard_link_to_itself_is_refused(kit):
    moto_only(kit)
    pub = kit.put_tar(tar_of(reg("x", b"data"), hardlink("x", "x")))
    with pytest.raises(UnsafeArchiveError, match="hard link to itself"):
        kit.pull(pub, kit.tmp / "dest")
    assert not (kit.tmp / "dest" / pub.name).exists()


def test_deep_staging_left_by_another_generation_is_cleared(kit, monkeypatch):
    """The staging directory of an interrupted pull ~1,100 levels deep, then a new generation:
    clearing it (shutil.rmtree recursed once per level: RecursionError, at every rerun) works."""
    moto_only(kit)
    path = "/".join(["d"] * 1100) + "/f.txt"
    pub = kit.put_tar(tar_of(reg(path, b"old")))
    dest_parent = kit.tmp / "dest"

    def interrupted(self, name):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Journal, "move_tree", interrupted)
        with pytest.raises(KeyboardInterrupt):
            kit.pull(pub, dest_parent)
    pub = kit.put_tar(tar_of(reg(path, b"new")), generation="g2")
    result = kit.pull(pub, dest_parent)
    assert (result.dest / path).read_bytes() == b"new"
    remove(result.dest)


def test_rmtree_at_never_follows_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "canary").write_bytes(b"canary")
    doomed = tmp_path / "doomed"
    deep = doomed / "/".join(["d"] * 50)
    deep.mkdir(parents=True)
    for level in (doomed, doomed / "d", deep):
        (level / "link").symlink_to(victim)
        (level / "file").write_bytes(b"x")
    (doomed / "d" / "d" / "sub").symlink_to(victim / "sub")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rmtree_at(fd, "doomed")
    finally:
        os.close(fd)
    assert not doomed.exists()
    assert (victim / "sub" / "canary").read_bytes() == b"canary"


@pytest.mark.parametrize("mtime", ["1e20", "inf", "nan", "-1e30"])
@pytest.mark.parametrize("size", [10, 2 * 1024 * 1024], ids=["small", "large"])
def test_mtime_out_of_range_is_refused_clearly(kit, mtime, size):
    """A PAX mtime os.utime cannot take (OverflowError, ValueError): "internal error" before."""
    moto_only(kit)
    info, data = reg("f.bin", bytes(size))
    info.pax_headers = {"mtime": mtime}
    pub = kit.put_tar(tar_of((info, data)))
    with pytest.raises(UnsafeArchiveError, match="modification time .* out of range"):
        kit.pull(pub, kit.tmp / "dest")


def test_negative_member_size_is_refused_clearly(kit):
    """A GNU base-256 size field holding -1024: tarfile then seeks backwards ("internal error:
    ValueError: cannot seek back")."""
    moto_only(kit)
    info = tarfile.TarInfo("a.txt")
    info.size = 4
    header = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    header[124:136] = b"\xff" + ((-1024) & ((1 << 88) - 1)).to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    tar = bytes(header) + b"data".ljust(512, b"\0") + bytes(10240)
    pub = kit.put_tar(tar, files=1, extracted_size=0, members=1)
    with pytest.raises(UnsafeArchiveError, match="negative size"):
        kit.pull(pub, kit.tmp / "dest")
