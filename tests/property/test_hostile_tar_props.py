"""Hostile tar members never escape the extraction root.

Archives are built in memory with ``tarfile``, cut into parts and chunks as a pull plans
them, and fed through ``engine.OrderedReader`` to ``archive.SafeExtractor`` exactly as
``pull`` does. Every hostile member must raise ``UnsafeArchiveError``, and nothing outside
the root may be created, changed or linked to: the directory around the root is
snapshotted before and compared after, absolute targets use unique names, and every path
under the root must resolve inside it.

Layout of each example (a fresh temporary directory)::

    top/l1/l2/root/       the extraction root (``../..`` from it is still inside top/)
    top/l1/l2/sentinel/   an empty directory next to it
    top/l1/l2/secret      a file next to it (hard link and overwrite target)
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prop_helpers import ignore, links_escaping, make_extractor, reader_over

from s3sync.errors import UnsafeArchiveError

# --------------------------------------------------------------------------- tar building


@dataclass(frozen=True)
class M:
    """One member to write: kind is file, dir, sym, hard, chr, blk or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    link: str = ""


def build_tar(members: list[M], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mtime = 1_700_000_000
            info.mode = 0o644
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[m.kind]
            if m.kind == "dir":
                info.mode = 0o755
            if m.kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
            info.linkname = m.link
            tar.addfile(info)
    return buf.getvalue()


class Sandbox:
    """The directory layout around one extraction root (see module docstring)."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.around = top / "l1" / "l2"
        self.root = self.around / "root"
        self.sentinel = self.around / "sentinel"
        self.secret = self.around / "secret"
        self.root.mkdir(parents=True)
        self.sentinel.mkdir()
        self.secret.write_bytes(b"secret")
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple]:
        """Everything under ``top`` except the root's subtree: type, size, mtime, content."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.top):
            if Path(dirpath) == self.root or self.root in Path(dirpath).parents:
                continue
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path == self.root:
                    continue
                st = os.lstat(path)
                content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
                out[str(path.relative_to(self.top))] = (stat.S_IFMT(st.st_mode), st.st_nlink if not stat.S_ISDIR(st.st_mode) else 0, content)
        return out

    def assert_nothing_escaped(self, absolute_targets: list[Path]) -> None:
        assert self.snapshot() == self.before, "something outside the root was created or changed"
        assert list(self.sentinel.iterdir()) == []
        for path in absolute_targets:
            assert not os.path.lexists(path), f"{path} was created"
        assert links_escaping(self.root) == []
        foreign = {(os.stat(p).st_dev, os.stat(p).st_ino) for p in (self.secret, "/etc/passwd")}
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                st = os.lstat(os.path.join(dirpath, name))
                assert (st.st_dev, st.st_ino) not in foreign, f"{name} is a hard link to a file outside the root"


def extract(data: bytes, root: Path, chunk_size: int, parts: list[int] | None = None) -> None:
    make_extractor(root).extract(reader_over(data, chunk_size, parts), ignore)


# --------------------------------------------------------------------------- hostile cases


def hostile_cases(sandbox: Sandbox, tag: str) -> dict[str, tuple[list[M], list[Path]]]:
    """Name -> (members, absolute paths that must not appear)."""
    abs_file = Path(tempfile.gettempdir()) / f"s3sync-abs-{tag}.txt"
    etc_file = Path("/etc") / f"s3sync-escape-{tag}"
    long_dir = "d" * 120
    return {
        "dotdot": ([M("../../outside.txt", data=b"x")], []),
        "dotdot-inside-path": ([M("a/../../outside.txt", data=b"x")], []),
        "dotdot-long-pax-name": ([M(f"{long_dir}/../../../outside.txt", data=b"x")], []),
        "dotdot-dir": ([M("..", kind="dir")], []),
        "absolute": ([M(str(abs_file), data=b"x")], [abs_file]),
        "absolute-dir": ([M(str(abs_file), kind="dir")], [abs_file]),
        "symlink-absolute-then-through": ([M("lnk", kind="sym", link=str(sandbox.sentinel)),
                                           M("lnk/x", data=b"x")], []),
        "symlink-etc-then-through": ([M("lnk", kind="sym", link="/etc"),
                                      M(f"lnk/{etc_file.name}", data=b"x")], [etc_file]),
        "symlink-up-then-through": ([M("lnk", kind="sym", link="../.."), M("lnk/x", data=b"x")], []),
        "symlink-up-from-subdir": ([M("sub", kind="dir"), M("sub/lnk", kind="sym", link="../../sentinel"),
                                    M("sub/lnk/x", data=b"x")], []),
        "symlink-dotdot-after-component": ([M("d", kind="dir"), M("x", kind="sym", link="d/../..")], []),
        "symlink-chain-completed-later": ([M("x", kind="sym", link="d/.."), M("d", kind="sym", link=".")], []),
        "symlink-inside-then-through": ([M("dir", kind="dir"), M("lnk", kind="sym", link="dir"),
                                         M("lnk/x", data=b"x")], []),
        "symlink-dot-then-dotdot-through": ([M("lnk", kind="sym", link="."),
                                             M("lnk/lnk/../x", data=b"x")], []),
        "hardlink-absolute": ([M("h", kind="hard", link="/etc/passwd")], []),
        "hardlink-up": ([M("h", kind="hard", link="../secret")], []),
        "hardlink-up-long": ([M("h", kind="hard", link=f"{long_dir}/../../secret")], []),
        "hardlink-to-absolute-secret": ([M("h", kind="hard", link=str(sandbox.secret))], []),
        "hardlink-through-symlink": ([M("lnk", kind="sym", link="."), M("h", kind="hard", link="lnk/../../secret")], []),
        "char-device": ([M("null", kind="chr")], []),
        "block-device": ([M("blk", kind="blk")], []),
        "fifo": ([M("fifo", kind="fifo")], []),
        "reserved-metadata-dir": ([M(".s3sync/complete.json", data=b"{}")], []),
    }


def _case_names() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return sorted(hostile_cases(Sandbox(Path(tmp)), "probe"))


CASE_NAMES = _case_names()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_each_hostile_member_is_refused(case: str, fmt: int, tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    members, absolute = hostile_cases(sandbox, uuid.uuid4().hex)[case]
    data = build_tar([M("ok", kind="dir"), M("ok/a.txt", data=b"fine")] + members, fmt)
    try:
        with pytest.raises(UnsafeArchiveError):
            extract(data, sandbox.root, chunk_size=512)
        sandbox.assert_nothing_escaped(absolute)
    finally:
        for path in absolute:
            if os.path.lexists(path) and not os.path.isdir(path):
                os.unlink(path)


benign_members = st.lists(
    st.tuples(st.sampled_from(["b0", "b1", "b1/c"]), st.text("abcxyz", min_size=1, max_size=8),
              st.binary(max_size=1500)),
    max_size=6,
)


@given(case=st.sampled_from(CASE_NAMES), before=benign_members, after=benign_members,
       chunk_size=st.integers(min_value=37, max_value=3000),
       parts=st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=4),
       fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
def test_hostile_members_never_escape_whatever_surrounds_them(case, before, after, chunk_size, parts, fmt) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Sandbox(Path(tmp))
        members, absolute = hostile_cases(sandbox, uuid.uuid4().hex)[case]

        def benign(items, prefix):
            out = [M(f"{prefix}", kind="dir"), M(f"{prefix}/b1", kind="dir"), M(f"{prefix}/b1/c", kind="dir")]
            return out + [M(f"{prefix}/{d}/{n}.bin", data=blob) for d, n, blob in items]

        data = build_tar(benign(before, "pre") + members + benign(after, "post"), fmt)
        try:
            with pytest.raises(UnsafeArchiveError):
                extract(data, sandbox.root, chunk_size, parts)
            sandbox.assert_nothing_escaped(absolute)
        finally:
            for path in absolute:
                if os.path.lexists(path) and not os.path.isdir(path):
                    os.unlink(path)


@given(files=st.dictionaries(st.text("abcé +_", min_size=1, max_size=10), st.binary(max_size=3000), max_size=8),
       chunk_size=st.integers(min_value=37, max_value=4000),
       parts=st.lists(st.integers(min_value=0, max_value=6000), min_size=1, max_size=4))
def test_benign_archives_extract_exactly_through_any_chunking(files: dict[str, bytes], chunk_size: int,
                                                              parts: list[int]) -> None:
    members = [M("top", kind="dir"), M("top/sub", kind="dir")]
    for i, (name, blob) in enumerate(sorted(files.items())):
        members.append(M(f"top/{'sub/' if i % 2 else ''}{name}", data=blob))
    members.append(M("top/link", kind="sym", link="sub"))
    members.append(M("top/sub/up", kind="sym", link="../link"))  # '..' at the start stays inside
    if files:
        first = members[2].name
        members.append(M("top/hard", kind="hard", link=first))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        extract(build_tar(members), root, chunk_size, parts)
        for m in members:
            path = root / m.name
            if m.kind == "file":
                assert path.read_bytes() == m.data
            elif m.kind == "sym":
                assert os.readlink(path) == m.link
            elif m.kind == "hard":
                assert os.path.samefile(path, root / m.link)
        assert links_escaping(root) == []


@pytest.mark.parametrize("members", [
    [M("x", kind="sym", link="d/.."), M("d", kind="sym", link=".")],
    [M("x", kind="sym", link="a/b/../.."), M("a", kind="sym", link="."), M("b", kind="sym", link=".")],
], ids=["parent", "grandparent"])
def test_symlink_chains_completed_later_do_not_point_outside(members: list[M], tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    try:
        extract(build_tar(members), sandbox.root, chunk_size=512)
    except UnsafeArchiveError:
        pass  # refusing the archive is fine
    assert links_escaping(sandbox.root) == []
