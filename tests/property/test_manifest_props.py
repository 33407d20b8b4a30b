"""Manifests round-trip through JSON, and ``Manifest.from_json`` rejects any damage with ManifestError.

``from_json`` reads untrusted bytes: whatever they are, it returns a valid Manifest or raises
``ManifestError``, never another exception (a KeyError or RecursionError would reach the
user as an "internal error").
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3sync import hashing, planning
from s3sync.errors import ManifestError
from s3sync.manifest import Manifest, PartEntry

digests = st.binary(min_size=1, max_size=8).map(hashing.digest)
names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,20}\Z")
generations = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,30}\Z")
# Text a manifest can hold: UTF-8, so no lone surrogates (``from_json`` refuses them, see
# test_a_lone_surrogate_escape_is_refused).
etags = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    """Manifests that obey every rule of ``from_json``, cross-field ones included: whole tar
    blocks, room for the members' headers, their data and the end-of-archive marker, files
    among the members, and equal digests wherever two cover the same bytes."""
    chunk_size = draw(st.integers(min_value=planning.MIN_CHUNK_SIZE, max_value=planning.MAX_CHUNK_SIZE))
    gen = draw(generations)
    blocks = draw(st.lists(st.integers(min_value=0, max_value=chunk_size * 5 // 512), min_size=1, max_size=5))
    sizes = [b * 512 for b in blocks]
    if sum(sizes) < 1024:
        sizes[-1] += 1024  # a tar stream holds at least its end-of-archive marker
    parts = []
    for i, size in enumerate(sizes):
        count = planning.chunk_count(size, chunk_size)
        chunks = tuple(draw(digests) for _ in range(count))
        digest = chunks[0] if count == 1 else hashing.digest(b"") if size == 0 else draw(digests)
        parts.append(PartEntry(f"{gen}/part-{i:05d}.tar", size, draw(etags), digest, chunks))
    stream_size = sum(sizes)
    full = [p for p in parts if p.size]
    stream_digest = full[0].digest if len(full) == 1 else draw(digests)
    members = draw(st.integers(min_value=0, max_value=(stream_size - 1024) // 512))
    extracted_size = draw(st.integers(min_value=0, max_value=stream_size - 1024 - members * 512)) if members else 0
    files = draw(st.integers(min_value=1 if extracted_size else 0, max_value=members))
    return Manifest(
        name=draw(names), generation=gen, created=draw(st.text(st.characters(blacklist_categories=("Cc", "Cs")),
                                                                    min_size=1, max_size=30)),
        chunk_size=chunk_size, stream_size=stream_size, stream_digest=stream_digest,
        files=files, extracted_size=extracted_size, members=members, parts=tuple(parts),
    )


@given(manifests())
def test_manifest_round_trips(m: Manifest) -> None:
    data = m.to_json()
    assert Manifest.from_json(data) == m
    assert Manifest.from_json(data).to_json() == data  # the serialisation is stable


def _doc(m: Manifest) -> dict:
    return json.loads(m.to_json())


def _parse(doc: object) -> Manifest:
    return Manifest.from_json(json.dumps(doc).encode())


# Targeted corruptions: (description, function doc -> None mutating it).
def _set(path: tuple, value: object):
    def mutate(doc: dict) -> None:
        target = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    return mutate


def _delete(path: tuple):
    def mutate(doc: dict) -> None:
        target = doc
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
    return mutate


BAD_KEYS = ["../x", "/abs", "/g1/part-00000.tar", "g1/../part-00000.tar", "g1/part-00000.tar/..",
            "g1/part-1.tar", "g1/part-00001.tar", "other/part-00000.tar", "g1\\part-00000.tar",
            "g1/part-00000.tar.bak", "", "g1//part-00000.tar", "./g1/part-00000.tar"]

MUTATIONS = [
    ("negative stream size", _set(("stream", "size"), -1)),
    ("negative part size", _set(("parts", 0, "size"), -1)),
    ("negative files", _set(("dataset", "files"), -5)),
    ("negative extracted size", _set(("dataset", "extracted_size"), -5)),
    ("negative members", _set(("dataset", "members"), -1)),
    ("float size", _set(("parts", 0, "size"), 1.5)),
    ("string size", _set(("parts", 0, "size"), "10")),
    ("bool size", _set(("parts", 0, "size"), True)),
    ("null size", _set(("parts", 0, "size"), None)),
    ("chunk size zero", _set(("chunk_size",), 0)),
    ("chunk size too small", _set(("chunk_size",), planning.MIN_CHUNK_SIZE - 1)),
    ("chunk size too large", _set(("chunk_size",), planning.MAX_CHUNK_SIZE + 1)),
    ("one chunk too many", lambda d: d["parts"][0]["chunks"].append("0" * 32)),
    ("one chunk too few", lambda d: d["parts"][0]["chunks"].pop() if d["parts"][0]["chunks"] else d["parts"][0]["chunks"].append("0" * 32)),
    ("bad chunk digest", _set(("parts", 0, "chunks"), ["XYZ"])),
    ("chunks not a list", _set(("parts", 0, "chunks"), "0" * 32)),
    ("upper-case digest", _set(("stream", "digest"), "A" * 32)),
    ("short digest", _set(("parts", 0, "digest"), "0" * 31)),
    ("unknown version", _set(("version",), 3)),
    ("a version 1 document labelled version 2", _set(("version",), 2)),
    ("version zero", _set(("version",), 0)),
    ("version string", _set(("version",), "1")),
    ("no version", _delete(("version",))),
    ("unknown format", _set(("format",), "tar-manifest")),
    ("unknown hash", _set(("hash",), "sha256")),
    ("no parts", _set(("parts",), [])),
    ("parts not a list", _set(("parts",), {})),
    ("part not an object", _set(("parts", 0), "g1/part-00000.tar")),
    ("empty etag", _set(("parts", 0, "etag"), "")),
    ("stream size mismatch", lambda d: d["stream"].__setitem__("size", d["stream"]["size"] + 1)),
    ("extracted > stream", lambda d: d["dataset"].__setitem__("extracted_size", d["stream"]["size"] + 1)),
    ("stream not an object", _set(("stream",), 5)),
    ("dataset missing", _delete(("dataset",))),
    ("name with slash", _set(("name",), "a/b")),
    ("name dot-dot", _set(("name",), "..")),
    ("name empty", _set(("name",), "")),
    ("name absolute", _set(("name",), "/etc")),
    ("generation with slash", _set(("generation",), "../g")),
    ("created missing", _delete(("created",))),
    # Cross-field consistency (docs/manifest.md section 6, rule 10).
    ("stream not whole tar blocks", lambda d: (d["parts"][1].__setitem__("size", 10000),
                                               d["stream"].__setitem__("size", d["stream"]["size"] - 240))),
    ("no room for the end-of-archive marker", lambda d: d.update(
        parts=[{"key": "g1/part-00000.tar", "size": 512, "etag": "e", "digest": "1" * 32, "chunks": ["1" * 32]}],
        stream={"size": 512, "digest": "1" * 32}, dataset={"files": 0, "extracted_size": 0, "members": 0})),
    ("more files than members", lambda d: d["dataset"].__setitem__("files", 6)),
    ("file data without files", lambda d: d["dataset"].__setitem__("files", 0)),
    ("more members than headers fit", lambda d: d["dataset"].__setitem__("members", 10**6)),
    ("more file data than fits beside the headers",
     lambda d: d["dataset"].__setitem__("extracted_size", d["stream"]["size"] - 1024)),
    ("one-chunk part digest differs from its chunk's", lambda d: d["parts"][1].__setitem__("digest", "4" * 32)),
    ("empty part with a digest of some bytes", lambda d: d["parts"].append(
        {"key": "g1/part-00002.tar", "size": 0, "etag": "e", "digest": "6" * 32, "chunks": []})),
    ("last part lost, stream.size fixed up", lambda d: (d["parts"].pop(),
                                                        d["stream"].__setitem__("size", d["parts"][0]["size"]))),
] + [(f"bad key {key!r}", _set(("parts", 0, "key"), key)) for key in BAD_KEYS]


@pytest.mark.parametrize("mutate", [m for _, m in MUTATIONS], ids=[d for d, _ in MUTATIONS])
def test_from_json_rejects_targeted_damage(mutate) -> None:
    m = Manifest(
        name="ds", generation="g1", created="2024-01-01T00:00:00Z",
        chunk_size=planning.MIN_CHUNK_SIZE, stream_size=planning.MIN_CHUNK_SIZE * 2 + 10240,
        stream_digest="1" * 32, files=3, extracted_size=10, members=5,
        parts=(PartEntry("g1/part-00000.tar", planning.MIN_CHUNK_SIZE * 2, '"e0"', "2" * 32, ("3" * 32,) * 2),
               PartEntry("g1/part-00001.tar", 10240, '"e1"', "5" * 32, ("5" * 32,))),
    )
    doc = _doc(m)
    assert _parse(doc) == m  # the undamaged document is valid
    mutate(doc)
    with pytest.raises(ManifestError):
        _parse(doc)


@pytest.mark.parametrize("data", [
    b"", b"{", b"[]", b"null", b"42", b'"manifest"', b"\xff\xfe\x00", b"not json at all",
    b'{"format": "s3sync-manifest", "version": 1', "{\"a\": \"\ud800\"}".encode("utf-8", "surrogatepass"),
], ids=repr)
def test_from_json_rejects_non_manifests(data: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_json(data)


@given(manifests(), st.data())
def test_from_json_rejects_truncation(m: Manifest, data: st.DataObject) -> None:
    full = m.to_json().rstrip()
    cut = data.draw(st.integers(min_value=0, max_value=len(full) - 1), label="cut")
    with pytest.raises(ManifestError):
        Manifest.from_json(full[:cut])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


@given(manifests(), st.data())
def test_from_json_fuzzed_documents_raise_only_manifest_error(m: Manifest, data: st.DataObject) -> None:
    doc = _doc(m)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="mutations")):
        paths = [p for p in _paths(doc) if p]
        path = data.draw(st.sampled_from(paths), label="path")
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(["replace", "delete", "insert"]), label="action")
        if action == "replace":
            parent[path[-1]] = data.draw(JSON_VALUES, label="value")
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8), label="new key")] = data.draw(JSON_VALUES, label="value")
        else:
            parent.insert(path[-1], data.draw(JSON_VALUES, label="value"))
    try:
        parsed = Manifest.from_json(json.dumps(doc).encode())
    except ManifestError:
        return
    # Accepted: then it must be self-consistent and safe to plan from.
    assert sum(p.size for p in parsed.parts) == parsed.stream_size
    for i, p in enumerate(parsed.parts):
        assert p.key == f"{parsed.generation}/part-{i:05d}.tar"
        assert len(p.chunks) == planning.chunk_count(p.size, parsed.chunk_size)
    assert planning.plan_pull(parsed) is not None


@given(manifests(), st.data())
def test_from_json_fuzzed_bytes_raise_only_manifest_error(m: Manifest, data: st.DataObject) -> None:
    raw = bytearray(m.to_json())
    for _ in range(data.draw(st.integers(min_value=1, max_value=6), label="edits")):
        pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="pos")
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]), label="op")
        if op == "flip":
            raw[pos] = data.draw(st.integers(min_value=0, max_value=255), label="byte")
        elif op == "delete":
            del raw[pos]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4), label="bytes")
    try:
        Manifest.from_json(bytes(raw))
    except ManifestError:
        pass


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"a":' * 100_000], ids=["lists", "objects"])
def test_from_json_rejects_deep_nesting_with_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_json(data)


@pytest.mark.parametrize("field,value", [
    (("parts", 0, "key"), "g1/part-00000.tar\n"),
    (("name",), "ds\n"),
])
def test_from_json_rejects_trailing_newline_in_names(field: tuple, value: str) -> None:
    doc = {"format": "s3sync-manifest", "version": 1, "name": "ds", "generation": "g1",
           "created": "x", "hash": "xxh3-128", "chunk_size": planning.MIN_CHUNK_SIZE,
           "stream": {"size": 10240, "digest": "3" * 32},
           "dataset": {"files": 1, "extracted_size": 0, "members": 1},
           "parts": [{"key": "g1/part-00000.tar", "size": 10240, "etag": "e", "digest": "3" * 32,
                      "chunks": ["3" * 32]}]}
    _parse(doc)
    _set(field, value)(doc)
    with pytest.raises(ManifestError):
        _parse(doc)


def test_from_json_rejects_non_ascii_digits_in_part_keys() -> None:
    doc = {"format": "s3sync-manifest", "version": 1, "name": "ds", "generation": "g1",
           "created": "x", "hash": "xxh3-128", "chunk_size": planning.MIN_CHUNK_SIZE,
           "stream": {"size": 10240, "digest": "3" * 32},
           "dataset": {"files": 1, "extracted_size": 0, "members": 1},
           "parts": [{"key": "g1/part-\u0660\u0660\u0660\u0660\u0660.tar", "size": 10240, "etag": "e",
                      "digest": "3" * 32, "chunks": ["3" * 32]}]}
    with pytest.raises(ManifestError):
        _parse(doc)


@pytest.mark.parametrize("version", [True, 1.0], ids=["true", "1.0"])
def test_from_json_rejects_non_integer_version(version: object) -> None:
    doc = {"format": "s3sync-manifest", "version": version, "name": "ds", "generation": "g1",
           "created": "x", "hash": "xxh3-128", "chunk_size": planning.MIN_CHUNK_SIZE,
           "stream": {"size": 10240, "digest": "3" * 32},
           "dataset": {"files": 1, "extracted_size": 0, "members": 1},
           "parts": [{"key": "g1/part-00000.tar", "size": 10240, "etag": "e", "digest": "3" * 32,
                      "chunks": ["3" * 32]}]}
    with pytest.raises(ManifestError):
        _parse(doc)


# --------------------------------------------------------------------------- what publish writes

tree_files = st.dictionaries(
    st.tuples(st.sampled_from(["", "a/", "a/b/", "c/"]), st.from_regex(r"\A[a-z0-9]{1,6}\Z")).map("".join),
    st.integers(min_value=0, max_value=150_000), max_size=8)


@given(tree_files, st.sets(st.sampled_from(["e", "a/e", "c/d/e"]), max_size=2), st.booleans(),
       st.sampled_from([64 * 1024, 96 * 1024 + 512, 128 * 1024, 1 << 20]), st.integers(min_value=1, max_value=4))
def test_every_manifest_publish_writes_passes_validation(files, empty_dirs, link, chunk_size, part_chunks) -> None:
    """The cross-field rules of ``from_json`` never refuse what a publish writes: the tar
    stream and its parts are made by ``archive.write_tar`` and ``partwriter.PartWriter`` exactly
    as ``publish.publish`` makes them (without the upload), and the manifest built the same
    way. Cuts at member boundaries and hard cuts inside large members both happen."""
    import tempfile
    import threading
    from pathlib import Path

    from s3sync import archive
    from s3sync.partwriter import PartWriter
    from s3sync.progress import NullProgress

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "src"
        root.mkdir()
        for rel, size in files.items():
            try:  # a name drawn both as a file and as a directory: the first one wins
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(bytes([len(rel)]) * size)
            except OSError:
                pass
        for rel in empty_dirs:
            try:
                (root / rel).mkdir(parents=True, exist_ok=True)
            except OSError:
                pass
        if link:
            (root / "link").symlink_to("a" if (root / "a").exists() else "nowhere")
        parts: dict[int, tuple[int, str, list[str]]] = {}
        writer = PartWriter(chunk_size * part_chunks, chunk_size,
                            start_part=lambda i, pipe: threading.Thread(target=pipe.read, daemon=True).start(),
                            end_part=lambda i, size, dig, chunks: parts.__setitem__(i, (size, dig, chunks)),
                            failed=threading.Event(), progress=NullProgress())
        stats = archive.write_tar(archive.scan_tree(root), writer, writer.before_member)
        writer.close()
    m = Manifest(name="ds", generation="g1", created="2026-01-01T00:00:00Z", chunk_size=chunk_size,
                 stream_size=writer.tell(), stream_digest=writer.stream_hasher.hexdigest(), files=stats.files,
                 extracted_size=stats.extracted_size, members=stats.members,
                 parts=tuple(PartEntry(f"g1/part-{i:05d}.tar", size, '"etag"', dig, tuple(chunks))
                             for i, (size, dig, chunks) in sorted(parts.items())))
    assert Manifest.from_json(m.to_json()) == m


def test_a_lone_surrogate_escape_is_refused() -> None:
    """JSON can spell a lone UTF-16 surrogate (\\ud800) that no UTF-8 text holds: refused when
    read, not a traceback when the manifest is written again (e.g. into DIR/.s3sync)."""
    good = json.loads(Manifest(name="ds", generation="g1", created="2024-01-01T00:00:00Z", chunk_size=planning.MIN_CHUNK_SIZE,
                               stream_size=1024, stream_digest=hashing.digest(b"s"), files=0, extracted_size=0,
                               members=0, parts=(PartEntry("g1/part-00000.tar", 1024, '"e"', hashing.digest(b"p"),
                                                           (hashing.digest(b"c"),)),)).to_json())
    good["created"] = "\ud800"
    with pytest.raises(ManifestError, match="surrogate"):
        Manifest.from_json(json.dumps(good).encode())
