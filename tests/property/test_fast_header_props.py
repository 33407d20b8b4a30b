"""``archive._FastTarInfo.frombuf`` against tarfile's own ``TarInfo.frombuf``.

The extractor parses headers with its own fast ``frombuf`` (one ``struct`` call) and hands
every header it does not fully understand back to tarfile. These properties pin that the
two agree on every block: the same attributes, or the same exception. Blocks are real
headers (every format tarfile writes, every member type) with bytes overwritten, with the
checksum recomputed (unsigned or signed, as Sun tar) or left wrong.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import tempfile

from hypothesis import example, given
from hypothesis import strategies as st
from prop_helpers import reader_over

from s3sync import archive, journal

ATTRS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname",
         "devmajor", "devminor", "_sparse_structs")
TYPES = [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
         tarfile.CHRTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE, tarfile.XHDTYPE, b"V", b"x"]


def parse(cls, buf: bytes):
    try:
        obj = cls.frombuf(buf, "utf-8", "surrogateescape")
    except Exception as err:  # noqa: BLE001 - the exception is the result compared
        return ("raised", type(err), str(err))
    return tuple(getattr(obj, a, None) for a in ATTRS)


def with_checksum(buf: bytes, signed: bool) -> bytes:
    block = buf[:148] + b" " * 8 + buf[156:]
    total = sum(b - 256 if signed and b > 127 else b for b in block)
    return block[:148] + b"%06o\0 " % (total & 0o777777) + block[156:]


@st.composite
def header(draw) -> bytes:
    info = tarfile.TarInfo(draw(st.text(min_size=1, max_size=140).filter(lambda n: "\0" not in n)))
    info.type = draw(st.sampled_from(TYPES))
    info.size = draw(st.integers(0, 2**40))
    info.mtime = draw(st.integers(0, 2**34))
    info.mode = draw(st.integers(0, 0o7777))
    info.uid = draw(st.integers(0, 2**22))
    info.linkname = draw(st.text(max_size=20).filter(lambda n: "\0" not in n))
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    try:
        blocks = info.tobuf(fmt, "utf-8", "surrogateescape")
    except ValueError:  # too long for ustar
        blocks = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    buf = bytearray(blocks[-512:] if draw(st.booleans()) else blocks[:512])
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, 511))
        buf[at] = draw(st.sampled_from([0, 0x20, 0x2F, 0x30, 0x37, 0x38, 0x80, 0xFF, 0x1C, 0x5F, 0x41, 0xC3]))
    how = draw(st.sampled_from(["unsigned", "signed", "as is"]))
    return bytes(buf) if how == "as is" else with_checksum(bytes(buf), signed=how == "signed")


@given(buf=header())
@example(buf=bytes(512))
@example(buf=b"")
@example(buf=bytes(100))
@example(buf=with_checksum(b"a/" + bytes(98) + b"0000644\0" + bytes(404), signed=False))
@example(buf=with_checksum(b"d/" + bytes(98) + b" 0_644 \0" + bytes(404), signed=False))
@example(buf=with_checksum(b"\xc3\xa9/" + bytes(97) + b"\x80" + bytes(411), signed=False))
def test_fast_frombuf_agrees_with_tarfile(buf):
    assert parse(archive._FastTarInfo, buf) == parse(tarfile.TarInfo, buf)


@given(path=st.text(min_size=1, max_size=30), kind=st.sampled_from(["file", "dir", "symlink", "hardlink", 'x"y']),
       size=st.integers(0, 2**40), mode=st.integers(0, 0o7777), mtime=st.integers(-2**33, 2**34),
       digest=st.one_of(st.just(""), st.text(alphabet="0123456789abcdef", min_size=32, max_size=32), st.text(max_size=3)),
       link=st.one_of(st.just(""), st.text(max_size=20)))
@example(path='a"b', kind="file", size=1, mode=0o644, mtime=0, digest="", link="")
@example(path="a\\b", kind="file", size=1, mode=0o644, mtime=0, digest="", link="x\udcff")
@example(path="caf\u00e9\udce9", kind="file", size=1, mode=0o644, mtime=0, digest="", link="")
def test_journal_record_line_is_json_dumps(path, kind, size, mode, mtime, digest, link):
    r = archive.MemberRecord(path, kind, size, mode, mtime, digest, link)
    want = (json.dumps((r.path, r.kind, r.size, r.mode, r.mtime, r.digest, r.link), ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode("utf-8", "surrogateescape")
    assert journal.record_line(r) == want
    assert archive.MemberRecord(*json.loads(want.decode("utf-8", "surrogateescape"))) == r


# --------------------------------------------------------------------------- the fast header loop

PLAIN_NAMES = ["a", "d/f.bin", "d/e/g.jpg", "x y/z", "n" * 99, "o" * 100, "r\\s\"t"]
"""Names of files the fast loop takes (the same name twice: the second replaces the first)."""
ODD_NAMES = ["./d/h", ".hidden/a", "d/.s3sync", "d//k", "d/./m", "caf\u00e9/n", "p/" + "q" * 120, "d/e/"]
"""Names of files it leaves to tarfile and ``_check_name``."""
BAD_NAMES = ["../up", "/abs", ".s3sync/x", "a/x"]
"""Names the extraction refuses (it stops there)."""
OTHER_NAMES = {tarfile.DIRTYPE: ["d", "d/e", "k/", "./k/l"], tarfile.SYMTYPE: ["s", "d/t"]}
"""Names of directories and symlinks."""


@st.composite
def small_stream(draw) -> bytes:
    """A tar stream of small members (as s3sync publishes them, or another tar's formats),
    then bytes overwritten at random, in headers mostly, the checksum recomputed or not."""
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
    out, headers = io.BytesIO(), []
    with tarfile.open(fileobj=out, mode="w", format=fmt, encoding="utf-8") as tar:
        if draw(st.integers(0, 9)) == 0:
            tar.pax_headers = {"comment": "global"}  # a global header first: every member gets it
        for _ in range(draw(st.integers(0, 16))):
            kind = draw(st.sampled_from([tarfile.REGTYPE] * 6 + [tarfile.DIRTYPE, tarfile.SYMTYPE]))
            which = draw(st.integers(0, 39))
            names = (OTHER_NAMES[kind] if kind != tarfile.REGTYPE else BAD_NAMES if which == 0
                     else ODD_NAMES if which < 8 else PLAIN_NAMES)
            info = tarfile.TarInfo(draw(st.sampled_from(names)))
            info.type = kind
            info.mode = draw(st.sampled_from([0o644, 0o600, 0o4755]))
            info.mtime = draw(st.sampled_from([1_700_000_000, 0, 8**11 - 1]))
            data = b""
            if info.type == tarfile.REGTYPE:
                data = draw(st.binary(max_size=1300))
                info.size = len(data)
            elif info.type == tarfile.SYMTYPE:
                info.linkname = "a"
            headers.append(out.tell())
            try:
                tar.addfile(info, io.BytesIO(data))
            except ValueError:  # a name too long for the format
                headers.pop()
    buf = bytearray(out.getvalue())
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        if not headers:
            break
        start = draw(st.sampled_from(headers))
        buf[start + draw(st.integers(0, 511))] = draw(st.sampled_from([0, 0x20, 0x2E, 0x2F, 0x30, 0x37, 0x38, 0x80]))
        if draw(st.booleans()):
            buf[start:start + 512] = with_checksum(bytes(buf[start:start + 512]), signed=False)
    return bytes(buf)


def extract_outcome(data: bytes, chunk_size: int, fast: bool) -> tuple:
    """Everything ``extract`` did: the members reported, the error, the end, the tree."""
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        extractor = archive.SafeExtractor(root)
        extractor.fast_headers = fast
        seen, error = [], None
        try:
            extractor.extract(reader_over(data, chunk_size), lambda offset, record: seen.append((offset, record)))
        except Exception as err:  # noqa: BLE001 - the exception is the result compared
            error = (type(err), str(err).replace(root, "ROOT"))
        tree = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st_ = os.lstat(path)
                content = open(path, "rb").read() if stat.S_ISREG(st_.st_mode) else None
                # A parent directory with no member of its own is made now: its mtime is the clock's.
                mtime = None if stat.S_ISDIR(st_.st_mode) else st_.st_mtime_ns
                tree[os.path.relpath(path, root)] = (stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode), mtime,
                                                     content)
        return seen, error, extractor.end, tree


@given(data=small_stream(), chunk_size=st.sampled_from([512, 1536, 4096, 1 << 20]))
def test_fast_header_loop_agrees_with_tarfile(data, chunk_size):
    assert extract_outcome(data, chunk_size, fast=True) == extract_outcome(data, chunk_size, fast=False)
