"""Properties of pieces.py: piece names in any arrival order come back in stream order, a
missing piece is always named, checksum lines round-trip, ETag evidence is consistent.

GNU split's names come from a transcription of coreutils split.c's next_file_name (increment
the suffix; when its first symbol becomes the alphabet's last and the length was not given,
append that symbol to the prefix and grow the suffix by one), independent of pieces.py's
ordinal arithmetic; tests/unit/test_pieces.py checks both against split itself.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from s3sync.errors import SplitArchiveError
from s3sync.manifest import valid_name
from s3sync.pieces import (
    Claim,
    choose_evidence,
    dataset_name,
    describe,
    etag_md5,
    multipart_etag,
    multipart_etag_parts,
    natural_key,
    order_pieces,
    parse_checksums,
)

DIGITS = "0123456789"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
WHERE = "s3://bucket/prefix"


def gnu_split_names(prefix: str, count: int, alphabet: str, length: int, widen: bool, tail: str) -> list[str]:
    """The names ``split`` writes for ``count`` pieces, in the order it writes them."""
    index, extra, names = [0] * length, "", []
    for n in range(count):
        names.append(prefix + extra + "".join(alphabet[d] for d in index) + tail)
        if n == count - 1:
            break
        i = len(index) - 1
        while i >= 0:
            index[i] += 1
            if index[i] < len(alphabet):
                break
            index[i] = 0
            i -= 1
        assert i >= 0, "suffixes exhausted"
        if widen and index[0] == len(alphabet) - 1:
            extra += alphabet[-1]
            index = [0] * (len(index) + 1)
    return names


def capacity(alphabet: str, length: int, widen: bool) -> int:
    return (len(alphabet) - 1) * len(alphabet) ** (length - 1) if widen else len(alphabet) ** length


stems = st.text(alphabet="abcxyz._-", min_size=1, max_size=8).filter(lambda s: s[-1] in "._-x")
tails = st.sampled_from(["", ".part", ".tar", "_of_n"])


@st.composite
def split_runs(draw) -> list[str]:
    alphabet = draw(st.sampled_from([DIGITS, LETTERS]))
    length = draw(st.integers(min_value=1, max_value=3))
    widen = draw(st.booleans())
    most = capacity(alphabet, length, widen) * (3 if widen else 1)
    count = draw(st.integers(min_value=2, max_value=min(most, 900)))
    return gnu_split_names(draw(stems), count, alphabet, length, widen, draw(tails))


@st.composite
def padded_runs(draw) -> list[str]:
    start = draw(st.sampled_from([0, 1]))
    width = draw(st.integers(min_value=1, max_value=4))
    count = draw(st.integers(min_value=2, max_value=300))
    stem, tail = draw(stems), draw(tails)
    return [f"{stem}{str(i).zfill(width)}{tail}" for i in range(start, start + count)]


runs = st.one_of(split_runs(), padded_runs())


@given(names=runs, seed=st.integers())
def test_any_arrival_order_gives_the_stream_order(names: list[str], seed: int) -> None:
    mixed = list(names)
    random.Random(seed).shuffle(mixed)
    assert order_pieces(mixed, WHERE) == names


@given(names=runs, data=st.data())
def test_a_missing_piece_is_always_named(names: list[str], data: st.DataObject) -> None:
    gone = data.draw(st.integers(min_value=1, max_value=len(names) - 2)) if len(names) > 2 else None
    assume(gone is not None)
    with pytest.raises(SplitArchiveError) as err:
        order_pieces(names[:gone] + names[gone + 1:], WHERE)
    assert f"{names[gone]} is missing" in str(err.value)


@given(names=runs)
def test_a_run_without_its_first_pieces_is_refused(names: list[str]) -> None:
    assume(len(names) > 3)
    with pytest.raises(SplitArchiveError, match="the first piece seems missing"):
        order_pieces(names[2:], WHERE)


@given(a=runs, b=runs)
def test_two_runs_with_different_stems_are_two_families(a: list[str], b: list[str]) -> None:
    b = ["other-" + n for n in b]
    with pytest.raises(SplitArchiveError, match="not the pieces of one archive: 2 name families"):
        order_pieces(a + b, WHERE)


@given(names=st.lists(st.text(max_size=12), unique=True, max_size=20), seed=st.integers())
def test_natural_order_is_total(names: list[str], seed: int) -> None:
    mixed = list(names)
    random.Random(seed).shuffle(mixed)
    assert sorted(mixed, key=natural_key) == sorted(names, key=natural_key)


@given(a=st.integers(min_value=0, max_value=10**30), b=st.integers(min_value=0, max_value=10**30),
       stem=st.text(alphabet="ab.", max_size=4), tail=st.text(alphabet="ab.", max_size=4))
def test_numbers_compare_as_numbers(a: int, b: int, stem: str, tail: str) -> None:
    assert (natural_key(f"{stem}{a}{tail}") < natural_key(f"{stem}{b}{tail}")) == (a < b)


# --- checksum lines ----------------------------------------------------------------------

names = st.text(alphabet=st.sampled_from(list("ab. *()=/\\\n\r#-") + ["é"]), min_size=1, max_size=12).filter(
    lambda n: n.strip() != "")
ALGORITHMS = {"md5": "MD5", "sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}


def gnu_line(name: str, digest: str, algorithm: str, form: str) -> str:
    """One line as coreutils writes it (md5sum.c: output_file), escapes included."""
    escaped = any(c in name for c in "\\\n\r")
    if escaped:
        name = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    head = "\\" if escaped else ""
    if form == "tag":
        return f"{head}{ALGORITHMS[algorithm]} ({name}) = {digest}"
    return f"{head}{digest} {'*' if form == 'binary' else ' '}{name}"


@given(entries=st.dictionaries(names, st.tuples(st.sampled_from(sorted(ALGORITHMS)), st.binary(max_size=8),
                                                st.sampled_from(["text", "binary", "tag"])),
                               min_size=1, max_size=8),
       crlf=st.booleans(), bom=st.booleans())
def test_checksum_lines_round_trip(entries: dict, crlf: bool, bom: bool) -> None:
    lines = []
    for name, (algorithm, data, form) in entries.items():
        lines.append(gnu_line(name, hashlib.new(algorithm, data).hexdigest(), algorithm, form))
    text = ("\ufeff" if bom else "") + "# list\n" + ("\r\n" if crlf else "\n").join(lines) + "\n"
    claims = parse_checksums(text, "CHECKSUMS")
    for name, (algorithm, data, _) in entries.items():
        assert claims[name] == Claim(algorithm, hashlib.new(algorithm, data).hexdigest(), "CHECKSUMS")


# --- ETags and names ---------------------------------------------------------------------

@given(parts=st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=60),
       part_size=st.integers(min_value=5 << 20, max_value=5 << 30))
def test_multipart_etags_are_recognised_and_chosen(parts: list[bytes], part_size: int) -> None:
    etag = multipart_etag(parts)
    assert multipart_etag_parts(f'"{etag}"') == len(parts)
    assert etag_md5(f'"{etag}"') is None
    size = part_size * (len(parts) - 1) + 1
    evidence = choose_evidence(None, f'"{etag}"', part_size, size=size)
    assert (evidence.kind, evidence.expected, evidence.upload_part_size) == ("etag-multipart", etag, part_size)
    assert f"{len(parts)} part" in describe(evidence)


@given(data=st.binary(max_size=64), upper=st.booleans())
def test_plain_etags_are_md5s(data: bytes, upper: bool) -> None:
    md5 = hashlib.md5(data).hexdigest()
    etag = f'"{md5.upper() if upper else md5}"'
    assert etag_md5(etag) == md5
    assert multipart_etag_parts(etag) is None
    assert choose_evidence(None, etag, None).expected == md5


@given(etag=st.text(max_size=50), part_size=st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 40)),
       size=st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 44)))
def test_any_etag_gives_some_evidence_and_a_phrase(etag: str, part_size: int | None, size: int | None) -> None:
    evidence = choose_evidence(None, etag, part_size, size=size)
    assert evidence.kind in ("etag-md5", "etag-multipart", "none")
    assert describe(evidence)


@given(name=st.text(max_size=40))
def test_dataset_names_are_valid_or_empty(name: str) -> None:
    result = dataset_name(name)
    assert result == "" or valid_name(result)
