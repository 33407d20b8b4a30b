"""Split archives s3sync did not publish: pieces, their natural order, and the evidence
that checks them (sidecar checksum files, S3 ETags). Pure data and parsing: no I/O.

A *piece* is one object (or URL) of a split archive; concatenated in natural order the
pieces give one tar stream, possibly compressed. A *sidecar* is a checksum file beside
the pieces (``PIECE.md5``, ``PIECE.sha256``, ``MD5SUMS``, ``SHA256SUMS``, ``md5sums.txt``).
Vocabulary: DESIGN.md section 5.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import SplitArchiveError
from .manifest import valid_name

EVIDENCE_KINDS = ("sidecar", "etag-md5", "etag-multipart", "none")
"""Kinds of evidence for a piece, strongest first (issue 11, section 2)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A digest a sidecar claims for one piece.

    Attributes:
        algorithm: hashlib name: ``md5``, ``sha256`` (also ``sha1``, ``sha512``).
        digest: lower-case hex.
        source: the sidecar's name (e.g. ``MD5SUMS`` or ``sbu.tar.part01.md5``).
    """

    algorithm: str
    digest: str
    source: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """The strongest evidence available for one piece, and what it promises.

    Attributes:
        kind: one of ``EVIDENCE_KINDS``.
        algorithm: ``md5``, ``sha256``... (``sidecar``); ``md5`` (``etag-md5``,
            ``etag-multipart``); ``""`` for ``none``.
        expected: the hex digest promised; for ``etag-multipart`` the ETag without quotes,
            ``HEX-N`` (MD5 of the N multipart upload parts' binary MD5s).
        source: where it comes from: the sidecar's name, ``ETag``; for ``none`` why there
            is nothing (e.g. ``no sidecar; multipart ETag and the server does not give the
            upload part size``).
        upload_part_size: for ``etag-multipart``: bytes per multipart upload part (every
            part but the last has this size); else 0.
    """

    kind: str
    algorithm: str = ""
    expected: str = ""
    source: str = ""
    upload_part_size: int = 0


@dataclass(frozen=True, slots=True)
class Piece:
    """One object of a split archive.

    Attributes:
        name: its last path component, as shown to the user.
        key: the store key (S3: the full key in the bucket; HTTP: the absolute URL).
        url: ``s3://BUCKET/KEY`` or the http(s) URL, for messages.
        size: bytes.
        etag: as the server sent it (quotes included), ``""`` if none; pins every GET.
        evidence: what checks its bytes.
    """

    name: str
    key: str
    url: str
    size: int
    etag: str
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class SplitArchive:
    """The pieces of one archive, in order, as a pull or adopt reads them.

    Attributes:
        name: the dataset name (the directory a pull creates).
        source: the SOURCE as given (``s3://BUCKET/PREFIX``, an object, or URLs joined by spaces).
        pieces: in stream order.
        ranges: the server answers ranged GETs (S3 always; HTTP if it honours ``Range``):
            pieces are fetched in parallel chunks; otherwise each piece in one stream.
    """

    name: str
    source: str
    pieces: tuple[Piece, ...]
    ranges: bool = True

    @property
    def size(self) -> int:
        """Bytes in all pieces (the stored stream)."""
        return sum(p.size for p in self.pieces)

    def identity(self) -> bytes:
        """Canonical JSON of what makes two pulls the same pull: the pieces' keys, sizes,
        ETags and evidence. A resumed pull continues only if this is unchanged."""
        doc = {"format": "s3sync-split-archive", "version": 1, "name": self.name, "pieces": [
            {"key": p.key, "size": p.size, "etag": p.etag, "evidence": [
                p.evidence.kind, p.evidence.algorithm, p.evidence.expected, p.evidence.upload_part_size]}
            for p in self.pieces]}
        return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()


# --- natural order and piece families ------------------------------------------------

_DIGITS = "0123456789"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_DIGIT_RUN = re.compile(r"([0-9]+)")
_SHOWN = 5
"""Families (or missing names) a message lists before "and N more"."""


def natural_key(name: str) -> tuple:
    """Sort key that compares ASCII digit runs as numbers: ``x.2 < x.10``, ``x89 < x9000``.

    Text and numbers alternate at the same positions of every key (``re.split`` with a
    capture group), so keys always compare; the name itself is the last element, so two
    names that differ only in padding (``x.1``, ``x.01``) still have a total order.
    """
    parts = _DIGIT_RUN.split(name)
    return (tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name)


@dataclass(frozen=True, slots=True)
class _Family:
    """Names read as ``stem + index + tail`` with one stem and one tail.

    ``indices`` follow the names in natural order; ``letters`` tells the index alphabet.
    """

    stem: str
    tail: str
    indices: tuple[str, ...]
    letters: bool

    def name(self, index: str) -> str:
        return f"{self.stem}{index}{self.tail}"

    def show(self) -> str:
        """``stem{first..last}tail`` with the piece count, for messages."""
        n = len(self.indices)
        return f"{self.stem}{{{self.indices[0]}..{self.indices[-1]}}}{self.tail} ({n} pieces)"


def _common_suffix(names: list[str]) -> str:
    return _common_prefix([n[::-1] for n in names])[::-1]


def _common_prefix(strings: list[str]) -> str:
    lo, hi = min(strings), max(strings)
    i = 0
    while i < min(len(lo), len(hi)) and lo[i] == hi[i]:
        i += 1
    return lo[:i]


def _trailing_run(text: str, chars: str) -> str:
    i = len(text)
    while i and text[i - 1] in chars:
        i -= 1
    return text[i:]


def _split_family(names: list[str], chars: str) -> tuple[str, str, list[str]] | None:
    """``(head, tail, runs)``: every name is ``head + run + tail`` where ``run`` is the
    maximal run of ``chars`` before the common tail; None if the heads differ."""
    tail = _common_suffix(names).lstrip(chars)
    runs, heads = [], set()
    for n in names:
        body = n[:len(n) - len(tail)]
        run = _trailing_run(body, chars)
        if not run:
            return None
        runs.append(run)
        heads.add(body[:len(body) - len(run)])
        if len(heads) > 1:
            return None
    return heads.pop(), tail, runs


def _letter_readings(head: str, tail: str, runs: list[str]) -> list[_Family]:
    """The ways to cut letter runs into stem letters and index (``xaa``: ``x``+``aa``
    or ``xa``+``a``): every cut that leaves a non-empty index in every name."""
    shared = len(_common_prefix(runs))
    shortest = min(len(r) for r in runs)
    return [_Family(head + runs[0][:q], tail, tuple(r[q:] for r in runs), True)
            for q in range(0, min(shared, shortest - 1) + 1)]


def _one_family(names: list[str]) -> list[_Family]:
    """The readings of ``names`` (in natural order) as one family, best first; [] if none.

    Digit indices are the whole digit run (``set10001`` is index 10001, never stem
    ``set1`` + ``0001``): reading stem digits into the index could hide a missing piece.
    Letter indices may take letters of the stem (GNU split's default prefix ``x``), so
    there are several readings; the one with a two-letter index (split's default) is
    preferred for messages.
    """
    split = _split_family(names, _DIGITS)
    if split is not None:
        head, tail, runs = split
        fam = _Family(head, tail, tuple(runs), False)
        return [fam] if _int_run(fam.indices) or _gnu_run(fam.indices, _DIGITS) or _padding_twins(fam) else []
    split = _split_family(names, _LETTERS)
    if split is None:
        return []
    readings = [f for f in _letter_readings(*split) if _gnu_run(f.indices, _LETTERS) is not None]
    readings.sort(key=lambda f: (min(len(i) for i in f.indices) != 2, -len(f.stem)))
    return readings


def _offset(w: int, base: int, length: int) -> int:
    """Names before GNU split's ``w``-th widening: (base-1)*base**(length+v-1) for v < w."""
    return sum((base - 1) * base ** (length + v - 1) for v in range(w))


def _value(s: str, alphabet: str) -> int:
    n = 0
    for c in s:
        n = n * len(alphabet) + alphabet.index(c)
    return n


def _digits_of(n: int, width: int, alphabet: str) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, len(alphabet))
        out.append(alphabet[r])
    return "".join(reversed(out))


@dataclass(frozen=True, slots=True)
class _Run:
    """A numbering model: ordinals of the indices and the inverse, for gap messages."""

    ordinals: tuple[int, ...]
    alphabet: str
    length: int
    widened: bool
    padded_int: bool  # "1".."12", "001".."012": str(n).zfill(length)

    def index(self, ordinal: int) -> str:
        if self.padded_int:
            return str(ordinal).zfill(self.length)
        base, w = len(self.alphabet), 0
        if self.widened:
            while ordinal >= _offset(w + 1, base, self.length):
                w += 1
        return self.alphabet[-1] * w + _digits_of(ordinal - _offset(w, base, self.length), self.length + w,
                                                  self.alphabet)


def _gnu_run(indices: tuple[str, ...], alphabet: str) -> _Run | None:
    """GNU split's suffixes: all of one length L, or, when split chose the length itself,
    widened after the last name whose first symbol is not the alphabet's last one:
    ``'9'*w + s`` with ``len(s) == L + w`` and ``s[0] != '9'`` (``x89``, ``x9000``,
    ``x990000``; ``xyz``, ``xzaaa``, ``xzzaaaa``). GNU coreutils split.c, next_file_name."""
    length = min(len(i) for i in indices)
    last, base = alphabet[-1], len(alphabet)
    widened = any(len(i) != length for i in indices)
    ordinals = []
    for idx in indices:
        if len(idx) == length:
            if widened and idx[0] == last:
                return None  # split widens instead of writing this name
            ordinals.append(_value(idx, alphabet))
        else:
            w = len(idx) - len(idx.lstrip(last))
            if w == 0 or len(idx) != length + 2 * w:
                return None
            ordinals.append(_offset(w, base, length) + _value(idx[w:], alphabet))
    return _Run(tuple(ordinals), alphabet, length, widened, False)


def _int_run(indices: tuple[str, ...]) -> _Run | None:
    """Integers padded to one width (``1``..``12``, ``001``..``012``, ``01``..``100``)."""
    length = min(len(i) for i in indices)
    if any(i != str(int(i)).zfill(length) for i in indices):
        return None
    return _Run(tuple(int(i) for i in indices), _DIGITS, length, False, True)


def _padding_twins(fam: _Family) -> tuple[str, str] | None:
    """Two names whose digit indices have the same value (``x.1``, ``x.01``), or None."""
    by_value: dict[int, str] = {}
    for idx in fam.indices:
        if int(idx) in by_value:
            return fam.name(by_value[int(idx)]), fam.name(idx)
        by_value[int(idx)] = idx
    return None


def _problem(fam: _Family) -> str | None:
    """Why ``fam`` is not a complete run starting at its first index; None if it is."""
    starts = (0,) if fam.letters else (0, 1)
    if fam.letters:
        runs = [_gnu_run(fam.indices, _LETTERS)]
    else:
        twins = _padding_twins(fam)
        if twins:
            return f"{twins[0]} and {twins[1]} differ only in padding: the same piece twice, or two archives"
        gnu = _gnu_run(fam.indices, _DIGITS)
        runs = [gnu, _int_run(fam.indices)] if gnu is not None and gnu.widened else [_int_run(fam.indices), gnu]
    runs = [r for r in runs if r is not None]
    if not runs:
        return "the indices are not one numbered run (mixed widths)"
    problems = []
    for run in runs:
        ords = sorted(run.ordinals)
        if ords[0] not in starts:
            problems.append(f"it starts at {fam.name(fam.indices[0])}: the first piece seems missing "
                            f"(expected {fam.name(run.index(starts[0]))}"
                            + (f" or {fam.name(run.index(1))})" if len(starts) > 1 else ")"))
            continue
        missing, count = [], 0
        for a, b in zip(ords, ords[1:]):
            if b - a > 1:
                count += b - a - 1
                missing += [fam.name(run.index(o)) for o in range(a + 1, min(b, a + 1 + _SHOWN - len(missing)))]
        if not count:
            return None
        more = f" and {count - len(missing)} more" if count > len(missing) else ""
        problems.append(f"it has a gap: {', '.join(missing)}{more} {'is' if count == 1 else 'are'} missing")
    return problems[0]


def _families(names: list[str]) -> list[list[str]]:
    """Group names (natural order) into families for a message: by the name with its
    digit runs (or, without digits, its last letter run) blanked, then neighbours that
    read as one family are merged."""
    groups: dict[str, list[str]] = {}
    for n in names:
        sig = _DIGIT_RUN.sub("#", n) if _DIGIT_RUN.search(n) else re.sub(r"[a-z]+([^a-z]*)\Z", r"@\1", n)
        groups.setdefault(sig, []).append(n)
    # A signature group that does not read as one family (notes.md, notes.txt) is single names.
    parts = [g for group in groups.values() for g in ([group] if _one_family(group) else [[n] for n in group])]
    merged: list[list[str]] = []
    for group in sorted(parts, key=lambda g: natural_key(g[0])):
        if merged and _one_family(merged[-1] + group):
            merged[-1] = sorted(merged[-1] + group, key=natural_key)
        else:
            merged.append(group)
    return merged


def _show(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    readings = _one_family(names)
    return readings[0].show() if readings else f"{names[0]}..{names[-1]} ({len(names)} pieces)"


def order_pieces(names: Iterable[str], where: str) -> list[str]:
    """The pieces of one archive in stream order (the order ``cat`` must join them in).

    Rules (issue 11, section 1):

    - One name is its own order. Several must read as ONE family ``stem + index + tail``:
      one stem, one (possibly empty) tail, and an index that is either a digit run or a run
      of lower-case letters (GNU split's alphabet).
    - Digit indices: integers padded to one width (``name.1``..``name.12``, ``.001``,
      ``.part01``, ``_01``, ``x00``) starting at 0 or 1, or GNU split's suffixes with their
      widening (``x00``..``x89``, ``x9000``..``x9899``, ``x990000``...; ``split
      --numeric-suffixes=1`` does not widen: ``x01``..``x99``). The whole digit run is the
      index: digits are never borrowed from the stem.
    - Letter indices: GNU split's ``aa``..``zz`` (``-a N``: N letters), and when split chose
      the length itself ``xyz`` is followed by ``xzaaa``, then ``xzzaaaa``; the run starts at
      ``a...a``. The letters of a stem like split's ``x`` prefix may read as index letters;
      a list is accepted if any reading is a complete run.
    - Widened suffixes are consecutive (``x89``, ``x9000``), not a gap.

    Args:
        names: object names (last path components), sidecars already removed.
        where: the SOURCE, for messages (``s3://BUCKET/PREFIX``).

    Returns:
        The names in natural order (``natural_key``), which is stream order for every
        family accepted.

    Raises:
        SplitArchiveError: no name, a name given twice, two or more unrelated name
            families, a gap in a numbered run (the missing names are listed), a run
            that does not start at its first index ("the first piece seems missing"),
            or two names that differ only in padding (``x.1``, ``x.01``). The message
            lists what was found, each family as ``stem{first..last}tail`` with a count.
    """
    names = list(names)
    if not names:
        raise SplitArchiveError(f"{where}: no pieces found")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise SplitArchiveError(f"{where}: {n} is given twice", hint="name each piece once")
        seen.add(n)
    ordered = sorted(names, key=natural_key)
    if len(ordered) == 1:
        return ordered
    readings = _one_family(ordered)
    if not readings:
        fams = _families(ordered)
        shown = ", ".join(_show(f) for f in fams[:_SHOWN])
        more = f" and {len(fams) - _SHOWN} more" if len(fams) > _SHOWN else ""
        raise SplitArchiveError(f"{where}: the objects are not the pieces of one archive: {len(fams)} name "
                                f"families: {shown}{more}",
                                hint="point SOURCE at a prefix (or URLs) holding only the pieces of one archive "
                                     "and their checksum files")
    problems = [_problem(f) for f in readings]
    if None in problems:
        return ordered
    raise SplitArchiveError(f"{where}: {readings[0].show()}: {problems[0]}",
                            hint="upload the missing pieces beside the others (s3sync never pulls an archive "
                                 "with a hole in it), or point SOURCE at the pieces of one archive only")
