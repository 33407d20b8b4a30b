"""``build_sbu`` (builders/sbu.py on builders/listcrawl.py) against a loopback server that plays
Flickr: whole JPEGs of several sizes, 404, 403, the placeholder (a redirect to
``photo_unavailable`` and the PNG served directly, known by a test digest), an HTML page with
200, truncated bodies (a cut JPEG served whole, and a Content-Length longer than the body), a
503 with Retry-After then success, 429s, a stall longer than the timeout."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from httpserver import Fault

from s3sync import captions as coco
from s3sync.builders.listcrawl import FAILURES_HEADER, JOURNAL_NAME, META_DIR
from s3sync.builders.sbu import build_sbu, image_stem
from s3sync.crawl import CrawlSettings
from s3sync.errors import BuildError, UsageError
from s3sync.images import make_jpeg, make_png

SETTINGS = CrawlSettings(threads=4, timeout_s=0.5, deadline_s=1.2, retries=2, backoff_s=0.01, backoff_max_s=0.05)
MANY = 50  # faults queued for URLs that must fail the same way however often they are asked


class Flickr:
    """The test site: ``lines`` is the URL list, ``expect[i]`` the outcome of line i."""

    def __init__(self, root: Path, server, n_good: int = 12) -> None:
        self.root, self.server = root, server
        self.placeholder = make_png(20, 20)
        self.placeholder_md5 = hashlib.md5(self.placeholder).hexdigest()
        (root / "photos").mkdir()
        self.lines: list[str] = []
        self.expect: list[str] = []  # "ok" or a failure reason
        self.sizes: dict[int, tuple[int, int]] = {}
        for i in range(n_good):
            w, h = 40 + 10 * (i % 7), 30 + 10 * (i % 5)
            (root / "photos" / f"{i}.jpg").write_bytes(make_jpeg(w, h))
            self.add(f"photos/{i}.jpg", "ok")
            self.sizes[len(self.lines) - 1] = (w, h)
        self.add("photos/gone.jpg", "http 404")
        self.add("photos/forbidden.jpg", "http 403", Fault(status=403))
        self.add("photos/deleted.jpg", "placeholder", Fault(redirect="https://s.yimg.com/pw/images/photo_unavailable.png"))
        (root / "photos" / "ph.png").write_bytes(self.placeholder)
        self.add("photos/ph.png", "placeholder")
        (root / "photos" / "page.html").write_bytes(b"<!DOCTYPE html><html><body>Flickr</body></html>")
        self.add("photos/page.html", "not an image")
        whole = make_jpeg(120, 90)
        (root / "photos" / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
        self.add("photos/cut.jpg", "truncated")
        (root / "photos" / "short.jpg").write_bytes(make_jpeg(50, 50))
        self.add("photos/short.jpg", "truncated", Fault(cut_after=200))
        (root / "photos" / "busy.jpg").write_bytes(make_jpeg(70, 40))
        server.fault("photos/busy.jpg", Fault(status=503, headers=(("Retry-After", "1"),)))
        self.add("photos/busy.jpg", "ok")
        self.sizes[len(self.lines) - 1] = (70, 40)
        (root / "photos" / "throttled.jpg").write_bytes(make_jpeg(30, 30))
        self.add("photos/throttled.jpg", "http 429", Fault(status=429))
        (root / "photos" / "stalled.jpg").write_bytes(make_jpeg(30, 30))
        self.add("photos/stalled.jpg", "timeout", Fault(stall_s=1.0))
        (root / "photos" / "caf\u00e9 1.jpg").write_bytes(make_jpeg(33, 22))
        self.add("photos/caf\u00e9 1.jpg", "ok", url=f"{server.url}/photos/caf\u00e9 1.jpg")
        self.sizes[len(self.lines) - 1] = (33, 22)

    def add(self, name: str, outcome: str, fault: Fault | None = None, url: str | None = None) -> None:
        if fault is not None:
            self.server.fault(name, *[fault] * MANY)
        self.lines.append(url or self.server.url_of(name))
        self.expect.append(outcome)

    def write_lists(self, directory: Path, captions: list[str] | None = None) -> tuple[Path, Path]:
        urls, caps = directory / "urls.txt", directory / "captions.txt"
        urls.write_text("\n".join(self.lines) + "\n", encoding="utf-8")
        caps.write_text("\n".join(captions or [f"a photo number {i}" for i in range(len(self.lines))]) + "\n",
                        encoding="utf-8")
        return urls, caps

    def gets(self) -> list[str]:
        return [r.path for r in self.server.requests if r.method == "GET"]


@pytest.fixture
def flickr(tmp_path: Path, http_server) -> Flickr:
    root = tmp_path / "www"
    root.mkdir()
    return Flickr(root, http_server(root))


def build(flickr: Flickr, dest: Path, lists: tuple[Path, Path], **kw):
    kw.setdefault("settings", SETTINGS)
    kw.setdefault("placeholders", {flickr.placeholder_md5})
    return build_sbu(dest, urls=str(lists[0]), captions=str(lists[1]), **kw)


def tree(dest: Path) -> dict[str, bytes]:
    """Every file under ``dest`` but the resume state, and captions.json without its date."""
    files = {}
    for p in sorted(dest.rglob("*")):
        rel = p.relative_to(dest).as_posix()
        if p.is_file() and not rel.startswith(META_DIR + "/"):
            data = p.read_bytes()
            if rel == coco.CAPTIONS_NAME:
                doc = json.loads(data)
                del doc["info"]["date_created"]
                data = json.dumps(doc).encode()
            files[rel] = data
    return files


def test_a_build_keeps_whole_images_and_lists_every_failure(flickr: Flickr, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    built = build(flickr, dest, flickr.write_lists(tmp_path))
    r = built.crawl
    n = len(flickr.lines)
    good = [i for i, e in enumerate(flickr.expect) if e == "ok"]
    reasons: dict[str, int] = {}
    for e in flickr.expect:
        if e != "ok":
            reasons[e] = reasons.get(e, 0) + 1
    assert (built.lines, r.requested, r.stored, r.skipped, r.recovered) == (n, n, len(good), 0, 0)
    assert r.failed == dict(sorted(reasons.items()))
    assert (r.images, r.failures) == (len(good), n - len(good))

    failures = (dest / "failures.tsv").read_text().splitlines()
    assert failures[0] == FAILURES_HEADER
    assert [line.split("\t") for line in failures[1:]] == [
        [str(i), flickr.lines[i], e] for i, e in enumerate(flickr.expect) if e != "ok"]

    doc = json.loads((dest / "captions.json").read_bytes())
    assert coco.check(doc, "captions.json", exists=lambda name: (dest / name).is_file()) == coco.CaptionCounts(
        len(good), len(good))
    assert [im["id"] for im in doc["images"]] == good
    for im in doc["images"]:
        i = im["id"]
        assert im["file_name"] == image_stem(i) + ".jpg"
        assert im["flickr_url"] == flickr.lines[i]
        assert (im["width"], im["height"]) == flickr.sizes[i]
    assert [(a["image_id"], a["caption"]) for a in doc["annotations"]] == [(i, f"a photo number {i}") for i in good]
    assert len({a["id"] for a in doc["annotations"]}) == len(good)
    # Bytes as served, never re-encoded.
    assert (dest / image_stem(0)).with_suffix(".jpg").read_bytes() == (flickr.root / "photos/0.jpg").read_bytes()
    # The placeholder redirect was not followed; nothing half-written is left.
    assert not any("photo_unavailable" in p for p in flickr.gets())
    assert list((dest / META_DIR / "tmp").iterdir()) == []


def test_directories_never_hold_more_than_the_limit(flickr: Flickr, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    build(flickr, dest, flickr.write_lists(tmp_path), per_dir=3)
    dirs = sorted(p for p in (dest / "images").iterdir())
    assert dirs and all(len(list(d.iterdir())) <= 3 for d in dirs)
    stored = [i for i, e in enumerate(flickr.expect) if e == "ok"]
    assert [d.name for d in dirs] == sorted({f"{i // 3:04d}" for i in stored})
    assert (dest / "images/0001/0000004.jpg").is_file()  # line 4: directory 4 // 3 = 1
    doc = json.loads((dest / "captions.json").read_bytes())
    assert all(im["file_name"] == f"images/{im['id'] // 3:04d}/{im['id']:07d}.jpg" for im in doc["images"])


def test_a_rerun_fetches_nothing_and_changes_nothing(flickr: Flickr, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    lists = flickr.write_lists(tmp_path)
    build(flickr, dest, lists)
    before, asked = tree(dest), len(flickr.gets())
    again = build(flickr, dest, lists)
    assert len(flickr.gets()) == asked
    assert (again.crawl.skipped, again.crawl.stored, again.crawl.failed) == (len(flickr.lines), 0, {})
    assert tree(dest) == before


def test_retry_failed_asks_again_only_for_transient_failures(flickr: Flickr, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    lists = flickr.write_lists(tmp_path)
    build(flickr, dest, lists)
    asked = len(flickr.gets())
    again = build(flickr, dest, lists, retry_failed=True)
    retried = {p.rsplit("/", 1)[-1] for p in flickr.gets()[asked:]}
    assert retried == {"short.jpg", "throttled.jpg", "stalled.jpg"}  # truncated in transit, 429, timeout
    assert again.crawl.skipped == len(flickr.lines) - 3


def test_first_and_count_select_lines_and_later_runs_add_to_the_dataset(flickr: Flickr, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    lists = flickr.write_lists(tmp_path)
    one = build(flickr, dest, lists, first=2, count=3)
    assert one.crawl.requested == 3 and one.crawl.stored == 3
    assert sorted(flickr.gets()) == sorted(f"/photos/{i}.jpg" for i in (2, 3, 4))
    assert [im["id"] for im in json.loads((dest / "captions.json").read_bytes())["images"]] == [2, 3, 4]
    two = build(flickr, dest, lists, first=0, count=6)
    assert (two.crawl.requested, two.crawl.skipped, two.crawl.stored) == (6, 3, 3)
    assert [im["id"] for im in json.loads((dest / "captions.json").read_bytes())["images"]] == list(range(6))
    last = build(flickr, dest, lists, first=len(flickr.lines) - 1)
    assert last.crawl.requested == 1


def test_bad_selections_and_sources_are_refused(flickr: Flickr, tmp_path: Path) -> None:
    urls, caps = flickr.write_lists(tmp_path)
    with pytest.raises(UsageError, match="past the end"):
        build(flickr, tmp_path / "a", (urls, caps), first=len(flickr.lines))
    with pytest.raises(UsageError, match="--urls and --captions"):
        build_sbu(tmp_path / "a", urls=str(urls))
    with pytest.raises(BuildError, match="no such file"):
        build(flickr, tmp_path / "a", (tmp_path / "nope.txt", caps))


def test_lists_of_different_lengths_are_refused_naming_both(flickr: Flickr, tmp_path: Path) -> None:
    urls, caps = flickr.write_lists(tmp_path, captions=["only one caption"])
    with pytest.raises(BuildError) as err:
        build(flickr, tmp_path / "sbu", (urls, caps))
    assert str(urls) in str(err.value) and str(caps) in str(err.value)
    assert f"{len(flickr.lines):,} lines" in str(err.value) and "has 1 lines" not in str(err.value)
    assert flickr.gets() == []


def test_lists_given_as_urls(flickr: Flickr, tmp_path: Path) -> None:
    urls, caps = flickr.write_lists(flickr.root)
    built = build_sbu(tmp_path / "sbu", urls=flickr.server.url_of("urls.txt"), captions=flickr.server.url_of(
        "captions.txt"), settings=SETTINGS, placeholders={flickr.placeholder_md5}, count=4)
    assert built.crawl.stored == 4 and built.urls == flickr.server.url_of("urls.txt")


def _sbu_archive(flickr: Flickr, directory: Path) -> tuple[Path, str]:
    urls, caps = flickr.write_lists(directory)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        tar.add(directory / "urls.txt", "x/dataset/SBU_captioned_photo_dataset_urls.txt")
        tar.add(directory / "captions.txt", "x/dataset/SBU_captioned_photo_dataset_captions.txt")
        tar.addfile(tarfile.TarInfo("x/dataset/README"), io.BytesIO())
    data = out.getvalue()
    (flickr.root / "SBUCaptionedPhotoDataset.tar.gz").write_bytes(data)
    return flickr.root / "SBUCaptionedPhotoDataset.tar.gz", hashlib.md5(data).hexdigest()


def test_the_default_source_is_the_archive_checked_by_md5(flickr: Flickr, tmp_path: Path) -> None:
    _, md5 = _sbu_archive(flickr, tmp_path)
    url = flickr.server.url_of("SBUCaptionedPhotoDataset.tar.gz")
    with pytest.raises(BuildError, match="MD5"):
        build_sbu(tmp_path / "sbu", archive_url=url, archive_md5="0" * 32, settings=SETTINGS, count=2)
    built = build_sbu(tmp_path / "sbu", archive_url=url, archive_md5=md5, settings=SETTINGS, count=2,
                      placeholders={flickr.placeholder_md5})
    assert built.lines == len(flickr.lines) and built.crawl.stored == 2
    assert built.urls.endswith("#SBU_captioned_photo_dataset_urls.txt")
    assert len(flickr.server.requests_for("SBUCaptionedPhotoDataset.tar.gz")) == 2  # the bad download was redone
    build_sbu(tmp_path / "sbu", archive_url=url, archive_md5=md5, settings=SETTINGS, count=3)
    assert len(flickr.server.requests_for("SBUCaptionedPhotoDataset.tar.gz")) == 2  # kept lists reused


def test_an_archive_without_the_lists_is_refused(flickr: Flickr, tmp_path: Path) -> None:
    out = tmp_path / "other.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("dataset/README"), io.BytesIO())
    with pytest.raises(BuildError, match="holds no SBU_captioned_photo_dataset_urls.txt"):
        build_sbu(tmp_path / "sbu", archive_url=str(out), archive_md5="")
    (tmp_path / "junk.tar.gz").write_bytes(b"<html>not found</html>")
    with pytest.raises(BuildError, match="not a readable tar"):
        build_sbu(tmp_path / "sbu2", archive_url=str(tmp_path / "junk.tar.gz"), archive_md5="")


def test_images_without_a_journal_line_are_checked_again_not_trusted(flickr: Flickr, tmp_path: Path) -> None:
    """What a kill between an image's rename and its journal flush leaves: the image, no line."""
    dest = tmp_path / "sbu"
    lists = flickr.write_lists(tmp_path)
    build(flickr, dest, lists)
    complete = tree(dest)
    journal = dest / META_DIR / JOURNAL_NAME
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    # Claim lines stay (they reach the file before any image of theirs is renamed into place).
    kept = [r for r in records if r.get("index") not in (0, 1, 2)]
    # Lines 0-2 lost their journal lines; line 1's image is cut, line 2's is not an image at
    # all; the last line is torn mid-write.
    journal.write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"index": 5, "url": "ht')
    (dest / "captions.json").unlink()
    cut = dest / (image_stem(1) + ".jpg")
    cut.write_bytes(cut.read_bytes()[:300])
    (dest / (image_stem(2) + ".jpg")).write_bytes(b"<html></html>")
    asked = len(flickr.gets())
    again = build(flickr, dest, lists)
    assert sorted(flickr.gets()[asked:]) == ["/photos/1.jpg", "/photos/2.jpg"]  # 0 kept as it was, checked
    assert (again.crawl.recovered, again.crawl.stored) == (1, 3)
    assert tree(dest) == complete


def test_a_second_build_into_the_same_directory_is_refused(flickr: Flickr, tmp_path: Path) -> None:
    import fcntl

    dest = tmp_path / "sbu"
    (dest / META_DIR / "tmp").mkdir(parents=True)
    (dest / META_DIR / "tmp" / "7.part").write_bytes(b"the other build's image")
    with open(dest / META_DIR / JOURNAL_NAME, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(BuildError, match="another build"):
            build(flickr, dest, flickr.write_lists(tmp_path))
    assert (dest / META_DIR / "tmp" / "7.part").exists()  # not touched


def test_select() -> None:
    from s3sync.builders.listcrawl import ListItem, select

    items = [ListItem(i, f"http://h/{i}", ("c",), f"x/{i}") for i in range(10)]
    assert [i.index for i in select(items, 3, 4)] == [3, 4, 5, 6]
    assert [i.index for i in select(items, 8)] == [8, 9]
    assert [i.index for i in select(items, 0, 0)] == []


def test_a_line_whose_url_changed_is_fetched_again(flickr: Flickr, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    urls, caps = flickr.write_lists(tmp_path)
    build(flickr, dest, (urls, caps), count=3)
    lines = urls.read_text().splitlines()
    lines[1] = flickr.server.url_of("photos/7.jpg")
    urls.write_text("\n".join(lines) + "\n")
    asked = len(flickr.gets())
    again = build(flickr, dest, (urls, caps), count=3)
    assert flickr.gets()[asked:] == ["/photos/7.jpg"]
    assert (again.crawl.skipped, again.crawl.stored) == (2, 1)
    doc = json.loads((dest / "captions.json").read_bytes())
    assert doc["images"][1]["flickr_url"] == lines[1]
    assert (dest / doc["images"][1]["file_name"]).read_bytes() == (flickr.root / "photos/7.jpg").read_bytes()


def test_a_build_stopped_by_its_event_writes_no_captions(flickr: Flickr, tmp_path: Path) -> None:
    import threading

    from s3sync.errors import Interrupted

    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        build(flickr, tmp_path / "sbu", flickr.write_lists(tmp_path), stop=stop)
    assert not (tmp_path / "sbu" / "captions.json").exists()


def test_the_build_record_says_complete_only_after_captions_json(flickr: Flickr, tmp_path: Path) -> None:
    from s3sync import buildstate

    dest = tmp_path / "sbu"
    build(flickr, dest, flickr.write_lists(tmp_path))
    state = buildstate.read(dest)
    assert state is not None and state.builder == "sbu" and state.complete
    assert state.outputs == ("captions.json", "failures.tsv")
    buildstate.check_publishable(dest)


@pytest.mark.parametrize("name", ["captions.json", "failures.tsv"])
def test_a_users_own_output_file_is_refused_not_overwritten(flickr: Flickr, tmp_path: Path, name: str) -> None:
    dest = tmp_path / "sbu"
    dest.mkdir()
    (dest / name).write_text("mine")
    with pytest.raises(BuildError, match=name):
        build(flickr, dest, flickr.write_lists(tmp_path))
    assert (dest / name).read_text() == "mine"
    assert flickr.gets() == []  # refused before anything was fetched
