"""Decoding through ``codecs.DecodedReader`` never depends on how the compressed input is cut.

The compressed corpora are made once by the real tools (two members, frames or streams each,
so that cuts also fall on and around member boundaries). Blocks come through one reused
buffer, scribbled over as soon as the next one is asked for, as chunk buffers are reused: a
decoder that kept a view of an old block would decode garbage and fail its CRC.
"""

from __future__ import annotations

import functools
import io
import random
import subprocess
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from s3sync.codecs import DecodedReader
from s3sync.errors import DamagedArchiveError

TOOLS = {"gzip": ["gzip", "-c"], "zstd": ["zstd", "-q", "-c"], "bzip2": ["bzip2", "-c"], "xz": ["xz", "-c"]}
COMPRESSED = sorted(TOOLS)


@functools.cache
def payload() -> tuple[bytes, bytes]:
    rng = random.Random(11)
    first = rng.randbytes(3000) + b"".join(b"row %d\n" % i for i in range(1500))
    second = b"".join(b"second member %d\n" % i for i in range(600)) + rng.randbytes(2000)
    return first, second


@functools.cache
def corpus(codec: str) -> tuple[bytes, int]:
    """The two payload halves compressed separately and concatenated, and where the second begins."""
    parts = [subprocess.run(TOOLS[codec], input=p, capture_output=True, check=True).stdout for p in payload()]
    return parts[0] + parts[1], len(parts[0])


def cut_blocks(data: bytes, sizes: list[int]) -> Iterator[memoryview]:
    buf = bytearray(max(sizes))
    at, i = 0, 0
    while at < len(data):
        size = sizes[i % len(sizes)]
        i += 1
        piece = data[at:at + size]
        at += len(piece)
        view = memoryview(buf)[: len(piece)]
        view[:] = piece
        yield view
        buf[:] = b"\xa5" * len(buf)


block_sizes = st.one_of(st.just([1]), st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=8))
ops = st.lists(st.tuples(st.sampled_from(["read", "seek", "views", "seek_cur", "back"]),
                         st.integers(min_value=0, max_value=3000)), max_size=30)


@given(codec=st.sampled_from(COMPRESSED + ["none"]), sizes=block_sizes, threaded=st.booleans(), plan=ops)
def test_any_cut_and_any_reads_give_the_decoded_bytes(codec: str, sizes: list[int], threaded: bool,
                                                      plan: list) -> None:
    whole = b"".join(payload())
    data = whole if codec == "none" else corpus(codec)[0]
    model = io.BytesIO(whole)
    with DecodedReader(cut_blocks(data, sizes), codec, "p", threaded=threaded) as reader:
        for op, n in plan:
            pos = reader.tell()
            assert pos == model.tell()
            if op == "read":
                assert reader.read(n) == model.read(n)
            elif op == "seek":
                target = min(pos + n, len(whole))
                assert reader.seek(target) == model.seek(target)
            elif op == "seek_cur":
                target = min(n, len(whole) - pos)
                assert reader.seek(target, 1) == model.seek(target, 1)
            elif op == "views":
                want = min(n, len(whole) - pos)
                assert b"".join(bytes(v) for v in reader.views(want)) == model.read(want)
            elif pos:
                try:
                    reader.seek(pos - 1)
                except ValueError:
                    continue  # allowed: back across a decoded piece
                model.seek(pos - 1)
        assert reader.read() == model.read()
        assert reader.read(5) == b""


@given(codec=st.sampled_from(COMPRESSED), where=st.floats(min_value=0, max_value=1, exclude_max=True),
       sizes=block_sizes)
def test_a_cut_is_refused_unless_it_falls_between_members(codec: str, where: float, sizes: list[int]) -> None:
    data, boundary = corpus(codec)
    cut = 1 + int(where * (len(data) - 1))  # 1 .. len - 1
    reader = DecodedReader(cut_blocks(data[:cut], sizes), codec, "p", threaded=False)
    try:
        if cut == boundary:
            assert reader.read() == payload()[0]
        else:
            try:
                reader.drain()
            except DamagedArchiveError as err:
                assert "p: " in str(err)
            else:
                raise AssertionError(f"a {codec} stream cut at {cut} of {len(data)} decoded without error")
    finally:
        reader.close()


@given(codec=st.sampled_from(COMPRESSED), where=st.floats(min_value=0, max_value=1, exclude_max=True),
       bit=st.integers(min_value=0, max_value=7), threaded=st.booleans())
def test_a_flipped_bit_is_caught_or_harmless(codec: str, where: float, bit: int, threaded: bool) -> None:
    """Never silently wrong: a flip either decodes to the same bytes (gzip's unchecked header
    fields: MTIME, XFL, OS) or raises DamagedArchiveError."""
    data = bytearray(corpus(codec)[0])
    data[int(where * len(data))] ^= 1 << bit
    with DecodedReader(cut_blocks(bytes(data), [4096]), codec, "p", threaded=threaded) as reader:
        try:
            out = reader.read()
        except DamagedArchiveError:
            return
    assert out == b"".join(payload())
