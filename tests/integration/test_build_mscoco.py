"""``s3sync build mscoco`` against a loopback COCO site (tests/cocosite.py served by
tests/httpserver.py): the tree equals what zipfile extracts, captions.json and neuraltalk2.json
hold the merged captions, a zip corrupted in transit is fetched again, a zip whose MD5 differs
fails and leaves nothing presented as complete, kill -9 then a rerun fetches only what is
missing, and a rerun over a complete DIR makes no GET of a zip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from cocosite import bytes_served, make_site, write_annotations
from httpserver import Fault

from s3sync.builders.mscoco import BUILD_DIR, KNOWN, expected_digests, zip_paths
from s3sync.cli import main
from s3sync.pieces import parse_checksums

WORKTREE = Path(__file__).resolve().parents[2]


def build(capsys, server, dest: Path, *extra: str) -> tuple[int, dict | None, str]:
    """Run ``s3sync build mscoco`` in this process; return (exit code, JSON document, stderr)."""
    code = main(["build", "mscoco", str(dest), "--mirror", server.url, "--json", "--concurrency", "2", *extra])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def tree_of(root: Path, skip=(BUILD_DIR.split("/")[0], "captions.json", "neuraltalk2.json")) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] not in skip:
            out[rel] = None if path.is_dir() else path.read_bytes()
    return out


def unzipped(site, tmp: Path) -> dict[str, bytes | None]:
    ref = tmp / "reference"
    for split in ("train", "val", "annotations"):
        with zipfile.ZipFile(site.zip(split)) as zf:
            zf.extractall(ref)
    return tree_of(ref)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """64 KiB chunks (the smallest), so that the small test zips still take several GETs."""
    monkeypatch.setenv("S3SYNC_CHUNK_SIZE", "64KiB")


def test_build_extracts_the_zips_and_writes_the_captions(http_server, tmp_path, capsys):
    site = make_site(tmp_path / "site", train=5, val=3, size=(160, 120))
    server = http_server(site.root)
    dest = tmp_path / "coco"
    code, doc, err = build(capsys, server, dest, "--checksums", str(site.checksums))
    assert code == 0, err
    assert tree_of(dest) == unzipped(site, tmp_path)
    assert doc["zips_fetched"] == 3 and doc["zips_skipped"] == 0
    assert doc["images"] == 8 and doc["captions"] == 16
    assert [z["digest"] for z in doc["zips"]] == [site.md5[p] for p in site.paths]
    assert all(z["mode"] == "full" and z["refetched"] == 0 for z in doc["zips"])
    assert doc["bytes_received"] == sum((site.root / p).stat().st_size for p in site.paths)
    merged = json.loads((dest / "captions.json").read_bytes())
    want_images = [{**im, "file_name": f"{split}2014/{im['file_name']}"}
                   for split in ("train", "val") for im in site.captions[split]["images"]]
    assert merged["images"] == want_images
    assert merged["annotations"] == site.captions["train"]["annotations"] + site.captions["val"]["annotations"]
    assert merged["images"][0]["file_name"] == "train2014/COCO_train2014_000000000009.jpg"
    assert all((dest / im["file_name"]).is_file() for im in merged["images"])
    talk = json.loads((dest / "neuraltalk2.json").read_bytes())
    assert talk[0] == {"file_path": "train2014/COCO_train2014_000000000009.jpg", "id": 9,
                       "captions": ["train image 9, caption 0: a caf\u00e9 on a street.",
                                    "train image 9, caption 1: a caf\u00e9 on a street."]}
    assert [t["id"] for t in talk] == [im["id"] for im in want_images]
    assert not list(dest.rglob("*.s3sync-tmp*"))
    assert sorted(p.name for p in (dest / BUILD_DIR).iterdir()) == sorted(
        ["lock"] + [f"{Path(p).name}.json" for p in site.paths])

    # A rerun over the complete DIR: not one GET of a zip, the same tree.
    server.requests.clear()
    code, doc, err = build(capsys, server, dest, "--checksums", str(site.checksums))
    assert code == 0, err
    assert doc["zips_skipped"] == 3 and doc["bytes_received"] == 0
    assert all(server.requests_for(p) == [] and server.requests_for(p, "HEAD") == [] for p in site.paths)
    assert tree_of(dest) == unzipped(site, tmp_path)


def test_year_2017_names_and_a_plain_summary(http_server, tmp_path, capsys):
    site = make_site(tmp_path / "site", year=2017, train=2, val=2, data_descriptors=True)
    server = http_server(site.root)
    dest = tmp_path / "coco"
    code = main(["build", "mscoco", str(dest), "--year", "2017", "--mirror", server.url + "/",
                 "--checksums", str(site.checksums)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "verified train2017.zip: MD5 " + site.md5["zips/train2017.zip"] in err
    assert "built mscoco 2017" in err and "4 images, 8 captions" in err
    assert (dest / "val2017" / "000000000016.jpg").is_file()
    assert json.loads((dest / "captions.json").read_bytes())["images"][0]["file_name"] == "train2017/000000000009.jpg"


def test_a_zip_corrupted_in_transit_is_fetched_again(http_server, tmp_path, capsys):
    site = make_site(tmp_path / "site", train=10, val=3, size=(200, 150))
    server = http_server(site.root)
    train, val = site.paths[0], site.paths[1]
    # train: the preflight's HEAD, the zip's HEAD, the tail's GET, then a flipped byte in the
    # first chunk; val: a body cut short.
    server.fault(train, Fault(), Fault(), Fault(), Fault(corrupt_at=5000))
    server.fault(val, Fault(), Fault(), Fault(), Fault(cut_after=1000))
    assert site.zip("train").stat().st_size > 2 * 64 * 1024
    dest = tmp_path / "coco"
    code, doc, err = build(capsys, server, dest, "--checksums", str(site.checksums), "--concurrency", "1")
    assert code == 0, err
    assert tree_of(dest) == unzipped(site, tmp_path)
    by_name = {z["name"]: z for z in doc["zips"]}
    assert by_name["train2014.zip"]["refetched"] == 1
    assert by_name["train2014.zip"]["digest"] == site.md5[train]
    assert by_name["val2014.zip"]["digest"] == site.md5[val]


def test_a_zip_whose_md5_differs_fails_and_leaves_nothing_complete(http_server, tmp_path, capsys):
    """No ETags (a plain mirror): the digest is known only once every byte streamed; it is
    read twice, then the build fails naming the zip and both MD5s; nothing of it is left."""
    site = make_site(tmp_path / "site")
    wrong = "0123456789abcdef0123456789abcdef"
    site.write_checksums({"val2014.zip": wrong})
    server = http_server(site.root, etags=False)
    dest = tmp_path / "coco"
    code, doc, err = build(capsys, server, dest, "--checksums", str(site.checksums))
    assert code == 1
    assert f"val2014.zip: MD5 is {site.md5[site.paths[1]]} after 2 downloads, expected {wrong}" in err
    assert not (dest / "val2014").exists()
    assert not (dest / "captions.json").exists() and not (dest / "neuraltalk2.json").exists()
    assert not (dest / BUILD_DIR / "val2014.zip").exists()
    assert not (dest / BUILD_DIR / "val2014.zip.json").exists()
    assert (dest / BUILD_DIR / "train2014.zip.json").exists()  # the zip before it was fine
    assert not (dest / "annotations").exists()


def test_a_source_that_keeps_failing_before_the_download_says_to_run_the_build_again(http_server, tmp_path):
    """503 on every HEAD: retried (settings.retries), then an error whose hint fits a build
    (run it again; it resumes), not a pull's --endpoint-url."""
    from s3sync.builders.mscoco import build_mscoco
    from s3sync.config import TransferSettings
    from s3sync.errors import TransientStoreError
    from s3sync.stores.http import HttpStore

    settings = TransferSettings(concurrency=2, chunk_size=64 * 1024, window=4, retries=2, backoff_base_s=0.01,
                                backoff_max_s=0.02)
    site = make_site(tmp_path / "site")
    server = http_server(site.root)
    server.fault(site.paths[0], *[Fault(status=503)] * 3)
    store = HttpStore(settings)
    try:
        with pytest.raises(TransientStoreError) as err:
            build_mscoco(tmp_path / "coco", store, settings, base_url=server.url,
                         checksums=parse_checksums(site.checksums.read_text(), str(site.checksums)))
    finally:
        store.close()
    assert "--endpoint-url" not in err.value.hint and "run the same build command again" in err.value.hint
    assert len(server.requests_for(site.paths[0], "HEAD")) == 3  # the first try and settings.retries more


def test_an_etag_that_disagrees_with_the_checksums_is_refused_before_downloading(http_server, tmp_path, capsys):
    site = make_site(tmp_path / "site")
    site.write_checksums({"train2014.zip": "0123456789abcdef0123456789abcdef"})
    server = http_server(site.root)
    code, _, err = build(capsys, server, tmp_path / "coco", "--checksums", str(site.checksums))
    assert code == 1
    assert "two sources disagree" in err and site.md5[site.paths[0]] in err
    assert server.requests_for(site.paths[0]) == []


def test_the_official_table_is_used_without_checksums(http_server, tmp_path, capsys):
    """Without --checksums the built-in sizes and MD5s apply: a small mirror is refused by size."""
    site = make_site(tmp_path / "site")
    server = http_server(site.root)
    code, _, err = build(capsys, server, tmp_path / "coco")
    assert code == 1
    assert f"but the official train2014.zip is {KNOWN['zips/train2014.zip'].size:,} bytes" in err


def test_checksums_override_the_table_by_name_or_path():
    claims = parse_checksums("0" * 32 + "  train2014.zip\n" + "1" * 32 + "  annotations/annotations_trainval2014.zip\n",
                             "MD5SUMS")
    got = expected_digests(2014, claims)
    assert got["zips/train2014.zip"].digest == "0" * 32
    assert got["annotations/annotations_trainval2014.zip"].digest == "1" * 32
    assert got["zips/val2014.zip"].digest == KNOWN["zips/val2014.zip"].md5
    assert got["zips/val2014.zip"].source.startswith("s3sync's table")
    assert zip_paths(2017)[0] == "zips/train2017.zip"


def test_a_directory_in_the_way_is_not_replaced(http_server, tmp_path, capsys):
    site = make_site(tmp_path / "site")
    dest = tmp_path / "coco"
    (dest / "val2014").mkdir(parents=True)
    (dest / "val2014" / "mine.txt").write_text("the user's")
    code, _, err = build(capsys, http_server(site.root), dest, "--checksums", str(site.checksums))
    assert code == 1
    assert "val2014 exists, but no build of val2014.zip made it" in err
    assert (dest / "val2014" / "mine.txt").read_text() == "the user's"


def test_a_kill_while_moving_a_verified_zip_into_place_is_finished_by_the_rerun(http_server, tmp_path, capsys,
                                                                               monkeypatch):
    """Interrupted after a zip was verified and moved, before its completion record: the rerun
    finishes the commit from its verified.json without fetching the zip again."""
    from s3sync.builders import mscoco

    site = make_site(tmp_path / "site")
    server = http_server(site.root)
    dest = tmp_path / "coco"
    real = mscoco.write_atomic

    def crash(path, data, **kw):
        if path.name == "val2014.zip.json":
            raise KeyboardInterrupt
        return real(path, data, **kw)

    monkeypatch.setattr(mscoco, "write_atomic", crash)
    code, _, err = build(capsys, server, dest, "--checksums", str(site.checksums))
    assert code == 130, err
    assert (dest / "val2014").is_dir() and (dest / BUILD_DIR / "val2014.zip" / "verified.json").is_file()
    monkeypatch.setattr(mscoco, "write_atomic", real)
    server.requests.clear()
    code, doc, err = build(capsys, server, dest, "--checksums", str(site.checksums))
    assert code == 0, err
    assert server.requests_for(site.paths[1]) == [] and server.requests_for(site.paths[0], "HEAD") == []
    assert tree_of(dest) == unzipped(site, tmp_path)
    assert not (dest / BUILD_DIR / "val2014.zip").exists()


def test_a_complete_dir_missing_a_file_is_reported(http_server, tmp_path, capsys):
    site = make_site(tmp_path / "site")
    server = http_server(site.root)
    dest = tmp_path / "coco"
    assert build(capsys, server, dest, "--checksums", str(site.checksums))[0] == 0
    victim = next((dest / "val2014").iterdir())
    victim.unlink()
    code, _, err = build(capsys, server, dest, "--checksums", str(site.checksums))
    assert code == 1
    assert f"{victim}: missing or not the size val2014.zip gives it" in err
    assert "val2014.zip.json" in err  # the hint says what to remove to build it again


def test_image_ids_shared_by_train_and_val_are_refused(http_server, tmp_path, capsys):
    site = make_site(tmp_path / "site")
    clash = site.captions["train"]["images"][0]["id"]
    first_val = site.captions["val"]["images"][0]
    for ann in site.captions["val"]["annotations"]:
        if ann["image_id"] == first_val["id"]:
            ann["image_id"] = clash
    first_val["id"] = clash
    write_annotations(site)
    dest = tmp_path / "coco"
    code, _, err = build(capsys, http_server(site.root), dest, "--checksums", str(site.checksums))
    assert code == 1
    assert f"id {clash} is used twice" in err and "captions.json" in err
    assert not (dest / "captions.json").exists()


def test_a_server_without_ranges_is_refused_saying_why(http_server, tmp_path, capsys):
    site = make_site(tmp_path / "site")
    code, _, err = build(capsys, http_server(site.root, ranges=False), tmp_path / "coco",
                         "--checksums", str(site.checksums))
    assert code == 1
    assert "does not answer ranged GETs" in err and "train2014.zip" in err
    assert not (tmp_path / "coco" / "train2014").exists()


def test_bad_checksums_file_is_a_usage_error(http_server, tmp_path, capsys):
    bad = tmp_path / "MD5SUMS"
    bad.write_text("not a checksum line\n")
    code = main(["build", "mscoco", str(tmp_path / "coco"), "--checksums", str(bad), "--mirror", "http://127.0.0.1:9"])
    assert code == 2
    assert "line 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------- kill -9


def _cli(dest: Path, server, site, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(WORKTREE), "S3SYNC_CHUNK_SIZE": "64KiB"}
    return subprocess.Popen([sys.executable, "-m", "s3sync", "build", "mscoco", str(dest), "--mirror", server.url,
                             "--checksums", str(site.checksums), "--concurrency", "1", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL)


def _recorded(dest: Path, name: str) -> list[list]:
    try:
        text = (dest / BUILD_DIR / name / "members.jsonl").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line the kill cut short: the builder does that member again
    return out


@pytest.mark.parametrize("etags", [True, False], ids=["etag-md5", "no-etag"])
def test_kill_9_mid_download_then_rerun_fetches_only_what_is_missing(http_server, tmp_path, etags):
    site = make_site(tmp_path / "site", train=16, val=2, size=(200, 150))
    train = site.paths[0]
    size = site.zip("train").stat().st_size
    server = http_server(site.root, etags=etags)
    # HEAD and tail at once, then each 64 KiB chunk of train2014.zip after a pause: slow enough to kill mid-way.
    server.fault(train, Fault(), Fault(), *[Fault(stall_s=0.25)] * 40)
    dest = tmp_path / "coco"
    proc = _cli(dest, server, site)
    deadline = time.monotonic() + 60
    while len(_recorded(dest, "train2014.zip")) < 5:
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, "the build never got going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    proc.communicate()
    recorded = _recorded(dest, "train2014.zip")
    assert 5 <= len(recorded) < 17
    kept = dest / BUILD_DIR / "train2014.zip" / "tree" / recorded[-1][0]
    inode = kept.stat().st_ino
    first_run = bytes_served(server, train)
    with server._lock:
        server._faults.clear()
    server.requests.clear()

    proc = _cli(dest, server, site)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    z = doc["zips"][0]
    assert z["name"] == "train2014.zip" and z["digest"] == site.md5[train]
    assert z["written"] == 17 - len(recorded)  # the members recorded were not written again
    assert (dest / recorded[-1][0]).stat().st_ino == inode
    assert tree_of(dest) == unzipped(site, tmp_path)
    again = bytes_served(server, train)
    with zipfile.ZipFile(site.zip("train")) as zf:
        done_bytes = sum(i.compress_size for i in zf.infolist() if i.filename in {r[0] for r in recorded})
    if etags:
        # Only the members not recorded (whole 64 KiB chunks around them) and the 64 KiB tail read.
        assert z["mode"] == "partial" and "ETag" in z["evidence"]
        assert again <= size - done_bytes + 2 * 64 * 1024
    else:
        # No MD5 ETag: the whole zip is read again so that its MD5 is computed in this run.
        assert z["mode"] == "full" and "computed in this run" in z["evidence"]
        assert again == size + 1  # and the one byte of the probe for ranged GETs
    assert first_run + again >= size


def test_a_mirror_that_does_not_fit_one_zip_is_refused_before_any_download(http_server, tmp_path, capsys):
    """A --checksums file that lacks the annotations zip: that zip falls back to the table of
    the official files, whose size the mirror's does not have. Said before the other zips are
    fetched (20 GB for 2014), not after."""
    site = make_site(tmp_path / "www")
    server = http_server(site.root)
    lines = site.checksums.read_text().splitlines(keepends=True)
    site.checksums.write_text("".join(line for line in lines if "annotations" not in line))
    code, _, err = build(capsys, server, tmp_path / "coco", "--checksums", str(site.checksums))
    assert code == 1
    assert "but the official annotations_trainval2014.zip is 252,872,794 bytes" in err
    assert [r for r in server.requests if r.method == "GET"] == []
