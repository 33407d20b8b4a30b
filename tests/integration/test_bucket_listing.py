"""``catalog.discover`` and ``catalog.presence`` on moto and rclone: datasets one or two levels
down, damaged or foreign manifests, history copies, and per-name publication state."""

from __future__ import annotations

import json
from pathlib import Path

from s3sync import catalog
from s3sync.config import Location, TransferSettings
from s3sync.errors import CredentialsError
from s3sync.publish import publish
from s3sync.stores.s3 import S3Store

SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=128 * 1024, window=8)


def tree(root: Path, seed: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "x.bin").write_bytes(bytes([seed]) * 3000)
    return root


def test_discover_finds_datasets_one_and_two_levels_down(store: S3Store, tmp_path: Path) -> None:
    b = store.bucket
    for i, prefix in enumerate(("a", "group/b", "group/c", "deep/er/d")):
        publish(tree(tmp_path / str(i) / prefix.rsplit("/", 1)[-1], i), prefix.rsplit("/", 1)[-1],
                Location(b, prefix), store, SMALL)
    publish(tree(tmp_path / "again" / "a", 9), "a", Location(b, "a"), store, SMALL)  # a history copy under a/
    store.put("group/notes/manifest.json", json.dumps({"mine": True}).encode())  # not ours: ignored
    store.put("broken/manifest.json", json.dumps({"format": "s3sync-manifest", "version": 1}).encode())
    store.put("loose.txt", b"x")

    found = catalog.discover(store, Location(b, ""))
    got = {d.location.url(): (d.manifest.name if d.manifest else None, bool(d.error)) for d in found.datasets}
    assert got == {f"s3://{b}/a": ("a", False), f"s3://{b}/group/b": ("b", False),
                   f"s3://{b}/group/c": ("c", False), f"s3://{b}/broken": (None, True)}
    assert found.complete
    under = catalog.discover(store, Location(b, "group"))
    assert sorted(d.location.prefix for d in under.datasets) == ["group/b", "group/c"]
    assert [d.location.prefix for d in catalog.discover(store, Location(b, "deep")).datasets] == ["deep/er/d"]


def test_presence_says_published_not_published_or_unknown(store: S3Store, tmp_path: Path) -> None:
    b = store.bucket
    publish(tree(tmp_path / "sbu", 1), "sbu", Location(b, "sbu"), store, SMALL)
    made: list[str] = []

    def factory(bucket: str) -> S3Store:
        made.append(bucket)
        return S3Store(store.client, bucket, concurrency=2)

    got = catalog.presence([Location(b, "sbu"), Location(b, "mscoco"), None], factory)
    assert [p.state for p in got] == [catalog.PUBLISHED, catalog.NOT_PUBLISHED, catalog.UNKNOWN]
    assert made == [b]  # one store per bucket

    class NoCredentials:
        bucket = b

        def head(self, key: str) -> None:
            raise CredentialsError("no AWS credentials found")

        def close(self) -> None:
            pass

    got = catalog.presence([Location(b, "sbu")], lambda bucket: NoCredentials())
    assert got[0].state == catalog.UNKNOWN and "credentials" in got[0].detail
