"""``s3sync build sbu`` as a command (``python -m s3sync`` in a subprocess): its output, and
``kill -9`` / Ctrl-C in the middle of a crawl, then the same command again.

After a kill the rerun must request no URL that the first run had stored (journal line, or
whole image on disk) or had failed for good; the final directory must equal an
uninterrupted build's. The loopback server's request log is the witness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from httpserver import Fault

import s3sync
from s3sync import captions as coco
from s3sync.builders.listcrawl import JOURNAL_NAME, META_DIR
from s3sync.builders.sbu import build_sbu
from s3sync.crawl import CrawlSettings
from s3sync.images import ImageInfo, check_image, make_jpeg

PACKAGE_PARENT = str(Path(s3sync.__file__).resolve().parents[1])
N_GOOD = 160


def cli(*args: str | Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.Popen([sys.executable, "-m", "s3sync", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, timeout_s: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out.decode(), err.decode()


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"s3sync exited with {proc.returncode} before {what}:\n{proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def site(tmp_path: Path, http_server):
    """A slow Flickr: N_GOOD photos (the first request of each stalls 50 ms) among 404s,
    placeholder redirects and HTML pages, every URL on one line only; returns (server,
    urls.txt, captions.txt)."""
    root = tmp_path / "www"
    (root / "p").mkdir(parents=True)
    server = http_server(root)
    lines = []
    for i in range(N_GOOD):
        (root / "p" / f"{i}.jpg").write_bytes(make_jpeg(20 + i % 9, 20 + i % 4))
        server.fault(f"p/{i}.jpg", Fault(stall_s=0.05))
        lines.append(server.url_of(f"p/{i}.jpg"))
        if i % 10 == 3:
            lines.append(server.url_of(f"p/missing-{i}.jpg"))
        if i % 10 == 6:
            server.fault(f"p/deleted-{i}.jpg", *[Fault(redirect="/photo_unavailable.png")] * 5)
            lines.append(server.url_of(f"p/deleted-{i}.jpg"))
        if i % 20 == 9:
            (root / "p" / f"page-{i}.html").write_bytes(b"<html>gone</html>")
            lines.append(server.url_of(f"p/page-{i}.html"))
    urls, caps = tmp_path / "urls.txt", tmp_path / "caps.txt"
    urls.write_text("\n".join(lines) + "\n")
    caps.write_text("\n".join(f"caption {i}" for i in range(len(lines))) + "\n")
    return server, urls, caps


def tree(dest: Path) -> dict[str, bytes]:
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


def journal_lines(dest: Path) -> list[dict]:
    try:
        data = (dest / META_DIR / JOURNAL_NAME).read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def image_files(dest: Path) -> list[Path]:
    return [p for p in (dest / "images").rglob("*.jpg")] if (dest / "images").is_dir() else []


def gets(server) -> list[str]:
    return [r.path for r in list(server.requests) if r.method == "GET"]


def settle(server, quiet_s: float = 0.3) -> int:
    last, since = len(server.requests), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.05)
        if len(server.requests) != last:
            last, since = len(server.requests), time.monotonic()
    return last


def reference(server, urls: Path, caps: Path, dest: Path) -> dict[str, bytes]:
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=CrawlSettings(threads=4))
    return tree(dest)


def test_kill_9_mid_crawl_then_rerun_fetches_nothing_twice(site, tmp_path: Path) -> None:
    server, urls, caps = site
    dest = tmp_path / "sbu"
    args = ("build", "sbu", dest, "--urls", urls, "--captions", caps, "--threads", "4", "--timeout", "5")
    proc = cli(*args)
    wait_for(lambda: len(journal_lines(dest)) >= 20, proc, "20 journal lines")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    settle(server)
    asked_before = len(gets(server))
    records = journal_lines(dest)
    assert 20 <= len(records) < len(urls.read_text().splitlines()), "the kill must land mid-crawl"
    assert not (dest / "captions.json").exists()
    done = {r["url"] for r in records if "file" in r or r.get("permanent")}
    # Images in place without a journal line (their batch was not flushed): checked, then kept.
    journaled = {r["file"] for r in records if "file" in r}
    lines = urls.read_text().splitlines()
    orphans = {lines[int(p.stem)] for p in image_files(dest)
               if p.relative_to(dest).as_posix() not in journaled and isinstance(check_image(p.read_bytes()), ImageInfo)}

    code, out, err = finish(cli(*args, "--json"))
    assert code == 0, err
    doc = json.loads(out)
    requested_again = {server.url + path for path in gets(server)[asked_before:]}
    assert requested_again.isdisjoint(done | orphans), sorted(requested_again & (done | orphans))[:5]
    assert doc["skipped"] == len({r["index"] for r in records if "file" in r or r.get("permanent")})
    assert doc["recovered"] == len(orphans)
    assert doc["requested"] == doc["lines"] == len(lines)

    assert tree(dest) == reference(server, urls, caps, tmp_path / "ref")
    assert doc["images"] == N_GOOD and doc["failures"] == len(lines) - N_GOOD


def test_ctrl_c_stops_promptly_and_the_rerun_completes(site, tmp_path: Path) -> None:
    server, urls, caps = site
    dest = tmp_path / "sbu"
    args = ("build", "sbu", dest, "--urls", urls, "--captions", caps, "--threads", "4")
    proc = cli(*args)
    wait_for(lambda: len(image_files(dest)) >= 10, proc, "10 images")
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout_s=15)
    assert code == 130, err
    assert "interrupted" in err and "resumes" in err
    assert not (dest / "captions.json").exists()
    records = journal_lines(dest)
    assert records, "the journal is flushed on Ctrl-C"
    assert all((dest / r["file"]).is_file() for r in records if "file" in r)
    code, _, err = finish(cli(*args))
    assert code == 0, err
    assert tree(dest) == reference(server, urls, caps, tmp_path / "ref")


def test_the_summary_and_the_json_document(tmp_path: Path, http_server) -> None:
    root = tmp_path / "www"
    root.mkdir()
    server = http_server(root)
    (root / "a.jpg").write_bytes(make_jpeg(30, 20))
    urls, caps = tmp_path / "u.txt", tmp_path / "c.txt"
    urls.write_text(f"{server.url_of('a.jpg')}\n{server.url_of('gone.jpg')}\n")
    caps.write_text("one\ntwo\n")
    code, out, err = finish(cli("build", "sbu", tmp_path / "d", "--urls", urls, "--captions", caps))
    assert code == 0, err
    assert out == ""
    assert "1 image stored, 1 failed (http 404: 1) of 2 lines" in err
    assert "yield 50.0%" in err
    code, out, err = finish(cli("build", "sbu", tmp_path / "d", "--urls", urls, "--captions", caps, "--json"))
    doc = json.loads(out)
    assert (doc["command"], doc["dataset"], doc["skipped"], doc["images"], doc["failures"]) == ("build", "sbu", 2, 1, 1)
    code, _, err = finish(cli("build", "sbu", tmp_path / "d", "--urls", urls))
    assert code == 2 and "error: give both --urls and --captions" in err
    code, _, err = finish(cli("build"))
    assert code == 2 and "error:" in err and "Traceback" not in err
