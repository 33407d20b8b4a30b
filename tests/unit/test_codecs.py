"""codecs.py: compression found by magic bytes, and the decoded stream a pull extracts from.

Every corpus is made here by the real tools (GNU tar, gzip, zstd, bzip2, xz, pigz, zip, lz4),
never by the Python libraries codecs.py itself uses.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3sync import codecs
from s3sync.archive import SafeExtractor
from s3sync.codecs import CODECS, DecodedReader, detect
from s3sync.errors import DamagedArchiveError, SplitArchiveError, TransientStoreError

TOOLS = {"gzip": ["gzip", "-c"], "zstd": ["zstd", "-q", "-c"], "bzip2": ["bzip2", "-c"], "xz": ["xz", "-c"]}


def compress(codec: str, data: bytes, *extra: str) -> bytes:
    return subprocess.run(TOOLS[codec] + list(extra), input=data, capture_output=True, check=True).stdout


def blocks(data: bytes, size: int) -> Iterator[memoryview]:
    """``data`` in blocks of ``size`` bytes through one reused buffer, scribbled over once the
    consumer asks for the next block (as the fetcher reuses chunk buffers)."""
    buf = bytearray(size)
    for at in range(0, len(data), size):
        view = memoryview(buf)[: len(data[at:at + size])]
        view[:] = data[at:at + size]
        yield view
        buf[:] = b"\xa5" * size


def decode(data: bytes, codec: str, size: int = 4096, threaded: bool = True) -> bytes:
    with DecodedReader(blocks(data, size), codec, "t.tar.x", threaded=threaded) as reader:
        return reader.read()


@pytest.fixture(scope="module")
def payload() -> bytes:
    """Half incompressible, half text: both kinds of deflate blocks, both kinds of zstd blocks."""
    return os.urandom(200_000) + b"".join(b"line %d of the payload\n" % i for i in range(20_000))


@pytest.fixture(scope="module")
def tree_tar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A GNU tar of a small tree: long names, a hard link, an empty file, a 300 kB file."""
    root = tmp_path_factory.mktemp("tree")
    src = root / "ds"
    (src / ("d" * 120) / "sub").mkdir(parents=True)
    (src / ("d" * 120) / "sub" / ("f" * 110 + ".txt")).write_bytes(b"long name\n" * 50)
    (src / "big.bin").write_bytes(os.urandom(300_000))
    (src / "empty").write_bytes(b"")
    os.link(src / "big.bin", src / "hard.bin")
    subprocess.run(["tar", "--format=gnu", "-cf", "ds.tar", "ds"], cwd=root, check=True)
    return src, (root / "ds.tar").read_bytes()


# -- detect


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bzip2", "xz"])
def test_detect_names_each_compression_from_the_real_tools_output(codec: str, payload: bytes) -> None:
    assert detect(compress(codec, payload)[:512], "x") == codec


@pytest.mark.parametrize("fmt", ["gnu", "oldgnu", "ustar", "pax", "v7"])
def test_detect_takes_every_gnu_tar_format_as_plain_tar(fmt: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    subprocess.run(["tar", f"--format={fmt}", "-cf", "a.tar", "a.txt"], cwd=tmp_path, check=True)
    head = (tmp_path / "a.tar").read_bytes()[:512]
    if fmt == "v7":
        assert b"ustar" not in head  # only its checksum says it is a tar
    assert detect(head, "a.tar") == "none"


def test_detect_takes_an_empty_tar(tmp_path: Path) -> None:
    subprocess.run(["tar", "-cf", "e.tar", "-T", "/dev/null"], cwd=tmp_path, check=True)
    assert detect((tmp_path / "e.tar").read_bytes()[:512], "e.tar") == "none"


def test_detect_refuses_a_v7_header_whose_checksum_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    subprocess.run(["tar", "--format=v7", "-cf", "a.tar", "a.txt"], cwd=tmp_path, check=True)
    head = bytearray((tmp_path / "a.tar").read_bytes()[:512])
    head[0] ^= 0x01  # the name's first byte: the stored checksum no longer adds up
    with pytest.raises(SplitArchiveError, match="a.tar: not a tar archive, nor gzip/zstd/bzip2/xz"):
        detect(bytes(head), "a.tar")


def test_detect_refuses_zip_naming_the_piece(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    subprocess.run(["zip", "-q", "a.zip", "a.txt"], cwd=tmp_path, check=True)
    with pytest.raises(SplitArchiveError, match="a.zip: zip archives are not tar"):
        detect((tmp_path / "a.zip").read_bytes()[:512], "a.zip")


def test_detect_refuses_lz4_by_name() -> None:
    data = subprocess.run(["lz4", "-c", "-q"], input=b"x" * 1000, capture_output=True, check=True).stdout
    with pytest.raises(SplitArchiveError, match="lz4 compression is not supported"):
        detect(data, "a.tar.lz4")


@pytest.mark.parametrize(("head", "what"), [
    (b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(40), "7z archives are not tar"),
    (b"Rar!\x1a\x07\x01\x00" + bytes(40), "rar archives are not tar"),
    (b"just some text, not an archive\n" * 20, "not a tar archive, nor gzip/zstd/bzip2/xz"),
    (b"", "empty"),
])
def test_detect_refuses_other_archives_and_unknown_bytes(head: bytes, what: str) -> None:
    with pytest.raises(SplitArchiveError, match=what) as info:
        detect(head, "piece.001")
    assert "piece.001" in str(info.value)


# -- decoding


@pytest.mark.parametrize("threaded", [True, False], ids=["thread", "inline"])
@pytest.mark.parametrize("codec", ["gzip", "zstd", "bzip2", "xz"])
def test_decodes_what_the_tool_compressed(codec: str, threaded: bool, payload: bytes) -> None:
    assert decode(compress(codec, payload), codec, threaded=threaded) == payload


def test_codec_none_passes_the_bytes_through(payload: bytes) -> None:
    assert decode(payload, "none", size=1000) == payload
    assert "none" in CODECS


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bzip2", "xz"])
def test_concatenated_members_decode_as_one_stream(codec: str, payload: bytes) -> None:
    # cat a.gz b.gz, zstd multi-frame, pbzip2-like bzip2 streams, xz multi-stream
    a, b = payload[:150_000], payload[150_000:]
    assert decode(compress(codec, a) + compress(codec, b) + compress(codec, b""), codec) == a + b


def test_pigz_output_decodes(payload: bytes) -> None:
    if shutil.which("pigz") is None:
        pytest.skip("pigz is not installed (apt-get install pigz)")
    data = subprocess.run(["pigz", "-c", "-b", "32", "-p", "2"], input=payload, capture_output=True,
                          check=True).stdout
    assert decode(data, "gzip", size=777) == payload


def test_pzstd_style_skippable_frames_are_skipped(payload: bytes) -> None:
    skippable = (0x184D2A5E).to_bytes(4, "little") + (6).to_bytes(4, "little") + b"\x01\x02\x03\x04\x05\x06"
    data = skippable + compress("zstd", payload[:1000]) + skippable + compress("zstd", payload[1000:])
    assert detect(data, "p.zst") == "zstd"
    assert decode(data, "zstd", size=5) == payload


@pytest.mark.parametrize("codec", ["gzip", "bzip2", "xz"])
def test_zero_padding_after_the_last_member_is_ignored(codec: str, payload: bytes) -> None:
    assert decode(compress(codec, payload) + bytes(10240), codec, size=3000) == payload


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bzip2", "xz"])
def test_garbage_after_the_last_member_is_refused(codec: str, payload: bytes) -> None:
    data = compress(codec, payload) + bytes(512) + b"garbage!" * 8
    with pytest.raises(DamagedArchiveError, match="t.tar.x"):
        decode(data, codec)


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bzip2", "xz"])
def test_a_flipped_byte_is_caught(codec: str, payload: bytes) -> None:
    data = bytearray(compress(codec, payload))
    data[len(data) // 2] ^= 0x10
    with pytest.raises(DamagedArchiveError, match=r"t.tar.x: .*compressed byte \d+"):
        decode(bytes(data), codec)


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bzip2", "xz"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99, -1])
def test_a_stream_cut_short_is_refused(codec: str, keep: float, payload: bytes) -> None:
    whole = compress(codec, payload)
    cut = len(whole) - 1 if keep == -1 else int(len(whole) * keep)
    with pytest.raises(DamagedArchiveError, match="cut short"):
        decode(whole[:cut], codec)


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bzip2", "xz"])
def test_an_empty_stream_is_refused(codec: str) -> None:
    with pytest.raises(DamagedArchiveError, match="empty"):
        decode(b"", codec)


@pytest.mark.parametrize("threaded", [True, False], ids=["thread", "inline"])
@pytest.mark.parametrize("codec", ["gzip", "bzip2", "xz", "zstd"])
def test_errors_of_the_blocks_reach_the_caller_unchanged(codec: str, threaded: bool, payload: bytes) -> None:
    data = compress(codec, payload)

    def failing() -> Iterator[memoryview]:
        yield memoryview(data[:1000])
        raise TransientStoreError("connection reset while reading piece 3")

    class DiskError(OSError):
        pass

    def failing_os() -> Iterator[memoryview]:
        yield memoryview(data[:1000])
        raise DiskError("read failed")  # an OSError: bz2's own errors are OSErrors too

    for source, kind in ((failing(), TransientStoreError), (failing_os(), DiskError)):
        reader = DecodedReader(source, codec, "p", threaded=threaded)
        with pytest.raises(kind):
            reader.read()
        with pytest.raises(kind):  # and again: the reader does not pretend to go on
            reader.read(1)
        reader.close()


def test_views_past_the_end_of_the_decoded_stream_are_refused(payload: bytes) -> None:
    with DecodedReader(blocks(compress("gzip", payload), 999), "gzip", "p.gz") as reader:
        reader.seek(len(payload) - 10)
        with pytest.raises(DamagedArchiveError, match="ended 90 bytes early"):
            b"".join(reader.views(100))


def test_reader_methods_follow_the_ordered_reader(payload: bytes) -> None:
    with DecodedReader(blocks(compress("xz", payload), 5000), "xz", "p.xz") as reader:
        assert reader.readable() and reader.seekable()
        assert reader.read(10) == payload[:10]
        assert reader.seek(5) == 5  # back, within the decoded piece
        assert reader.seek(100, 1) == 105
        assert b"".join(bytes(v) for v in reader.views(1000)) == payload[105:1105]
        at = reader.tell()
        assert reader.drain() == len(payload) - at
        assert reader.read(5) == b""
        with pytest.raises(ValueError):
            reader.seek(0)


@pytest.mark.parametrize("threaded", [True, False], ids=["thread", "inline"])
def test_before_next_chunk_is_called_before_waiting_for_input(threaded: bool, payload: bytes) -> None:
    data = compress("gzip", payload)
    calls = []
    reader = DecodedReader(blocks(data, 1000), "gzip", "p.gz", threaded=threaded)
    reader.before_next_chunk = lambda: calls.append(reader.tell())
    assert reader.read() == payload
    reader.close()
    assert calls, "never called"


def test_close_ends_the_decoding_thread_and_closes_the_blocks(payload: bytes) -> None:
    member = compress("gzip", payload)
    closed = threading.Event()

    def endless() -> Iterator[memoryview]:
        try:
            while True:
                yield memoryview(member)
        finally:
            closed.set()

    reader = DecodedReader(endless(), "gzip", "p.gz")
    assert reader.read(10) == payload[:10]
    worker = reader._thread
    assert worker is not None and not worker.done.is_set()
    reader.close()
    assert worker.done.is_set()
    assert closed.is_set()


def test_memory_stays_bounded_on_a_gibibyte_of_zeros(tmp_path: Path) -> None:
    """gzip and zstd each turning ~1 MB (gzip) / ~40 kB (zstd) into 1 GiB: the decoder's
    buffers, the queue and the output pieces stay a few MiB."""
    for codec, tool in (("gzip", ["gzip", "-1", "-c"]), ("zstd", ["zstd", "-1", "-q", "-c"])):
        with open("/dev/zero", "rb") as zero:
            member = subprocess.run(["head", "-c", str(64 << 20)], stdin=zero, capture_output=True,
                                    check=True).stdout
        one = subprocess.run(tool, input=member, capture_output=True, check=True).stdout
        del member
        bomb = one * 16
        tracemalloc.start()
        try:
            with DecodedReader(blocks(bomb, 1 << 20), codec, "bomb") as reader:
                assert reader.drain() == 1 << 30
            _now, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        bound = (codecs.QUEUE_DEPTH + 4) * codecs.OUTPUT_PIECE + (8 << 20)  # 16 MiB; the data is 1 GiB
        assert peak < bound, f"{codec}: peak {peak} bytes traced"


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bzip2", "xz"])
def test_safe_extractor_reads_the_decoded_stream_as_tar_extracts_it(codec: str, tree_tar: tuple[Path, bytes],
                                                                    tmp_path: Path) -> None:
    src, tar = tree_tar
    data = compress(codec, tar)
    dest = tmp_path / "out"
    dest.mkdir()
    with DecodedReader(blocks(data, 65536), codec, "ds.tar.x") as reader:
        SafeExtractor(dest).extract(reader, lambda offset, record: None)
    cmp = filecmp.dircmp(src, dest / "ds")
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files)
    sub = src / ("d" * 120) / "sub"
    assert (dest / "ds" / sub.relative_to(src) / ("f" * 110 + ".txt")).read_bytes() == b"long name\n" * 50
    assert (dest / "ds" / "hard.bin").stat().st_ino == (dest / "ds" / "big.bin").stat().st_ino


@pytest.mark.parametrize("threaded", [True, False], ids=["thread", "inline"])
@pytest.mark.parametrize("codec", ["gzip", "zstd", "bzip2", "xz"])
def test_damage_surfaces_at_the_read_that_needs_it(codec: str, threaded: bool, payload: bytes) -> None:
    """The bytes before a corrupt second member are read first, however far ahead the thread ran."""
    first = compress(codec, payload)
    second = bytearray(compress(codec, payload))
    second[len(second) // 2] ^= 0x04
    with DecodedReader(blocks(first + bytes(second), 4096), codec, "p", threaded=threaded) as reader:
        assert reader.read(len(payload)) == payload
        with pytest.raises(DamagedArchiveError, match=r"p: corrupt .* \(near compressed byte \d+\)"):
            reader.read()
