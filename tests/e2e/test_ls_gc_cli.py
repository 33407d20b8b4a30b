"""``s3sync ls s3://BUCKET[/PREFIX]``, ``ls`` of the catalog with publication state,
``ls SOURCE --generations`` and ``gc`` through the installed command (issue 13 section 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SMALL = ["--part-size", "128KiB", "--chunk-size", "64KiB"]


def tree(root: Path, seed: int, captions: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.bin").write_bytes(bytes([seed]) * 5000)
    (root / "seed.txt").write_text(str(seed))
    if captions:
        (root / "images").mkdir(exist_ok=True)
        (root / "images" / "1.jpg").write_bytes(b"\xff\xd8" + bytes(100) + b"\xff\xd9")
        (root / "captions.json").write_text(json.dumps({
            "images": [{"id": 1, "file_name": "images/1.jpg"}],
            "annotations": [{"id": 1, "image_id": 1, "caption": "a test"}]}))
    return root


def test_ls_of_a_bucket_lists_its_datasets(run, s3_server, bucket, tmp_path: Path) -> None:
    ep = ["--endpoint-url", s3_server.endpoint_url]
    for url, seed, caps in ((f"s3://{bucket}/one", 1, True), (f"s3://{bucket}/group/two", 2, False)):
        r = run("publish", tree(tmp_path / f"s{seed}" / url.rsplit("/", 1)[1], seed, caps), "--to", url, *ep, *SMALL,
                "-q")
        assert r.code == 0, r.describe()
    again = run("publish", tree(tmp_path / "s3" / "one", 3, True), "--to", f"s3://{bucket}/one", *ep, *SMALL, "-q")
    assert again.code == 0, again.describe()

    doc = run("ls", f"s3://{bucket}", *ep, "--json")
    assert doc.code == 0, doc.describe()
    found = {d["url"]: d for d in doc.json()["datasets"]}
    assert set(found) == {f"s3://{bucket}/one", f"s3://{bucket}/group/two"}  # no history copy listed
    one = found[f"s3://{bucket}/one"]
    assert one["name"] == "one" and one["files"] == 4 and one["captions"] == {
        "path": "captions.json", "images": 1, "annotations": 1}
    assert found[f"s3://{bucket}/group/two"]["captions"] is None
    plain = run("ls", f"s3://{bucket}/group", *ep)
    assert plain.code == 0 and "two" in plain.stdout and "one" not in plain.stdout.split("datasets in")[1], \
        plain.describe()
    single = run("ls", f"s3://{bucket}/one", *ep, "--json")  # one dataset: its summary, as before
    assert single.code == 0 and single.json()["name"] == "one" and "parts" in single.json(), single.describe()
    assert single.json()["index"]["key"].endswith("/index.jsonl.zst") and single.json()["index"]["size"] > 0

    gens = run("ls", f"s3://{bucket}/one", "--generations", *ep, "--json")
    assert gens.code == 0, gens.describe()
    rows = gens.json()["generations"]
    assert [r["kind"] for r in rows] == ["current", "history"]
    assert all(r["files"] == 4 and r["created"] and r["size"] > 0 for r in rows)
    table = run("ls", f"s3://{bucket}/one", "--generations", *ep)
    assert table.code == 0 and "current" in table.stdout and "history" in table.stdout, table.describe()


def test_ls_without_source_says_whether_each_name_is_published(run, s3_server, bucket, tmp_path: Path) -> None:
    ep = ["--endpoint-url", s3_server.endpoint_url]
    r = run("publish", tree(tmp_path / "sbu", 1), "--to", f"s3://{bucket}/sbu", *ep, *SMALL, "-q")
    assert r.code == 0, r.describe()
    doc = run("ls", *ep, "--json", env={"S3SYNC_BUCKET": bucket})
    assert doc.code == 0, doc.describe()
    state = {d["name"]: d["published"] for d in doc.json()["datasets"]}
    assert state["sbu"] is True and state["mscoco"] is False and state["imagenet"] is False
    plain = run("ls", *ep, env={"S3SYNC_BUCKET": bucket})
    assert plain.code == 0 and "not published" in plain.stdout, plain.describe()
    # no bucket: unknown, and the listing still works
    nobucket = run("ls", "--json")
    assert nobucket.code == 0 and all(d["published"] is None for d in nobucket.json()["datasets"])
    # no credentials: unknown with the reason, exit 0
    nocreds = run("ls", *ep, "--json", env={"S3SYNC_BUCKET": bucket, "AWS_ACCESS_KEY_ID": None,
                                            "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None,
                                            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                                            "AWS_CONFIG_FILE": str(tmp_path / "none")})
    assert nocreds.code == 0, nocreds.describe()
    assert all(d["published"] is None and d["published_detail"] for d in nocreds.json()["datasets"])


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_gc_cli_dry_run_then_delete(run, s3_server, bucket, tmp_path: Path) -> None:
    ep = ["--endpoint-url", s3_server.endpoint_url]
    url = f"s3://{bucket}/ds"
    for seed in range(3):
        r = run("publish", tree(tmp_path / f"s{seed}" / "ds", seed), "--to", url, *ep, *SMALL, "-q")
        assert r.code == 0, r.describe()
    young = run("gc", url, "--keep", "1", *ep, "--json")  # the default grace keeps both
    assert young.code == 0 and young.json()["deleted"] == [] and len(young.json()["young"]) == 2, young.describe()
    dry = run("gc", url, "--keep", "2", "--grace", "0", "--dry-run", *ep)
    assert dry.code == 0 and dry.stdout.startswith("would delete\t"), dry.describe()
    assert dry.stdout.count("\n") == 1
    done = run("gc", url, "--keep", "1", "--grace", "0", *ep, "--json")
    assert done.code == 0, done.describe()
    doc = done.json()
    assert [d["reason"] for d in doc["deleted"]] == ["history", "history"] and doc["objects"] > 0
    left = run("ls", url, "--generations", *ep, "--json")
    assert [r["kind"] for r in left.json()["generations"]] == ["current"]
    bad = run("gc", url, "--keep", "0", *ep)
    assert bad.code == 2 and "--keep 0" in bad.stderr, bad.describe()
    pulled = run("pull", url, tmp_path / "dest", *ep, "-q")
    assert pulled.code == 0 and (tmp_path / "dest" / "ds" / "seed.txt").read_text() == "2", pulled.describe()
