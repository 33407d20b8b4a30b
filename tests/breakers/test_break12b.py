"""Adversarial tests of ``s3sync build sbu`` (crawl.py, images.py, builders/listcrawl.py,
builders/sbu.py, cli/build_sbu.py), issue 12 section 2.

Each test marked ``xfail(strict=True)`` is a finding: it states what should happen and fails
on the code as it is. The unmarked ones are attacks that held up (kept as regression tests).

Some attacks need answers that tests/httpserver.py cannot give (a status line or headers
sent slowly, HTTP/1.0 without Content-Length, gzip bodies): ``RawServer`` below is a plain
socket server on loopback whose ``handler(conn, request_bytes)`` writes whatever it wants.
Hang tests bound the fetch with a generous join timeout (many times the crawler's own
deadline) so that a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

import s3sync
from s3sync.builders.listcrawl import JOURNAL_NAME, META_DIR
from s3sync.builders.sbu import build_sbu
from s3sync.crawl import Cancelled, Crawler, CrawlSettings, Failed, Fetched
from s3sync.images import ImageInfo, Rejected, check_image, make_jpeg

PACKAGE_PARENT = str(Path(s3sync.__file__).resolve().parents[1])
FAST = CrawlSettings(threads=2, timeout_s=0.5, deadline_s=1.5, retries=1, backoff_s=0.01, backoff_max_s=0.05)
HANG_BOUND_S = 5.0  # more than three times FAST's deadline: a fetch still running then is held past its bound


class RawServer:
    """A loopback TCP server; ``handler(conn, request)`` answers each connection by hand."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = threading.Event()
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                block = conn.recv(4096)
                if not block:
                    return
                data += block
            self.requests.append(data)
            self.handler(conn, data, self.stopped)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def raw():
    servers: list[RawServer] = []

    def start(handler) -> RawServer:
        s = RawServer(handler)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def trickle(conn: socket.socket, data: bytes, every_s: float, stopped: threading.Event) -> None:
    """Send ``data`` one byte each ``every_s`` seconds (well inside the read timeout)."""
    for i in range(len(data)):
        if stopped.is_set():
            return
        conn.sendall(data[i: i + 1])
        time.sleep(every_s)


def fetch_bounded(url: str, settings: CrawlSettings = FAST):
    """``Crawler.fetch(url)`` on a thread; returns (result or None if still running, seconds)."""
    crawler = Crawler(settings)
    out: list = []
    t0 = time.monotonic()
    def run() -> None:
        try:
            out.append(crawler.fetch(url))
        except Cancelled:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG_BOUND_S)
    crawler.stop.set()
    return (out[0] if out else None), time.monotonic() - t0


# --- hangs: a URL that holds a thread far past the per-URL bound -----------------------------------

def test_headers_trickled_one_byte_at_a_time_stop_at_the_deadline(raw) -> None:
    def handler(conn, request, stopped):
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        trickle(conn, b"a" * 100_000, 0.1, stopped)

    server = raw(handler)
    got, _ = fetch_bounded(server.url + "/a.jpg")
    assert got is not None, f"fetch still running {HANG_BOUND_S}s after start (deadline {FAST.deadline_s}s)"
    assert isinstance(got, Failed) and got.reason == "timeout"


def test_a_404_whose_short_body_trickles_stops_at_the_deadline(raw) -> None:
    def handler(conn, request, stopped):
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 60000\r\n\r\n")
        trickle(conn, b"x" * 60_000, 0.1, stopped)

    server = raw(handler)
    got, _ = fetch_bounded(server.url + "/a.jpg")
    assert got is not None, f"fetch still running {HANG_BOUND_S}s after start (deadline {FAST.deadline_s}s)"
    assert isinstance(got, Failed) and got.reason == "http 404"


def test_a_302_whose_short_body_trickles_stops_at_the_deadline(raw) -> None:
    def handler(conn, request, stopped):
        if b"GET /next" in request:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 60000\r\n\r\n")
        trickle(conn, b"x" * 60_000, 0.1, stopped)

    server = raw(handler)
    got, _ = fetch_bounded(server.url + "/a.jpg")
    assert got is not None, f"fetch still running {HANG_BOUND_S}s after start (deadline {FAST.deadline_s}s)"


def test_a_gzip_body_that_decodes_to_nothing_while_it_trickles_stops_at_the_deadline(raw) -> None:
    def handler(conn, request, stopped):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n")
        # gzip member header with FCOMMENT set: the comment (zero-terminated) never ends
        conn.sendall(b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\x03")
        trickle(conn, b"c" * 100_000, 0.1, stopped)

    server = raw(handler)
    got, _ = fetch_bounded(server.url + "/a.jpg")
    assert got is not None, f"fetch still running {HANG_BOUND_S}s after start (deadline {FAST.deadline_s}s)"
    assert isinstance(got, Failed)


def test_a_body_that_trickles_stops_at_the_deadline(raw) -> None:
    """Held up: a 200 body trickled one byte per 0.1 s is cut by the deadline."""
    def handler(conn, request, stopped):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        trickle(conn, b"x" * 100_000, 0.1, stopped)

    server = raw(handler)
    got, _ = fetch_bounded(server.url + "/a.jpg")
    assert isinstance(got, Failed) and got.reason == "timeout"


def test_a_server_that_accepts_and_never_answers_times_out(raw) -> None:
    """Held up."""
    def handler(conn, request, stopped):
        stopped.wait(HANG_BOUND_S)

    server = raw(handler)
    got, _ = fetch_bounded(server.url + "/a.jpg")
    assert isinstance(got, Failed) and got.reason == "timeout" and not got.permanent


# --- images kept that are not whole, reasons that say the wrong thing -----------------------------

def _animated_gif(frames: int = 3) -> bytes:
    from PIL import Image  # tests may use Pillow to make corpora

    ims = [Image.effect_noise((64, 48), 40 + 10 * i).convert("P") for i in range(frames)]
    out = io.BytesIO()
    ims[0].save(out, "GIF", save_all=True, append_images=ims[1:])
    return out.getvalue()


def test_an_animated_gif_cut_in_half_is_refused() -> None:
    gif = _animated_gif()
    assert isinstance(check_image(gif), ImageInfo)
    assert check_image(gif[: len(gif) // 2]) == Rejected("truncated")


def test_a_multi_page_tiff_cut_is_refused() -> None:
    from PIL import Image

    im = Image.effect_noise((64, 48), 40).convert("RGB")
    out = io.BytesIO()
    im.save(out, "TIFF", save_all=True, append_images=[im.rotate(90), im.rotate(180)])
    tif = out.getvalue()
    assert isinstance(check_image(tif), ImageInfo)
    assert check_image(tif[: len(tif) * 8 // 10]) == Rejected("truncated")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_too_large_not_not_an_image() -> None:
    assert check_image(_png_header_only(20_000, 20_000)) == Rejected("too large")


def test_odd_but_valid_images_are_kept() -> None:
    """Held up: CMYK JPEG, progressive JPEG, 16-bit PNG, WebP, TIFF, animated WebP; a cut
    progressive JPEG, WebP, TIFF, BMP are refused."""
    from PIL import Image

    noise = Image.effect_noise((64, 48), 40).convert("RGB")

    def save(im, fmt, **kw) -> bytes:
        out = io.BytesIO()
        im.save(out, fmt, **kw)
        return out.getvalue()

    good = [save(noise.convert("CMYK"), "JPEG"), save(noise, "JPEG", progressive=True),
            save(Image.new("I;16", (30, 20), 1000), "PNG"), save(noise, "WEBP"), save(noise, "TIFF"),
            save(noise, "WEBP", save_all=True, append_images=[noise.rotate(90)])]
    for body in good:
        assert isinstance(check_image(body), ImageInfo)
    for body in good[1:2] + good[3:5] + [save(noise, "BMP")]:
        assert check_image(body[: len(body) // 2]) == Rejected("truncated")


# --- the builder: captions attached to the wrong image, outputs that disagree with DIR -------------

@pytest.fixture
def photos(tmp_path: Path, http_server):
    """A loopback site with 4 JPEGs p/0.jpg..p/3.jpg and a PNG p/png.png; returns the server."""
    root = tmp_path / "www"
    (root / "p").mkdir(parents=True)
    for i in range(4):
        (root / "p" / f"{i}.jpg").write_bytes(make_jpeg(30 + i, 20 + i))
    from s3sync.images import make_png

    (root / "p" / "png.png").write_bytes(make_png(25, 25))
    server = http_server(root)
    server.root_dir = root
    return server


def _lists(directory: Path, urls: list[str], caps: list[str] | None = None) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    u, c = directory / "urls.txt", directory / "captions.txt"
    u.write_text("\n".join(urls) + "\n", encoding="utf-8")
    c.write_text("\n".join(caps or [f"caption {i}" for i in range(len(urls))]) + "\n", encoding="utf-8")
    return u, c


def _on_disk_images(dest: Path) -> set[str]:
    return {p.relative_to(dest).as_posix() for p in (dest / "images").rglob("*") if p.is_file()}


def _doc(dest: Path) -> dict:
    return json.loads((dest / "captions.json").read_bytes())


def test_list_urls_with_the_same_file_name_keep_their_own_contents(photos, tmp_path: Path) -> None:
    www = photos.root_dir
    (www / "u").mkdir()
    (www / "c").mkdir()
    (www / "u" / "list.txt").write_text("\n".join(photos.url_of(f"p/{i}.jpg") for i in range(3)) + "\n")
    (www / "c" / "list.txt").write_text("a red car\na blue sky\na green tree\n")
    dest = tmp_path / "sbu"
    build_sbu(dest, urls=photos.url_of("u/list.txt"), captions=photos.url_of("c/list.txt"), settings=FAST)
    doc = _doc(dest)
    assert [a["caption"] for a in doc["annotations"]] == ["a red car", "a blue sky", "a green tree"]


def test_a_different_list_url_is_not_served_from_an_old_download(photos, tmp_path: Path) -> None:
    www = photos.root_dir
    (www / "v1").mkdir()
    (www / "v2").mkdir()
    (www / "v1" / "urls.txt").write_text(photos.url_of("p/0.jpg") + "\n")
    (www / "v2" / "urls.txt").write_text(photos.url_of("p/1.jpg") + "\n")
    (www / "caps.txt").write_text("one\n")
    dest = tmp_path / "sbu"
    build_sbu(dest, urls=photos.url_of("v1/urls.txt"), captions=photos.url_of("caps.txt"), settings=FAST)
    build_sbu(dest, urls=photos.url_of("v2/urls.txt"), captions=photos.url_of("caps.txt"), settings=FAST)
    assert _doc(dest)["images"][0]["flickr_url"] == photos.url_of("p/1.jpg")


def test_a_line_whose_new_url_fails_leaves_no_stale_image(photos, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    urls, caps = _lists(tmp_path / "l1", [photos.url_of(f"p/{i}.jpg") for i in range(3)])
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    urls, caps = _lists(tmp_path / "l2", [photos.url_of("p/0.jpg"), photos.url_of("p/gone.jpg"),
                                           photos.url_of("p/2.jpg")])
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    doc = _doc(dest)
    assert {im["file_name"] for im in doc["images"]} == _on_disk_images(dest)


def test_a_line_whose_new_url_has_another_format_leaves_no_stale_image(photos, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    urls, caps = _lists(tmp_path / "l1", [photos.url_of(f"p/{i}.jpg") for i in range(3)])
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    urls, caps = _lists(tmp_path / "l2", [photos.url_of("p/0.jpg"), photos.url_of("p/png.png"),
                                           photos.url_of("p/2.jpg")])
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    doc = _doc(dest)
    assert {im["file_name"] for im in doc["images"]} == _on_disk_images(dest)


def test_a_utf8_bom_does_not_cost_line_0(photos, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    urls, caps = _lists(tmp_path, [photos.url_of(f"p/{i}.jpg") for i in range(2)])
    urls.write_bytes(b"\xef\xbb\xbf" + urls.read_bytes())
    caps.write_bytes(b"\xef\xbb\xbf" + caps.read_bytes())
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    doc = _doc(dest)
    assert [im["id"] for im in doc["images"]] == [0, 1]
    assert doc["annotations"][0]["caption"] == "caption 0"


def test_crlf_blank_lines_and_trailing_blanks_keep_lines_aligned(photos, tmp_path: Path) -> None:
    """Held up: CRLF endings, a blank URL line (failed as 'bad url', still counted), trailing
    blanks, invalid UTF-8 in a caption, no final newline."""
    dest = tmp_path / "sbu"
    (tmp_path / "urls.txt").write_bytes(
        f"{photos.url_of('p/0.jpg')}  \r\n\r\n{photos.url_of('p/2.jpg')}\t\r\n{photos.url_of('p/3.jpg')}".encode())
    (tmp_path / "caps.txt").write_bytes(b"zero \r\none\r\ntw\xffo\r\nthree")
    build_sbu(dest, urls=str(tmp_path / "urls.txt"), captions=str(tmp_path / "caps.txt"), settings=FAST)
    doc = _doc(dest)
    assert [(a["image_id"], a["caption"]) for a in doc["annotations"]] == [(0, "zero"), (2, "tw\ufffdo"), (3, "three")]
    assert (dest / "failures.tsv").read_text().splitlines()[1:] == ["1\t\tbad url"]
    assert {im["file_name"] for im in doc["images"]} == _on_disk_images(dest)


# --- bodies on the wire: HTTP/1.0 without a length, chunked, gzip, empty ----------------------------

JPEG = make_jpeg(64, 48)


def test_an_unsized_body_cut_by_the_network_is_not_a_permanent_failure(raw, tmp_path: Path) -> None:
    served: list[int] = []

    def handler(conn, request, stopped):
        served.append(1)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n\r\n")
        conn.sendall(JPEG if len(served) > 1 else JPEG[: len(JPEG) // 2])

    server = raw(handler)
    urls, caps = _lists(tmp_path, [server.url + "/a.jpg"])
    dest = tmp_path / "sbu"
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST, retry_failed=True)
    assert len(_doc(dest)["images"]) == 1


def test_gzip_and_deflate_encoded_images_are_stored_decoded(raw, tmp_path: Path) -> None:
    """Held up: Content-Encoding gzip or deflate is undone; the stored bytes are the image."""
    def handler(conn, request, stopped):
        if b"/gz" in request:
            body, enc = gzip.compress(JPEG), b"gzip"
        else:
            body, enc = zlib.compress(JPEG), b"deflate"
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Encoding: " + enc
                     + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    server = raw(handler)
    for path in ("/gz.jpg", "/deflate.jpg"):
        got = Crawler(FAST).fetch(server.url + path)
        assert isinstance(got, Fetched) and got.data == JPEG


def test_a_chunked_body_cut_mid_chunk_is_transient(raw) -> None:
    """Held up: a chunked body cut inside a chunk is a connection failure (retried, not permanent)."""
    def handler(conn, request, stopped):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + f"{len(JPEG):x}\r\n".encode() + JPEG[:1000])

    server = raw(handler)
    got = Crawler(FAST).fetch(server.url + "/a.jpg")
    assert isinstance(got, Failed) and not got.permanent


def test_a_gzip_body_cut_short_is_not_kept(raw) -> None:
    """Held up: a gzip stream cut short (unsized, FIN) decodes to a cut JPEG, which check_image refuses."""
    def handler(conn, request, stopped):
        body = gzip.compress(JPEG)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + body[: len(body) * 2 // 3])

    server = raw(handler)
    got = Crawler(FAST).fetch(server.url + "/a.jpg")
    assert isinstance(got, Failed) or not isinstance(check_image(got.data), ImageInfo)


# --- resume: kill -9 several times in a row, planted files, a journal edited by hand ----------------

def _cli(*args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.Popen([sys.executable, "-m", "s3sync", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL)


def _tree(dest: Path) -> dict[str, bytes]:
    files = {}
    for p in sorted(dest.rglob("*")):
        rel = p.relative_to(dest).as_posix()
        if p.is_file() and not rel.startswith(META_DIR + "/"):
            data = p.read_bytes()
            if rel == "captions.json":
                doc = json.loads(data)
                del doc["info"]["date_created"]
                data = json.dumps(doc).encode()
            files[rel] = data
    return files


def _journal(dest: Path) -> list[dict]:
    try:
        data = (dest / META_DIR / JOURNAL_NAME).read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def test_kill_9_five_times_at_random_moments_then_rerun(tmp_path: Path, http_server) -> None:
    """Held up: five kill -9 at random moments (startup included), then a last run: DIR equals
    an uninterrupted build's, and no URL whose image was in place at a kill is asked again; then
    complete runs over journals cut back at random."""
    import random
    import signal

    rng = random.Random(12)
    root = tmp_path / "www"
    (root / "p").mkdir(parents=True)
    server = http_server(root)
    from httpserver import Fault

    lines = []
    for i in range(120):
        (root / "p" / f"{i}.jpg").write_bytes(make_jpeg(20 + i % 7, 20 + i % 3))
        server.fault(f"p/{i}.jpg", Fault(stall_s=0.03))
        lines.append(server.url_of(f"p/{i}.jpg"))
        if i % 9 == 4:
            lines.append(server.url_of(f"p/gone-{i}.jpg"))
    urls, caps = _lists(tmp_path / "lists", lines)
    dest = tmp_path / "sbu"
    args = ("build", "sbu", dest, "--urls", urls, "--captions", caps, "--threads", "6", "--timeout", "5")

    def gets() -> list[str]:
        return [server.url + r.path for r in list(server.requests) if r.method == "GET"]

    def in_place() -> set[str]:
        return {lines[int(p.stem)] for p in (dest / "images").rglob("*.jpg")} if (dest / "images").is_dir() else set()

    # Round 1: five kills in a row, each run started on what the last one left.
    for _ in range(5):
        stored, asked = in_place(), len(gets())
        wait = rng.randint(0, 25)
        proc = _cli(*args)
        while len(gets()) < asked + wait and proc.poll() is None:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.3)
        again = set(gets()[asked:])
        assert again.isdisjoint(stored), sorted(again & stored)[:3]
    # Round 2: complete runs over a journal cut back at random (images in place, lines lost).
    for _ in range(3):
        stored, asked = in_place(), len(gets())
        proc = _cli(*args)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        again = set(gets()[asked:])
        assert again.isdisjoint(stored), sorted(again & stored)[:3]
        (dest / "captions.json").unlink()
        records = _journal(dest)
        keep = rng.randint(0, len(records))
        journal = dest / META_DIR / JOURNAL_NAME
        journal.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records[:keep]))
    proc = _cli(*args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    ref = tmp_path / "ref"
    build_sbu(ref, urls=str(urls), captions=str(caps), settings=CrawlSettings(threads=4))
    assert _tree(dest) == _tree(ref)


def test_an_image_planted_in_a_fresh_dir_is_not_adopted(photos, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    stranger = make_jpeg(99, 77)
    (dest / "images" / "0000").mkdir(parents=True)
    (dest / "images" / "0000" / "0000001.jpg").write_bytes(stranger)
    urls, caps = _lists(tmp_path, [photos.url_of(f"p/{i}.jpg") for i in range(3)])
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    assert (dest / "images/0000/0000001.jpg").read_bytes() == (photos.root_dir / "p/1.jpg").read_bytes()


def test_a_hand_edited_journal_line_is_not_an_internal_error(photos, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    urls, caps = _lists(tmp_path, [photos.url_of(f"p/{i}.jpg") for i in range(3)])
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    with open(dest / META_DIR / JOURNAL_NAME, "a") as f:
        f.write(json.dumps({"index": 1, "url": photos.url_of("p/1.jpg")}) + "\n")
    proc = _cli("build", "sbu", dest, "--urls", urls, "--captions", caps)
    _, err = proc.communicate(timeout=60)
    assert "internal error" not in err.decode(), err.decode()


def test_an_absurd_timeout_is_a_usage_error(photos, tmp_path: Path) -> None:
    urls, caps = _lists(tmp_path, [photos.url_of("p/0.jpg")])
    proc = _cli("build", "sbu", tmp_path / "sbu", "--urls", urls, "--captions", caps, "--timeout", "1e12")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 2) and "internal error" not in err.decode(), err.decode()


def test_a_journal_that_cannot_grow_is_a_one_line_error(tmp_path: Path, http_server) -> None:
    import resource
    import signal

    root = tmp_path / "www"
    root.mkdir()
    server = http_server(root)
    for i in range(80):
        (root / f"{i}.jpg").write_bytes(make_jpeg(16, 16))
    urls, caps = _lists(tmp_path / "lists", [server.url_of(f"{i}.jpg") for i in range(80)])

    def limit() -> None:  # files may not grow past 4 KB: the images fit, the journal does not
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))

    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    proc = subprocess.run([sys.executable, "-m", "s3sync", "build", "sbu", str(tmp_path / "sbu"), "--urls", str(urls),
                           "--captions", str(caps), "--threads", "2"], capture_output=True, env=env,
                          preexec_fn=limit, timeout=60, stdin=subprocess.DEVNULL)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "internal error" not in err and JOURNAL_NAME in err, err


def test_a_symlinked_dir_and_many_threads(photos, tmp_path: Path) -> None:
    """Held up: DIR a symlink to a directory, --threads 64 on 5 URLs, --threads 1; then --count 0."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    urls, caps = _lists(tmp_path, [photos.url_of(f"p/{i}.jpg") for i in range(4)] + [photos.url_of("p/png.png")])
    for threads, dest in ((64, tmp_path / "link"), (1, tmp_path / "one")):
        r = build_sbu(dest, urls=str(urls), captions=str(caps), settings=CrawlSettings(threads=threads, timeout_s=2))
        assert (r.crawl.images, r.crawl.failures) == (5, 0)
    assert _tree(tmp_path / "link") == _tree(tmp_path / "one")
    r = build_sbu(tmp_path / "zero", urls=str(urls), captions=str(caps), count=0, settings=FAST)
    assert (r.crawl.requested, r.crawl.images) == (0, 0) and _doc(tmp_path / "zero")["images"] == []


# --- redirects and URLs ------------------------------------------------------------------------------

def _redirecting(raw, routes: dict[bytes, bytes]):
    """A raw server: a GET of a path in ``routes`` answers 302 with that raw Location bytes;
    a GET of /caf%C3%A9.jpg or /ok.jpg answers the JPEG; anything else 404."""
    def handler(conn, request, stopped):
        path = request.split(b" ", 2)[1]
        if path in routes:
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + routes[path] + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        elif path in (b"/caf%C3%A9.jpg", b"/ok.jpg", b"/a%20b.jpg"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: " + str(len(JPEG)).encode() + b"\r\n\r\n" + JPEG)
        else:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

    return raw(handler)


def test_a_raw_utf8_location_is_followed_as_utf8(raw) -> None:
    server = _redirecting(raw, {b"/a.jpg": "/café.jpg".encode()})
    got = Crawler(FAST).fetch(server.url + "/a.jpg")
    assert isinstance(got, Fetched), got


def test_redirects_to_other_schemes_spaces_and_loops(raw) -> None:
    """Held up: file:// and ftp:// are 'bad url' (permanent, nothing read); a Location with
    a space is quoted; a relative Location above the root is followed; a loop stops at 5."""
    server = _redirecting(raw, {b"/file": b"file:///etc/passwd", b"/ftp": b"ftp://127.0.0.1/x.jpg",
                                b"/space": b"/a b.jpg", b"/loop": b"/loop2", b"/loop2": b"/loop",
                                b"/rel": b"../../ok.jpg"})
    c = Crawler(FAST)
    for path in ("/file", "/ftp"):
        got = c.fetch(server.url + path)
        assert isinstance(got, Failed) and (got.reason, got.permanent) == ("bad url", True)
    assert isinstance(c.fetch(server.url + "/space"), Fetched)
    assert isinstance(c.fetch(server.url + "/rel"), Fetched)
    got = c.fetch(server.url + "/loop")
    assert isinstance(got, Failed) and got.reason == "too many redirects"


def test_odd_urls_in_the_list(raw) -> None:
    """Held up: a fragment is dropped, credentials do not break the request, a bad IPv6
    literal, an out-of-range port and an unencodable host name are 'bad url' without a
    traceback; a .invalid host is a transient connection failure."""
    server = _redirecting(raw, {})
    c = Crawler(FAST)
    port = server.url.rsplit(":", 1)[1]
    assert isinstance(c.fetch(server.url + "/ok.jpg#frag"), Fetched)
    assert isinstance(c.fetch(f"http://user:pw@127.0.0.1:{port}/ok.jpg"), Fetched)
    for bad in ("http://[::1/x.jpg", "http://127.0.0.1:99999/x.jpg", "http://" + "\u00e9" * 70 + ".com/x.jpg",
                "javascript:alert(1)", ""):
        got = c.fetch(bad)
        assert isinstance(got, Failed) and got.reason == "bad url", (bad, got)
    got = c.fetch("http://photos.example.invalid/x.jpg")
    assert isinstance(got, Failed) and (got.reason, got.permanent) == ("connection", False)


# --- a DIR that looks complete while it is not -----------------------------------------------------

class _StopAfter:
    """A progress that sets ``stop`` after ``n`` items are done (an interruption mid-run)."""

    def __init__(self, stop: threading.Event, n: int) -> None:
        self.stop, self.n = stop, n

    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, n: int) -> None:
        if stage == "crawl":
            self.n -= n
            if self.n <= 0:
                self.stop.set()

    def message(self, text: str) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass


def test_an_interrupted_second_selection_leaves_no_complete_looking_captions(photos, tmp_path: Path) -> None:
    from s3sync.errors import Interrupted

    www = photos.root_dir
    for i in range(4, 40):
        (www / "p" / f"{i}.jpg").write_bytes(make_jpeg(20, 20 + i % 5))
    dest = tmp_path / "sbu"
    urls, caps = _lists(tmp_path, [photos.url_of(f"p/{i}.jpg") for i in range(40)])
    build_sbu(dest, urls=str(urls), captions=str(caps), first=0, count=3, settings=FAST)
    stop = threading.Event()
    with pytest.raises(Interrupted):
        build_sbu(dest, urls=str(urls), captions=str(caps), first=3, settings=CrawlSettings(threads=1, timeout_s=2),
                  progress=_StopAfter(stop, 5), stop=stop)
    assert len(_on_disk_images(dest)) > 3
    # Either no captions.json (incomplete), or one that lists every image in DIR.
    if (dest / "captions.json").exists():
        doc = _doc(dest)
        assert {im["file_name"] for im in doc["images"]} == _on_disk_images(dest)
        failed = {int(line.split("\t")[0]) for line in (dest / "failures.tsv").read_text().splitlines()[1:]}
        assert failed.isdisjoint(im["id"] for im in doc["images"])


def test_an_interrupted_retry_leaves_outputs_that_agree_with_dir(tmp_path: Path, http_server) -> None:
    from httpserver import Fault

    from s3sync.errors import Interrupted

    root = tmp_path / "www"
    root.mkdir()
    server = http_server(root)
    for i in range(12):
        (root / f"{i}.jpg").write_bytes(make_jpeg(20, 20))
        server.fault(f"{i}.jpg", *[Fault(status=503)] * 2)  # the first build fails them all (retries=1)
    urls, caps = _lists(tmp_path / "lists", [server.url_of(f"{i}.jpg") for i in range(12)])
    dest = tmp_path / "sbu"
    first = build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    assert first.crawl.failures == 12
    stop = threading.Event()
    with pytest.raises(Interrupted):
        build_sbu(dest, urls=str(urls), captions=str(caps), settings=CrawlSettings(threads=1, timeout_s=2),
                  retry_failed=True, progress=_StopAfter(stop, 3), stop=stop)
    assert _on_disk_images(dest), "the retry stored some images before the interruption"
    if (dest / "captions.json").exists():
        assert {im["file_name"] for im in _doc(dest)["images"]} == _on_disk_images(dest)


def _transient_then_retried(tmp_path: Path, http_server):
    """Run 1 fails 6 URLs transiently (503); run 2 (--retry-failed) stores them; then the
    journal is cut back to run 1's lines: exactly what kill -9 leaves when it lands after
    run 2 renamed its images into place and before its journal batch was flushed."""
    from httpserver import Fault

    root = tmp_path / "www"
    root.mkdir()
    server = http_server(root)
    for i in range(6):
        (root / f"{i}.jpg").write_bytes(make_jpeg(20, 20 + i))
        server.fault(f"{i}.jpg", *[Fault(status=503)] * 2)
    urls, caps = _lists(tmp_path / "lists", [server.url_of(f"{i}.jpg") for i in range(6)])
    dest = tmp_path / "sbu"
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    journal = dest / META_DIR / JOURNAL_NAME
    after_run_1 = journal.read_bytes()
    (dest / "captions.json").unlink()
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST, retry_failed=True)
    journal.write_bytes(after_run_1)  # run 2 "killed" before its batch reached the journal
    (dest / "captions.json").unlink()
    assert len(_on_disk_images(dest)) == 6
    return server, urls, caps, dest


def test_images_of_a_killed_retry_are_not_lost_by_the_next_run(tmp_path: Path, http_server) -> None:
    server, urls, caps, dest = _transient_then_retried(tmp_path, http_server)
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST)
    assert {im["file_name"] for im in _doc(dest)["images"]} == _on_disk_images(dest)
    assert (dest / "failures.tsv").read_text().splitlines()[1:] == []


def test_images_of_a_killed_retry_are_not_fetched_again(tmp_path: Path, http_server) -> None:
    server, urls, caps, dest = _transient_then_retried(tmp_path, http_server)
    asked = len(server.requests)
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=FAST, retry_failed=True)
    assert [r.path for r in server.requests[asked:]] == []


def test_kill_9_during_retry_failed_then_plain_rerun(tmp_path: Path, http_server) -> None:
    import signal

    from httpserver import Fault

    root = tmp_path / "www"
    root.mkdir()
    server = http_server(root)
    n = 40
    for i in range(n):
        (root / f"{i}.jpg").write_bytes(make_jpeg(20, 20 + i % 5))
        server.fault(f"{i}.jpg", *[Fault(status=503)] * 4, Fault(stall_s=0.05))
    urls, caps = _lists(tmp_path / "lists", [server.url_of(f"{i}.jpg") for i in range(n)])
    dest = tmp_path / "sbu"
    args = ("build", "sbu", dest, "--urls", urls, "--captions", caps, "--threads", "2", "--timeout", "5")
    build_sbu(dest, urls=str(urls), captions=str(caps), settings=CrawlSettings(threads=4, retries=3, backoff_s=0.001,
                                                                                backoff_max_s=0.002))
    assert len([r for r in _journal(dest) if "index" in r]) == n and not _on_disk_images(dest)
    proc = _cli(*args, "--retry-failed")
    deadline = time.monotonic() + 30
    while not ((dest / "images").is_dir() and _on_disk_images(dest)) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc = _cli(*args)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert {im["file_name"] for im in _doc(dest)["images"]} == _on_disk_images(dest)


def test_a_corrected_caption_list_replaces_the_old_captions(photos, tmp_path: Path) -> None:
    dest = tmp_path / "sbu"
    urls = [photos.url_of(f"p/{i}.jpg") for i in range(3)]
    u, c = _lists(tmp_path / "wrong", urls, ["a blue sky", "a green tree", "a red car"])  # off by one
    build_sbu(dest, urls=str(u), captions=str(c), settings=FAST)
    u, c = _lists(tmp_path / "right", urls, ["a red car", "a blue sky", "a green tree"])
    build_sbu(dest, urls=str(u), captions=str(c), settings=FAST)
    assert [a["caption"] for a in _doc(dest)["annotations"]] == ["a red car", "a blue sky", "a green tree"]
