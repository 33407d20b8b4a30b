"""``s3sync build imagenet`` as a command: kill -9 mid-crawl then the same command again (no
URL stored or failed for good is asked again, the tree equals an uninterrupted build's), and
its summary / JSON document. The shared machinery (journal, orphans, Ctrl-C) is covered by
test_build_sbu_cli.py, whose helpers this reuses."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from httpserver import Fault
from test_build_sbu_cli import cli, finish, gets, journal_lines, settle, tree, wait_for

from s3sync.builders.imagenet import build_imagenet
from s3sync.crawl import CrawlSettings
from s3sync.images import ImageInfo, check_image, make_jpeg

SYNSETS = ("n01440764", "n01443537", "n01484850")
N_GOOD = 120


@pytest.fixture
def slow_imagenet(tmp_path: Path, http_server):
    """N_GOOD photos over three synsets (the first request of each stalls 50 ms) among 404s
    and bad lines; returns (server, fall11_urls.txt, words.txt)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http_server(root)
    lines: list[bytes] = []
    for i in range(N_GOOD):
        wnid = SYNSETS[i * len(SYNSETS) // N_GOOD]
        (root / f"{i}.jpg").write_bytes(make_jpeg(20 + i % 9, 20 + i % 4, seed=i))
        server.fault(f"{i}.jpg", Fault(stall_s=0.05))
        lines.append(f"{wnid}_{1000 + i}\t{server.url_of(f'{i}.jpg')}".encode())
        if i % 10 == 3:
            lines.append(f"{wnid}_{5000 + i}\t{server.url_of(f'gone-{i}.jpg')}".encode())
        if i % 30 == 7:
            lines.append(f"{wnid}_{6000 + i}\t{server.url}/caf\xe9-{i}.jpg".encode("latin-1"))
    urls, words = tmp_path / "fall11_urls.txt", tmp_path / "words.txt"
    urls.write_bytes(b"\n".join(lines) + b"\n")
    words.write_text("".join(f"{w}\twords of {w}\n" for w in SYNSETS))
    return server, urls, words


def stored(dest: Path) -> list[Path]:
    return [p for w in SYNSETS if (dest / w).is_dir() for p in (dest / w).rglob("*.jpg")]


def test_kill_9_mid_crawl_then_rerun_fetches_nothing_twice(slow_imagenet, tmp_path: Path) -> None:
    server, urls, words = slow_imagenet
    dest = tmp_path / "imagenet"
    args = ("build", "imagenet", dest, "--urls", urls, "--words", words, "--threads", "4", "--timeout", "5")
    proc = cli(*args)
    wait_for(lambda: len(journal_lines(dest)) >= 20, proc, "20 journal lines")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    settle(server)
    asked_before = len(gets(server))
    records = journal_lines(dest)
    lines = urls.read_bytes().splitlines()
    assert 20 <= len(records) < len(lines), "the kill must land mid-crawl"
    assert not (dest / "captions.json").exists()
    done = {r["url"] for r in records if "file" in r or r.get("permanent")}
    journaled = {r["file"] for r in records if "file" in r}
    orphans = {p.relative_to(dest).as_posix() for p in stored(dest)
               if p.relative_to(dest).as_posix() not in journaled and isinstance(check_image(p.read_bytes()), ImageInfo)}

    code, out, err = finish(cli(*args, "--json"))
    assert code == 0, err
    doc = json.loads(out)
    again = {server.url + path for path in gets(server)[asked_before:]}
    assert again.isdisjoint(done), sorted(again & done)[:5]
    orphan_urls = {server.url_of(f"{int(name.rsplit('_', 1)[1].split('.')[0]) - 1000}.jpg") for name in orphans}
    assert again.isdisjoint(orphan_urls)
    assert doc["recovered"] == len(orphans)
    assert doc["skipped"] == len({r["index"] for r in records if "file" in r or r.get("permanent")})

    ref = tmp_path / "ref"
    build_imagenet(ref, urls=str(urls), words=str(words), settings=CrawlSettings(threads=4))
    assert tree(dest) == tree(ref)
    assert doc["images"] == N_GOOD and doc["bad_lines"] == 4 and doc["synsets"] == 3
    assert doc["failures"] == len(lines) - N_GOOD


def test_the_summary_and_the_json_document(tmp_path: Path, http_server) -> None:
    root = tmp_path / "www"
    root.mkdir()
    server = http_server(root)
    (root / "a.jpg").write_bytes(make_jpeg(30, 20))
    urls = tmp_path / "u.txt"
    urls.write_bytes(f"n00000001_1\t{server.url_of('a.jpg')}\nn00000001_2\t{server.url_of('gone.jpg')}\n"
                     "n00000002_1\thttp://h/\xe9.jpg\n".encode("latin-1"))
    code, out, err = finish(cli("build", "imagenet", tmp_path / "d", "--urls", urls))
    assert code == 0, err
    assert out == ""
    assert "1 image stored, 2 failed (bad line: 1, http 404: 1) of 3 lines selected" in err
    assert "1 bad line skipped (not UTF-8 or not WNID_N<TAB>URL; 0-based line 2)" in err
    assert "yield 33.3%" in err
    assert (tmp_path / "d" / "n00000001" / "n00000001_1.jpg").is_file()
    code, out, err = finish(cli("build", "imagenet", tmp_path / "d", "--urls", urls, "--json"))
    doc = json.loads(out)
    assert (doc["dataset"], doc["skipped"], doc["images"], doc["failures"], doc["bad_lines"],
            doc["bad_line_numbers"]) == ("imagenet", 3, 1, 2, 1, [2])
    code, _, err = finish(cli("build", "imagenet", tmp_path / "d"))
    assert code == 2 and "--urls" in err and "Traceback" not in err
    code, _, err = finish(cli("build", "imagenet", tmp_path / "d", "--urls", tmp_path / "none.txt"))
    assert code != 0 and "none.txt: no such file" in err and "Traceback" not in err
