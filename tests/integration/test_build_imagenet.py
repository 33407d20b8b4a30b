"""``build_imagenet`` (builders/imagenet.py on builders/listcrawl.py) against a loopback server:
a ``fall11_urls.txt``-style list with lines that are not UTF-8, malformed lines, a path
traversal in a name, a duplicate, non-ASCII URLs (served), dead URLs and a placeholder
redirect; ``--wnids`` with ``--first``/``--count``; ``words.txt`` as captions (file and URL);
the directory layout and its sub-directories; a rerun that fetches nothing. The kill -9 of
the command is in test_build_imagenet_cli.py."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from httpserver import Fault

from s3sync import captions as coco
from s3sync.builders.imagenet import (
    REASON_BAD_LINE,
    REASON_DUPLICATE,
    SCAN_NAME,
    build_imagenet,
    count_selected,
    image_stem,
    parse_line,
    read_wnids,
    scan,
)
from s3sync.builders.listcrawl import FAILURES_HEADER
from s3sync.crawl import CrawlSettings
from s3sync.errors import BuildError, UsageError
from s3sync.images import make_jpeg

SETTINGS = CrawlSettings(threads=4, timeout_s=1.0, deadline_s=3.0, retries=1, backoff_s=0.01, backoff_max_s=0.05)
FISH, DOG, OTHER = "n01440764", "n02102040", "n09999999"
WORDS = f"{FISH}\ttench, Tinca tinca\n{DOG}\tEnglish springer, English springer spaniel\nn00000001\tentity\n"


class ImageNet:
    """The test list: ``raw`` its bytes, ``expect[i]`` line i's outcome (a stem, a failure
    reason, or None for a line that no selection of these tests keeps)."""

    def __init__(self, root: Path, server) -> None:
        self.server = server
        (root / "img").mkdir(parents=True)
        self.lines: list[bytes] = []
        self.expect: list[str] = []
        self.sizes: dict[int, tuple[int, int]] = {}
        for n in (1, 2, 17):
            self.image(root, FISH, n, f"img/fish-{n}.jpg")
        self.line(f"{FISH}_40\t{server.url_of('img/gone.jpg')}".encode(), "http 404")
        self.line(f"{FISH}_41\t{server.url}/img/caf\u00e9-\u00fc.jpg".encode("latin-1"),
                  REASON_BAD_LINE)  # Latin-1 bytes: not UTF-8
        self.line(b"n01440764 42 http://example.invalid/x.jpg", REASON_BAD_LINE)  # no tab
        self.line(f"../../etc_1\t{server.url_of('img/fish-1.jpg')}".encode(), REASON_BAD_LINE)
        self.line(f"{FISH}_x3\t{server.url_of('img/fish-1.jpg')}".encode(), REASON_BAD_LINE)
        self.line(f"{FISH}_44\t   ".encode(), REASON_BAD_LINE)
        self.line(b"", REASON_BAD_LINE)
        self.line(f"{FISH}_2\t{server.url_of('img/fish-2.jpg')}".encode(), REASON_DUPLICATE)
        self.image(root, DOG, 5, "img/dog \u00e9t\u00e9 5.jpg", url=f"{server.url}/img/dog \u00e9t\u00e9 5.jpg")
        self.image(root, DOG, 6, "img/\u72ac6.jpg", url=f"{server.url}/img/\u72ac6.jpg")
        server.fault("img/deleted.jpg", *[Fault(redirect="/photo_unavailable.png")] * 20)
        self.line(f"{DOG}_7\t{server.url_of('img/deleted.jpg')}".encode(), "placeholder")
        self.image(root, OTHER, 1, "img/other-1.jpg")
        self.line(b"\xff\xfe_1\thttp://example.invalid/\xff.jpg", REASON_BAD_LINE)
        self.image(root, DOG, 8, "img/dog-8.jpg")
        self.raw = b"\n".join(self.lines) + b"\n"

    def image(self, root: Path, wnid: str, n: int, name: str, url: str | None = None) -> None:
        w, h = 30 + n, 20 + n % 5
        (root / name).write_bytes(make_jpeg(w, h, seed=n))
        self.sizes[len(self.lines)] = (w, h)
        self.line(f"{wnid}_{n}\t{url or self.server.url_of(name)}".encode(), f"{wnid}/{wnid}_{n}")

    def line(self, raw: bytes, outcome: str) -> None:
        self.lines.append(raw)
        self.expect.append(outcome)

    def write(self, directory: Path) -> Path:
        path = directory / "fall11_urls.txt"
        path.write_bytes(self.raw)
        return path


@pytest.fixture
def imagenet(tmp_path: Path, http_server) -> tuple[ImageNet, Path]:
    root = tmp_path / "www"
    root.mkdir()
    server = http_server(root)
    net = ImageNet(root, server)
    (root / "words.txt").write_text(WORDS)
    return net, net.write(tmp_path)


def load(dest: Path) -> tuple[dict, list[list[str]]]:
    doc = json.loads((dest / coco.CAPTIONS_NAME).read_text())
    coco.check(doc, coco.CAPTIONS_NAME, exists=lambda name: (dest / name).is_file())
    lines = (dest / "failures.tsv").read_text().splitlines()
    assert lines[0] == FAILURES_HEADER
    return doc, [line.split("\t") for line in lines[1:]]


def test_a_whole_list_with_bad_lines_dead_urls_and_non_ascii_urls(imagenet, tmp_path: Path) -> None:
    net, urls = imagenet
    dest = tmp_path / "imagenet"
    built = build_imagenet(dest, urls=str(urls), words=str(urls.parent / "www" / "words.txt"), settings=SETTINGS)
    r = built.crawl
    stems = {i: e for i, e in enumerate(net.expect) if "/" in e}
    failed = {i: e for i, e in enumerate(net.expect) if "/" not in e}
    assert (built.lines, r.requested, r.stored) == (len(net.lines), len(net.lines), len(stems))
    assert built.bad_lines == sum(e == REASON_BAD_LINE for e in net.expect)
    assert built.bad_line_numbers == tuple(i for i, e in enumerate(net.expect) if e == REASON_BAD_LINE)[:5]
    assert built.synsets == 3 and built.split_synsets == ()
    assert r.failed == {reason: list(failed.values()).count(reason) for reason in set(failed.values())}

    doc, failures = load(dest)
    images = {im["id"]: im for im in doc["images"]}
    assert sorted(images) == sorted(stems)
    words = {FISH: "tench, Tinca tinca", DOG: "English springer, English springer spaniel", OTHER: OTHER}
    for index, stem in stems.items():
        im = images[index]
        assert im["file_name"] == stem + ".jpg"
        assert (im["width"], im["height"]) == net.sizes[index]
        assert im["url"] == net.lines[index].decode().split("\t", 1)[1]
        assert (dest / im["file_name"]).read_bytes() == (urls.parent / "www" / "img").joinpath(
            im["url"].rsplit("/", 1)[1]).read_bytes(), "stored as served"
        captions = [a["caption"] for a in doc["annotations"] if a["image_id"] == index]
        assert captions == [words[stem.split("/")[0]]]
    assert {int(f[0]): f[2] for f in failures} == failed
    by_index = {int(f[0]): f[1] for f in failures}
    assert by_index[4] == f"{FISH}_41\t{net.server.url}/img/caf\\xe9-\\xfc.jpg".replace("\t", "%09")
    assert by_index[9] == ""  # the blank line
    # The layout: one directory per synset, nothing else at the top but the outputs.
    top = sorted(p.name for p in dest.iterdir())
    assert top == sorted([".s3sync", "captions.json", "failures.tsv", FISH, DOG, OTHER])
    assert not list(dest.rglob("etc_1*"))


def test_a_rerun_fetches_nothing_and_changes_nothing(imagenet, tmp_path: Path) -> None:
    net, urls = imagenet
    dest = tmp_path / "imagenet"
    build_imagenet(dest, urls=str(urls), settings=SETTINGS)
    before = (dest / "captions.json").read_bytes(), (dest / "failures.tsv").read_bytes()
    asked = len(net.server.requests)
    again = build_imagenet(dest, urls=str(urls), settings=SETTINGS)
    assert len(net.server.requests) == asked
    assert (again.crawl.stored, again.crawl.failed_total, again.crawl.skipped) == (0, 0, len(net.lines))
    assert again.bad_lines == before_bad(net)
    doc = json.loads((dest / "captions.json").read_text())
    old = json.loads(before[0])
    del doc["info"]["date_created"], old["info"]["date_created"]
    assert doc == old and (dest / "failures.tsv").read_bytes() == before[1]
    # Without --words, an image's caption is its WNID.
    assert {a["caption"] for a in doc["annotations"]} == {FISH, DOG, OTHER}


def before_bad(net: ImageNet) -> int:
    return net.expect.count(REASON_BAD_LINE)


def test_wnids_keep_only_those_synsets_within_first_and_count(imagenet, tmp_path: Path) -> None:
    net, urls = imagenet
    wnids = tmp_path / "ilsvrc.txt"
    wnids.write_text(f"# the classes\n{DOG} English springer\n\n{FISH}\n")
    dest = tmp_path / "subset"
    first, count = 3, len(net.lines) - 4  # from the 404 to just before the last line
    built = build_imagenet(dest, urls=str(urls), wnids=str(wnids), first=first, count=count, settings=SETTINGS)
    kept = [i for i in range(first, first + count)
            if not net.lines[i].startswith(OTHER.encode())]
    assert built.crawl.requested == len(kept)
    assert built.synsets == 2
    doc, failures = load(dest)
    assert {im["id"] for im in doc["images"]} | {int(f[0]) for f in failures} == set(kept)
    assert not (dest / OTHER).exists()
    assert not net.server.requests_for("img/other-1.jpg") and not net.server.requests_for("img/dog-8.jpg")
    # The unreadable synset line (b"\xff\xfe_1") is reported whatever --wnids says.
    assert net.expect.index(REASON_BAD_LINE, 12) in {int(f[0]) for f in failures}


def test_a_synset_past_the_directory_limit_gets_sub_directories(tmp_path: Path, http_server) -> None:
    root = tmp_path / "www"
    root.mkdir()
    server = http_server(root)
    lines = []
    for n in (0, 1, 2, 3, 7):
        (root / f"{n}.jpg").write_bytes(make_jpeg(20, 20, seed=n))
        lines.append(f"{FISH}_{n}\t{server.url_of(f'{n}.jpg')}")
    lines.append(f"{DOG}_9\t{server.url_of('0.jpg')}")
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join(lines))  # no newline after the last line
    dest = tmp_path / "d"
    built = build_imagenet(dest, urls=str(urls), settings=SETTINGS, per_dir=2, first=1)
    assert built.split_synsets == (FISH,) and built.lines == 6 and built.crawl.stored == 5
    names = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg"))
    assert names == [f"{FISH}/0000/{FISH}_1.jpg", f"{FISH}/0001/{FISH}_2.jpg", f"{FISH}/0001/{FISH}_3.jpg",
                     f"{FISH}/0003/{FISH}_7.jpg", f"{DOG}/{DOG}_9.jpg"]
    # Decided by the whole list, not the selection: line 0 built later lands beside them.
    build_imagenet(dest, urls=str(urls), settings=SETTINGS, per_dir=2, count=1)
    assert (dest / FISH / "0000" / f"{FISH}_0.jpg").is_file()
    doc, _ = load(dest)
    assert len(doc["images"]) == 6


def test_lists_and_words_by_url_and_bad_inputs(imagenet, tmp_path: Path) -> None:
    net, urls = imagenet
    (urls.parent / "www" / "fall11_urls.txt").write_bytes(net.raw)
    dest = tmp_path / "d"
    built = build_imagenet(dest, urls=net.server.url_of("fall11_urls.txt"), words=net.server.url_of("words.txt"),
                           count=3, settings=SETTINGS)
    assert built.crawl.stored == 3 and built.lines == len(net.lines)
    doc, _ = load(dest)
    assert {a["caption"] for a in doc["annotations"]} == {"tench, Tinca tinca"}
    with pytest.raises(BuildError, match="no such file"):
        build_imagenet(tmp_path / "e", urls=str(tmp_path / "nope.txt"))
    with pytest.raises(BuildError, match="HTTP 404"):
        build_imagenet(tmp_path / "e", urls=net.server.url_of("missing.txt"), settings=SETTINGS)
    with pytest.raises(UsageError, match="past the end"):
        build_imagenet(tmp_path / "e", urls=str(urls), first=len(net.lines))
    bad = tmp_path / "bad-wnids.txt"
    bad.write_text(f"{FISH}\ntench\n")
    with pytest.raises(BuildError, match="line 2: 'tench' is not a WordNet id"):
        build_imagenet(tmp_path / "e", urls=str(urls), wnids=str(bad))
    words = tmp_path / "words.txt"
    words.write_text("not words\n")
    with pytest.raises(BuildError, match="no 'WNID<TAB>words' line"):
        build_imagenet(tmp_path / "e", urls=str(urls), words=str(words))


def test_parse_line_scan_and_stems(tmp_path: Path) -> None:
    assert parse_line(b"n00004475_6590\thttp://farm4.static.flickr.com/a.jpg\r\n") == (
        "n00004475", "6590", "http://farm4.static.flickr.com/a.jpg")
    assert parse_line("n00004475_1\thttp://h/\u00e9t\u00e9.jpg\n".encode()) == ("n00004475", "1", "http://h/\u00e9t\u00e9.jpg")
    for raw in (b"n00004475_1\thttp://h/\xe9.jpg\n", b"n00004475_1 http://h/a.jpg", b"n0000447_1\thttp://h/a",
                b"n00004475_\thttp://h/a", b"n00004475_1\t\n", b"../n00004475_1\thttp://h/a", b"\n"):
        assert parse_line(raw) is None, raw
    assert image_stem(FISH, "12345", 10_000) == f"{FISH}/{FISH}_12345"
    assert image_stem(FISH, "12345", 10_001) == f"{FISH}/0001/{FISH}_12345"
    assert parse_line(b" n00004475_1\thttp://h/a.jpg") is None  # so _synset_of and parse_line agree
    path = tmp_path / "l.txt"
    path.write_bytes(b"n00000001_1\tu\nn00000001_2\tu\n\xff\nn00000002_1\tu\nn00000001_2\tv\nn00000002_1\tw\n"
                     b"n00000002_3\tx\nn00000002_3\ty\nn00000001_9\t\xff\nn00000001_9\tz")
    s = scan(path, "l.txt")
    # Lines 4 and 5 repeat names of earlier runs of their synsets (scattered), line 7 of its own
    # run; line 8 is bad (not UTF-8), so line 9 is the first valid n00000001_9.
    assert (s.lines, s.per_synset, s.duplicates) == (10, {"n00000001": 5, "n00000002": 4}, {4, 5, 7})
    assert count_selected(path, "l.txt", 1, 4, frozenset({b"n00000002"})) == 2  # line 2 (no synset) and 3
    assert count_selected(path, "l.txt", 8, None, None) == 2
    wnids = tmp_path / "w.txt"
    wnids.write_text("n00000001\n")
    assert read_wnids(wnids, "w.txt") == {"n00000001"}


def test_the_list_inside_its_tgz_archive(imagenet, tmp_path: Path) -> None:
    net, urls = imagenet
    tgz = urls.parent / "www" / "imagenet_fall11_urls.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        info = tarfile.TarInfo("fall11_urls.txt")
        info.size = len(net.raw)
        tf.addfile(info, io.BytesIO(net.raw))
    dest = tmp_path / "d"
    built = build_imagenet(dest, urls=net.server.url_of(tgz.name), count=2, settings=SETTINGS)
    assert (built.lines, built.crawl.stored) == (len(net.lines), 2)
    asked = len(net.server.requests_for(tgz.name))
    build_imagenet(dest, urls=net.server.url_of(tgz.name), count=3, settings=SETTINGS)
    assert len(net.server.requests_for(tgz.name)) == asked, "downloaded and unpacked once"
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(BuildError, match="holds no fall11_urls.txt"):
        build_imagenet(tmp_path / "e", urls=str(empty))
    (tmp_path / "junk.tgz").write_bytes(b"not a tar")
    with pytest.raises(BuildError, match="not a readable tar archive"):
        build_imagenet(tmp_path / "e2", urls=str(tmp_path / "junk.tgz"))


def test_a_duplicate_is_one_whatever_the_selection_and_the_scan_is_kept(tmp_path: Path, http_server) -> None:
    root = tmp_path / "www"
    root.mkdir()
    server = http_server(root)
    for n in range(3):
        (root / f"{n}.jpg").write_bytes(make_jpeg(20, 20, seed=n))
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{FISH}_1\t{server.url_of('0.jpg')}\n{FISH}_2\t{server.url_of('1.jpg')}\n"
                    f"{FISH}_1\t{server.url_of('2.jpg')}\n")
    dest = tmp_path / "d"
    build_imagenet(dest, urls=str(urls), count=2, settings=SETTINGS)
    scanned = dest / ".s3sync" / "sources" / SCAN_NAME
    assert json.loads(scanned.read_text())["duplicates"] == [2]
    second = build_imagenet(dest, urls=str(urls), first=2, settings=SETTINGS)
    assert second.crawl.failed == {REASON_DUPLICATE: 1}
    assert not server.requests_for("2.jpg")
    doc, failures = load(dest)  # the check passes: no file_name twice
    assert [im["file_name"] for im in doc["images"]] == [f"{FISH}/{FISH}_1.jpg", f"{FISH}/{FISH}_2.jpg"]
    assert failures == [["2", server.url_of("2.jpg"), REASON_DUPLICATE]]
    # A changed list is scanned again (the kept scan names its file, size and mtime).
    urls.write_text(urls.read_text() + f"{FISH}_2\t{server.url_of('2.jpg')}\n")
    third = build_imagenet(dest, urls=str(urls), first=3, settings=SETTINGS)
    assert third.lines == 4 and third.crawl.failed == {REASON_DUPLICATE: 1}
    assert json.loads(scanned.read_text())["duplicates"] == [2, 3]
