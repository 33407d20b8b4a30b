"""Split archives s3sync did not publish: pieces, their natural order, and the evidence
that checks them (sidecar checksum files, S3 ETags). Pure data and parsing: no I/O.

A *piece* is one object (or URL) of a split archive; concatenated in natural order the
pieces give one tar stream, possibly compressed. A *sidecar* is a checksum file beside
the pieces (``PIECE.md5``, ``PIECE.sha256``, ``MD5SUMS``, ``SHA256SUMS``, ``md5sums.txt``).
Vocabulary: DESIGN.md section 5.
"""

from __future__ import annotations

import hashlib
import itertools
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
    modified: float | None = None
    """Last-Modified (seconds since the epoch) where the server gives no ETag (many web
    servers): it identifies the piece's version instead."""


@dataclass(frozen=True, slots=True)
class SplitArchive:
    """The pieces of one archive, in order, as a pull or adopt reads them.

    Attributes:
        name: the dataset name (the directory a pull creates).
        source: the SOURCE as given (``s3://BUCKET/PREFIX``, an object), or for several URLs
            their directory and count (for messages).
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
        ETags (Last-Modified where there is none) and evidence. A resumed pull continues
        only if this is unchanged."""
        doc = {"format": "s3sync-split-archive", "version": 1, "name": self.name, "pieces": [
            {"key": p.key, "size": p.size, "etag": p.etag or f"modified:{p.modified}", "evidence": [
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
    # Without a stem only ``split FILE ''`` fits (``aa``, ``ab``): single letters (``a``,
    # ``b``) or letters before a tail (``a.tar.001``, ``b.tar.001``) are unrelated names.
    return [_Family(head + runs[0][:q], tail, tuple(r[q:] for r in runs), True)
            for q in range(min(shared, shortest - 1) + 1)
            if head + runs[0][:q] or (not tail and shortest - q >= 2)]


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
    readings.sort(key=lambda f: (not f.stem, min(len(i) for i in f.indices) != 2, -len(f.stem)))
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


def _problem(fam: _Family) -> tuple[int, str] | None:
    """Why ``fam`` is not a complete run starting at its first index, with how many names
    that reading supposes missing (the likeliest reading is the one missing fewest);
    None if it is complete."""
    starts = (0,) if fam.letters else (0, 1)
    if fam.letters:
        runs = [_gnu_run(fam.indices, _LETTERS)]
    else:
        twins = _padding_twins(fam)
        if twins:
            return 0, f"{twins[0]} and {twins[1]} differ only in padding: the same piece twice, or two archives"
        runs = [_int_run(fam.indices), _gnu_run(fam.indices, _DIGITS)]
    problems = []
    for run in (r for r in runs if r is not None):
        ords = sorted(run.ordinals)
        missing, count = [], 0
        for a, b in itertools.pairwise(ords):
            if b - a > 1:
                count += b - a - 1
                missing += [fam.name(run.index(o)) for o in range(a + 1, min(b, a + 1 + _SHOWN - len(missing)))]
        if ords[0] not in starts:
            problems.append((count + ords[0] - starts[-1],
                             f"it starts at {fam.name(fam.indices[0])}: the first piece seems missing "
                             f"(expected {' or '.join(fam.name(run.index(s)) for s in starts)})"))
        elif not count:
            return None
        else:
            more = f" and {count - len(missing)} more" if count > len(missing) else ""
            problems.append((count, f"it has a gap: {', '.join(missing)}{more} {'is' if count == 1 else 'are'} "
                                    "missing"))
    return min(problems, key=lambda p: p[0]) if problems else (1 << 62, "the indices are not one numbered run")


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
    best = min(range(len(readings)), key=lambda i: problems[i][0])  # ties: the preferred reading
    raise SplitArchiveError(f"{where}: {readings[best].show()}: {problems[best][1]}",
                            hint="upload the missing pieces beside the others (s3sync never pulls an archive "
                                 "with a hole in it), or point SOURCE at the pieces of one archive only")


# --- names: sidecars and the dataset name ----------------------------------------------

_SIDECAR_SUFFIX = re.compile(r"\.(md5|sha1|sha256|sha512)(sum)?\Z", re.IGNORECASE)
_LIST_FILE = re.compile(r"(md5|sha1|sha256|sha512)sums(\.txt)?\Z", re.IGNORECASE)
_ARCHIVE_SUFFIXES = frozenset({"tar", "gz", "tgz", "taz", "zst", "zstd", "tzst", "bz2", "tbz", "tbz2", "tb2",
                               "xz", "txz", "lz4", "lzma", "tlz"})
_NUMBERED_PIECE = re.compile(r"(?:[._-]?part[._-]?[0-9]+|[._-][0-9]+)\Z", re.IGNORECASE)
_GNU_DEFAULT = re.compile(r"x(?:[0-9]+|[a-z]+)\Z")


def is_sidecar(name: str) -> bool:
    """True if ``name`` is a checksum file, not a piece.

    Per-file sidecars: ``*.md5``, ``*.sha1``, ``*.sha256``, ``*.sha512`` and the
    ``*.md5sum``.. ``*.sha512sum`` spelling many release pages use (suffix in any case).
    List files: ``MD5SUMS``, ``SHA1SUMS``, ``SHA256SUMS``, ``SHA512SUMS`` and
    ``md5sums.txt``.. ``sha512sums.txt`` (any case). ``*.md5sums`` is not recognised: it
    is rare, and a piece misread as a sidecar would be silently left out of the archive.
    """
    return bool(_SIDECAR_SUFFIX.search(name) or _LIST_FILE.match(name))


def _sidecar_algorithm(name: str) -> str:
    """The algorithm a sidecar's name announces (``x.sha256``, ``MD5SUMS``), or ``""``."""
    m = _SIDECAR_SUFFIX.search(name) or _LIST_FILE.match(name)
    return m.group(1).lower() if m else ""


def _strip_piece_suffix(name: str) -> str:
    """``name`` less a piece suffix: ``.part01``, ``.001``, ``_01``, ``-1``, GNU split's
    letters after an archive suffix (``.tar.gz.aa``, ``.tar.gzaa``) or digits there
    (``.tar.gz00``); GNU split's default names (``xaa``, ``x00``) leave nothing."""
    if _GNU_DEFAULT.match(name):
        return ""
    m = _NUMBERED_PIECE.search(name)
    if m:
        return name[:m.start()]
    base, dot, last = name.rpartition(".")
    if dot and last.lower() not in _ARCHIVE_SUFFIXES:
        if last.isascii() and last.isalpha() and base.rpartition(".")[2].lower() in _ARCHIVE_SUFFIXES:
            return base  # coco.tar.zst.aa
        for i in range(2, len(last)):  # split's prefix had no trailing dot: data.tgzaa, data.tar.gz00
            head, rest = last[:i], last[i:]
            if head.lower() in _ARCHIVE_SUFFIXES and rest.isascii() and (rest.isdigit() or (len(rest) >= 2 and rest.islower())):
                return f"{base}.{head}"
    return name


def dataset_name(piece_name: str) -> str:
    """A dataset name from the first piece's name: less its piece suffix and its archive
    suffixes (``sbu.tar.gz.part01`` -> ``sbu``, ``images.tar.001`` -> ``images``,
    ``SBU.tar.gz`` -> ``SBU``, ``data.tgz`` -> ``data``, ``coco.tar.zst.aa`` -> ``coco``).

    Returns:
        A name that passes ``manifest.valid_name``, or ``""`` when nothing sensible
        remains (GNU split's default ``xaa``, a name with spaces): the caller then asks
        for ``--name``.
    """
    name = _strip_piece_suffix(piece_name.rsplit("/", 1)[-1])
    while True:
        base, dot, ext = name.rpartition(".")
        if not (dot and base and ext.lower() in _ARCHIVE_SUFFIXES):
            break
        name = base
    name = name.rstrip("._-")
    return name if valid_name(name) else ""


# --- sidecars: checksum lines ----------------------------------------------------------

_HEX_LENGTH = {"md5": 32, "sha1": 40, "sha224": 56, "sha256": 64, "sha384": 96, "sha512": 128}
_BY_LENGTH = {n: a for a, n in _HEX_LENGTH.items()}
_STRENGTH = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
"""Weakest first: among claims from equally near sidecars the strongest wins."""
_LABEL = {"md5": "MD5", "sha1": "SHA-1", "sha224": "SHA-224", "sha256": "SHA-256", "sha384": "SHA-384",
          "sha512": "SHA-512"}
# BSD tags: md5(1)/sha256(1) on FreeBSD and macOS, ``sha256sum --tag`` and ``shasum --tag``
# write ``SHA256 (name) = hex``; OpenSSL 3 ``openssl dgst`` writes ``SHA2-256(name)= hex``.
_TAGS = {"MD5": "md5", "SHA1": "sha1", "SHA-1": "sha1", "SHA224": "sha224", "SHA2-224": "sha224",
         "SHA256": "sha256", "SHA2-256": "sha256", "SHA384": "sha384", "SHA2-384": "sha384",
         "SHA512": "sha512", "SHA2-512": "sha512"}
_TAGGED = re.compile(r"(?P<tag>[A-Za-z][A-Za-z0-9-]*) ?\((?P<name>.*)\) ?= ?(?P<hex>[0-9A-Fa-f]+)\Z")
# GNU: ``hex  name`` (text) or ``hex *name`` (binary, coreutils md5sum(1)); ``md5 -r`` and
# ``sha256 -r`` (BSD) write ``hex name`` with one space.
_UNTAGGED = re.compile(r"(?P<hex>[0-9A-Fa-f]+)(?: [ *]| )(?P<name>.+)\Z")
_BARE = re.compile(r"[0-9A-Fa-f]+\Z")
_FORMS_HINT = ("s3sync reads GNU lines (md5sum, sha256sum: 'HASH  NAME', 'HASH *NAME'), BSD lines "
               "('MD5 (NAME) = HASH', 'md5 -r') and a bare HASH in a PIECE.md5 file: fix or remove the file")


def _bad(source: str, lineno: int, why: str) -> SplitArchiveError:
    return SplitArchiveError(f"{source} line {lineno}: {why}", hint=_FORMS_HINT)


def _unescape(name: str, source: str, lineno: int) -> str:
    """GNU coreutils escapes ``\\``, newline and CR in names as ``\\\\``, ``\\n``, ``\\r``
    and starts such a line with ``\\`` (coreutils manual, md5sum invocation)."""
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c == "\\":
            nxt = name[i + 1:i + 2]
            if nxt not in ("\\", "n", "r"):
                raise _bad(source, lineno, f"unknown escape \\{nxt} in a file name")
            out.append({"\\": "\\", "n": "\n", "r": "\r"}[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _entries(text: str, source: str) -> list[tuple[int, str | None, Claim]]:
    """``(line number, name or None for a bare digest, claim)`` for every checksum line.

    Blank lines and ``#`` comments are skipped; a BOM and CRLF line ends are accepted.
    The algorithm is the BSD tag's, else the one ``source``'s name announces, else the
    one the digest's length implies (32 md5, 40 sha1, 64 sha256, 128 sha512).

    Raises:
        SplitArchiveError: a line in none of the forms, an unknown tag, a digest whose
            length does not fit its algorithm, a bad escape.
    """
    named = _sidecar_algorithm(source)
    out: list[tuple[int, str | None, Claim]] = []
    for lineno, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        escaped = line.startswith("\\")
        body = line[1:] if escaped else line
        algorithm, name = named, None
        if _BARE.match(body.strip()):
            hexdigest = body.strip()
        elif (m := _TAGGED.match(body)) and m.group("tag").upper() in _TAGS:
            algorithm, name, hexdigest = _TAGS[m.group("tag").upper()], m.group("name"), m.group("hex")
        elif u := _UNTAGGED.match(body):
            name, hexdigest = u.group("name"), u.group("hex")
        elif m:
            raise _bad(source, lineno, f"unsupported checksum {m.group('tag')} (s3sync checks MD5, SHA-1, "
                                       "SHA-224, SHA-256, SHA-384 and SHA-512)")
        else:
            raise _bad(source, lineno, f"not a checksum line: {line[:60]!r}")
        if name is not None and escaped:
            name = _unescape(name, source, lineno)
        if not algorithm:
            algorithm = _BY_LENGTH.get(len(hexdigest), "")
            if not algorithm:
                raise _bad(source, lineno, f"a digest of {len(hexdigest)} hex digits is no MD5, SHA-1 or SHA-2")
        if len(hexdigest) != _HEX_LENGTH[algorithm]:
            raise _bad(source, lineno, f"a {_LABEL[algorithm]} digest has {_HEX_LENGTH[algorithm]} hex digits, "
                                       f"not {len(hexdigest)}")
        if name == "":
            raise _bad(source, lineno, "no file name after the digest")
        out.append((lineno, name, Claim(algorithm, hexdigest.lower(), source)))
    return out


def _basename(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _stronger(a: Claim, b: Claim) -> Claim:
    return a if _STRENGTH.index(a.algorithm) >= _STRENGTH.index(b.algorithm) else b


def parse_checksums(text: str, source: str) -> dict[str, Claim]:
    """The claims of a checksum list (``SHA256SUMS``, ``md5sums.txt``) or of a per-piece
    sidecar in named form, by file name.

    Names are kept as written (``./x``, ``dir/x``) and, when no other entry has the same
    last component, also indexed by it (``x``). A name listed twice with the same
    algorithm must have the same digest; with different algorithms the stronger is kept.

    Args:
        text: the file's contents, decoded.
        source: the file's name (messages, ``Claim.source``, and its algorithm if the
            lines carry no tag: ``x.sha256``, ``MD5SUMS``).

    Raises:
        SplitArchiveError: a malformed line (named with its line number), a bare digest
            with no file name, or one name with two different digests.
    """
    out: dict[str, Claim] = {}
    for lineno, name, claim in _entries(text, source):
        if name is None:
            raise _bad(source, lineno, "a digest without a file name (only a PIECE.md5 sidecar may hold one)")
        old = out.get(name)
        if old is not None and old.algorithm == claim.algorithm and old.digest != claim.digest:
            raise _bad(source, lineno, f"{name} is listed again with another {_LABEL[claim.algorithm]} digest")
        out[name] = claim if old is None else _stronger(old, claim)
    by_base: dict[str, set[Claim]] = {}
    for name, claim in out.items():
        by_base.setdefault(_basename(name), set()).add(claim)
    for base, claims in by_base.items():
        if base not in out and len(claims) == 1:
            out[base] = claims.pop()
    return out


def parse_sidecar(text: str, piece_name: str, source: str) -> Claim | None:
    """The claim of a per-piece sidecar (``PIECE.md5``, ``PIECE.sha256``) for its piece.

    Accepts a bare digest (``d41d8cd9...`` alone on a line) and every form
    ``parse_checksums`` reads; named lines must name the piece (``x``, ``./x`` or
    ``dir/x``); lines for other files beside it are ignored.

    Returns:
        The strongest claim for the piece, or None if the sidecar holds no checksum at
        all (empty, or only comments).

    Raises:
        SplitArchiveError: a malformed line, a sidecar whose lines all name other files,
            or two different digests of one algorithm.
    """
    entries = _entries(text, source)
    if not entries:
        return None
    # "-" is standard input: `md5sum < PIECE > PIECE.md5` writes "HASH  -".
    mine = [(lineno, claim) for lineno, name, claim in entries
            if name is None or name == "-" or _basename(name) == piece_name]
    if not mine:
        raise SplitArchiveError(f"{source} is about {entries[0][1]}, not the piece {piece_name}",
                                hint="a PIECE.md5 sidecar must hold the digest of PIECE: fix or remove it")
    best = mine[0][1]
    for lineno, claim in mine[1:]:
        if claim.algorithm == best.algorithm and claim.digest != best.digest:
            raise _bad(source, lineno, f"a second, different {_LABEL[claim.algorithm]} digest for {piece_name}")
        best = _stronger(best, claim)
    return best


def claims_for(piece_names: list[str], sidecars: dict[str, str]) -> dict[str, Claim]:
    """The claim each piece's sidecars make, for the pieces that have one.

    A sidecar named after a piece (``PIECE.md5``, ``PIECE.sha256sum``, any case) speaks
    for that piece first; list files (``MD5SUMS``...) and other sidecars that name pieces
    come next. Among sidecars of one rank the strongest algorithm wins (SHA-512 > SHA-256
    > SHA-1 > MD5). A bare digest in a sidecar named after no piece (``data.tar.gz.md5``
    beside ``data.tar.gz.001``...) is about the unsplit archive and is ignored here.

    Args:
        piece_names: the pieces (names as ``order_pieces`` took them).
        sidecars: sidecar name -> its text.

    Raises:
        SplitArchiveError: a malformed sidecar; an empty one named after a piece (a
            checksum file that claims nothing must not quietly leave its piece to weaker
            evidence); two sidecars that give one piece different digests of one
            algorithm (both are named).
    """
    pieces = set(piece_names)
    own: dict[str, list[Claim]] = {}
    listed: dict[str, list[Claim]] = {}
    for sidecar in sorted(sidecars, key=natural_key):
        text = sidecars[sidecar]
        m = _SIDECAR_SUFFIX.search(sidecar)
        piece = sidecar[:m.start()] if m else None
        if piece in pieces:
            claim = parse_sidecar(text, piece, sidecar)
            if claim is None:
                raise SplitArchiveError(f"{sidecar} is empty: it claims no digest for {piece}",
                                        hint="remove the empty sidecar or write the piece's digest into it")
            own.setdefault(piece, []).append(claim)
            continue
        if not _LIST_FILE.match(sidecar) and all(n is None for _, n, _ in _entries(text, sidecar)):
            continue  # a bare digest of a file that is no piece (the unsplit archive)
        table = parse_checksums(text, sidecar)
        for p in pieces:
            if p in table:
                listed.setdefault(p, []).append(table[p])
    out: dict[str, Claim] = {}
    for p in piece_names:
        claims = own.get(p, []) + listed.get(p, [])
        for i, a in enumerate(claims):
            for b in claims[i + 1:]:
                if a.algorithm == b.algorithm and a.digest != b.digest:
                    raise SplitArchiveError(
                        f"{a.source} and {b.source} disagree about {p}: {_LABEL[a.algorithm]} {a.digest} "
                        f"vs {b.digest}", hint="one of the checksum files is stale: fix or remove it")
        rank = own.get(p) or listed.get(p)
        if rank:
            best = rank[0]
            for c in rank[1:]:
                best = _stronger(best, c)
            out[p] = best
    return out


# --- S3 ETags --------------------------------------------------------------------------

_MAX_UPLOAD_PARTS = 10_000
"""S3's limit on multipart upload parts (S3 API reference, UploadPart)."""
_ETAG_MD5 = re.compile(r"[0-9a-fA-F]{32}\Z")
_ETAG_MULTIPART = re.compile(r"([0-9a-fA-F]{32})-([1-9][0-9]{0,4})\Z")


def _unquote(etag: str) -> str | None:
    """The ETag's opaque value without quotes; None for a weak ETag (``W/"..."``, RFC 9110
    section 8.8.3), which promises equivalent content, not equal bytes."""
    etag = etag.strip()
    if etag.startswith("W/"):
        return None
    if len(etag) >= 2 and etag[0] == etag[-1] == '"':
        etag = etag[1:-1]
    return etag


def etag_md5(etag: str) -> str | None:
    """The object's MD5 (lower-case hex) if ``etag`` is a plain 32-hex-digit one, else None.

    S3 documents that an ETag that is not an MD5 of the object "will contain one or more
    nonhexadecimal characters and/or will consist of less than 32 or more than 32
    hexadecimal digits" (S3 API reference, Object, ETag). The converse does not hold for
    SSE-C and SSE-KMS objects, whose 32-hex ETags are not their MD5: a caller that knows
    the encryption must not use this.
    """
    value = _unquote(etag)
    return value.lower() if value is not None and _ETAG_MD5.match(value) else None


def multipart_etag_parts(etag: str) -> int | None:
    """N for a multipart upload ETag ``"HEX32-N"`` (1 <= N <= 10,000), else None."""
    value = _unquote(etag)
    m = _ETAG_MULTIPART.match(value) if value is not None else None
    if m is None or int(m.group(2)) > _MAX_UPLOAD_PARTS:
        return None
    return int(m.group(2))


def multipart_etag(part_md5s: Iterable[bytes]) -> str:
    """The ETag S3 gives an object completed from multipart upload parts with these
    binary MD5s: ``md5(b"".join(md5s)).hexdigest() + "-N"``.

    Not an API promise: AWS calls the ETag opaque (S3 API reference,
    CompleteMultipartUpload), but S3 has computed it this way since multipart upload
    appeared in 2010 (an AWS engineer's description, quoted on the s3tools mailing list
    and in https://stackoverflow.com/questions/6591047), and s3cmd, rclone and boto users
    rely on it. Other servers may not (MinIO changed its multipart ETags in 2019), so a
    mismatch here is reported as such, never silently accepted.

    Args:
        part_md5s: each multipart upload part's MD5 digest (16 bytes), in part order.

    Raises:
        ValueError: no part, or a digest that is not 16 bytes (a caller's bug).
    """
    digests = list(part_md5s)
    if not digests or any(len(d) != 16 for d in digests):
        raise ValueError("multipart_etag needs one or more 16-byte MD5 digests")
    return hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest() + f"-{len(digests)}"


def choose_evidence(claim: Claim | None, etag: str, upload_part_size: int | None, *,
                    size: int | None = None) -> Evidence:
    """The strongest evidence for one piece: a sidecar's claim, else a plain MD5 ETag,
    else a multipart ETag (recomputable only with the upload part size), else none.

    Args:
        claim: what the piece's sidecars claim (``claims_for``), or None.
        etag: the ETag as the server sent it, ``""`` if none.
        upload_part_size: bytes per multipart upload part (from ``HEAD ?partNumber=1``),
            None or 0 if unknown.
        size: the piece's bytes, if known: a multipart ETag whose part count cannot come
            from ``upload_part_size`` is not used.

    Returns:
        The ``Evidence``; for kind ``none`` its ``source`` says why, as a phrase.
    """
    if claim is not None:
        return Evidence("sidecar", claim.algorithm, claim.digest, claim.source)
    md5 = etag_md5(etag)
    if md5 is not None:
        return Evidence("etag-md5", "md5", md5, "ETag")
    parts = multipart_etag_parts(etag)
    if parts is not None:
        if not upload_part_size or upload_part_size < 0:
            return Evidence("none", source=f"no sidecar, multipart ETag ({parts} parts) and the server does not "
                                           "give the upload part size")
        if size is not None and max(1, -(-size // upload_part_size)) != parts:
            return Evidence("none", source=f"no sidecar, multipart ETag says {parts} parts but {_bytes(size)} in "
                                           f"parts of {_bytes(upload_part_size)} make "
                                           f"{max(1, -(-size // upload_part_size))}")
        return Evidence("etag-multipart", "md5", _unquote(etag).lower(), "ETag", upload_part_size)
    if not etag.strip():
        return Evidence("none", source="no sidecar, no ETag")
    if _unquote(etag) is None:
        return Evidence("none", source="no sidecar, ETag is weak (W/)")
    return Evidence("none", source="no sidecar, ETag is not an MD5")


def _bytes(n: int) -> str:
    """``8 MiB`` for exact binary multiples, else ``N bytes``."""
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n and n % unit == 0:
            return f"{n // unit} {name}"
    return f"{n} bytes"


def describe(evidence: Evidence) -> str:
    """A short phrase for the per-piece ``-v`` line: ``MD5 from sbu.tar.part01.md5``,
    ``S3 ETag (multipart, 12 parts of 8 MiB, recomputed)``, ``not verified: no sidecar,
    ETag is not an MD5``.

    Raises:
        ValueError: an unknown ``kind`` (a caller's bug).
    """
    if evidence.kind == "sidecar":
        return f"{_LABEL.get(evidence.algorithm, evidence.algorithm)} from {evidence.source}"
    if evidence.kind == "etag-md5":
        return "S3 ETag (the object's MD5)"
    if evidence.kind == "etag-multipart":
        parts = int(evidence.expected.rpartition("-")[2])
        return (f"S3 ETag (multipart, {parts} part{'s' if parts != 1 else ''} of "
                f"{_bytes(evidence.upload_part_size)}, recomputed)")
    if evidence.kind == "none":
        return f"not verified: {evidence.source or 'no sidecar and no usable ETag'}"
    raise ValueError(f"unknown evidence kind {evidence.kind!r}")
