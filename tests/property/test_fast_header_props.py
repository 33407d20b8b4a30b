"""``archive._FastTarInfo.frombuf`` against tarfile's own ``TarInfo.frombuf``.

The extractor parses headers with its own fast ``frombuf`` (one ``struct`` call) and hands
every header it does not fully understand back to tarfile. These properties pin that the
two agree on every block: the same attributes, or the same exception. Blocks are real
headers (every format tarfile writes, every member type) with bytes overwritten, with the
checksum recomputed (unsigned or signed, as Sun tar) or left wrong.
"""

from __future__ import annotations

import json
import tarfile

from hypothesis import example, given
from hypothesis import strategies as st

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
