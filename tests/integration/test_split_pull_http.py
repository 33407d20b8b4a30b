"""Pull of an archive's pieces from http(s) URLs (issue 11): a loopback web server with Range
(pieces fetched in parallel chunks) and one without (each piece in one stream); sidecars found
beside the pieces; GNU tar's extraction of the same archive is the reference."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from s3sync.config import TransferSettings
from s3sync.errors import PieceDigestError
from s3sync.sources import from_urls
from s3sync.splitpull import pull_split
from s3sync.stores.http import HttpStore

KiB = 1024
SETTINGS = TransferSettings(concurrency=4, chunk_size=64 * KiB, window=8, retries=3, backoff_base_s=0.01,
                            backoff_max_s=0.05)


def _tree(root: Path) -> Path:
    for i in range(30):
        p = root / f"d{i % 3}" / f"f{i:02d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes((i * 7 + j) % 251 for j in range(3000 * (i + 1))))
    return root


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*")) if ".s3sync" not in p.parts}


def _pieces(tmp: Path, *, compress: bool, sidecar: str) -> tuple[Path, Path, list[str]]:
    src = _tree(tmp / "src")
    www = tmp / "www"
    www.mkdir()
    archive = tmp / "data.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(src), "."], check=True)
    if compress:
        subprocess.run(["gzip", "-f", str(archive)], check=True)
        archive = archive.with_suffix(".tar.gz")
    subprocess.run(["split", "-n", "4", "-d", "-a", "3", str(archive), str(www / (archive.name + "."))], check=True)
    names = sorted(p.name for p in www.iterdir())
    if sidecar == "MD5SUMS":
        (www / "MD5SUMS").write_bytes(subprocess.run(["md5sum", *names], cwd=www, check=True,
                                                     capture_output=True).stdout)
    elif sidecar == "sha256":
        for n in names:
            (www / (n + ".sha256")).write_bytes(subprocess.run(["sha256sum", n], cwd=www, check=True,
                                                               capture_output=True).stdout)
    return archive, www, names


def _ref(archive: Path, dest: Path) -> Path:
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(dest)], check=True)
    return dest


@pytest.mark.parametrize("ranges", [True, False], ids=["ranges", "no-ranges"])
@pytest.mark.parametrize("compress,sidecar", [(False, "MD5SUMS"), (True, "sha256")])
def test_pieces_at_urls_pull_like_gnu_tar(tmp_path, http_server, ranges, compress, sidecar):
    archive, www, names = _pieces(tmp_path, compress=compress, sidecar=sidecar)
    server = http_server(www, ranges=ranges)
    store = HttpStore(SETTINGS)
    try:
        urls = [server.url_of(n) for n in reversed(names)]  # any order: put in natural order by name
        split = from_urls(store, urls, None)
        assert split.name == "data" and split.ranges is ranges
        assert [p.name for p in split.pieces] == names
        assert {p.evidence.kind for p in split.pieces} == {"sidecar"}
        result = pull_split(split, tmp_path / "dest", store, SETTINGS)
    finally:
        store.close()
    assert result.codec == ("gzip" if compress else "none")
    assert _snapshot(result.dest) == _snapshot(_ref(archive, tmp_path / "ref"))
    if not ranges:  # one stream per piece
        assert all(len(server.requests_for(n)) <= 2 for n in names[1:])
    assert result.bytes_received >= split.size


def test_a_piece_changed_on_the_mirror_is_refused(tmp_path, http_server):
    archive, www, names = _pieces(tmp_path, compress=False, sidecar="MD5SUMS")
    body = bytearray((www / names[1]).read_bytes())
    body[100] ^= 0xFF
    (www / names[1]).write_bytes(bytes(body))
    server = http_server(www)
    store = HttpStore(SETTINGS)
    try:
        split = from_urls(store, [server.url_of(n) for n in names], "mirror")
        with pytest.raises(PieceDigestError, match=f"piece 2 .*{names[1]}.*MD5SUMS"):
            pull_split(split, tmp_path / "dest", store, SETTINGS)
    finally:
        store.close()
    assert not (tmp_path / "dest" / "mirror").exists()


def test_no_sidecar_pulls_unverified(tmp_path, http_server):
    archive, www, names = _pieces(tmp_path, compress=False, sidecar="")
    server = http_server(www)
    store = HttpStore(SETTINGS)
    try:
        split = from_urls(store, [server.url_of(n) for n in names], None)
        assert {p.evidence.kind for p in split.pieces} == {"none"}
        result = pull_split(split, tmp_path / "dest", store, SETTINGS)
    finally:
        store.close()
    assert _snapshot(result.dest) == _snapshot(_ref(archive, tmp_path / "ref"))
