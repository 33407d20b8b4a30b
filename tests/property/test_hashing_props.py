"""Digests do not depend on how the bytes are split or re-chunked."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s3sync import hashing


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, prev = [], 0
    for p in points + [len(data)]:
        pieces.append(data[prev:p])
        prev = p
    return pieces


@given(data=st.binary(max_size=20_000), cuts=st.lists(st.integers(min_value=0), max_size=30),
       kinds=st.lists(st.sampled_from(["bytes", "bytearray", "memoryview"]), min_size=1))
def test_hasher_digest_is_independent_of_the_split(data: bytes, cuts: list[int], kinds: list[str]) -> None:
    hasher = hashing.Hasher()
    for i, piece in enumerate(_split(data, cuts)):
        kind = kinds[i % len(kinds)]
        hasher.update(bytearray(piece) if kind == "bytearray" else memoryview(piece) if kind == "memoryview" else piece)
    one_shot = hashing.digest(data)
    assert hasher.hexdigest() == one_shot
    assert hashing.is_digest(one_shot)
    assert hasher.hexdigest() == one_shot  # reading the digest does not consume the hasher


@given(data=st.binary(min_size=1, max_size=5000), flip=st.integers(min_value=0))
def test_any_single_bit_flip_changes_the_digest(data: bytes, flip: int) -> None:
    bit = flip % (len(data) * 8)
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    assert hashing.digest(bytes(damaged)) != hashing.digest(data)


@given(data=st.binary(max_size=3000), extra=st.binary(min_size=1, max_size=10))
def test_digest_depends_on_length(data: bytes, extra: bytes) -> None:
    assert hashing.digest(data + extra) != hashing.digest(data)


@given(value=st.one_of(st.text(max_size=40), st.integers(), st.none(), st.binary(max_size=40)))
def test_is_digest_accepts_only_32_lowercase_hex(value: object) -> None:
    expected = (isinstance(value, str) and len(value) == 32
                and all(c in "0123456789abcdef" for c in value))
    assert hashing.is_digest(value) == expected


def test_digest_is_xxh3_128_canonical_hex() -> None:
    # Known answer: XXH3-128 of the empty input, as `xxh128sum` prints it.
    assert hashing.digest(b"") == "99aa06d3014798d86001c324468d497f"
    assert hashing.ALGORITHM == "xxh3-128"
