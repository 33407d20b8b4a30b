"""The Python API as a user's script calls it (issue 13, section 3), on moto and ``rclone serve s3``.

``import s3sync`` then ``s3sync.publish``, ``ls``, ``pull``, ``verify``: typed results, errors
as ``s3sync.errors`` classes, progress through a callback or a ``Progress`` object, settings
resolved as the CLI resolves them (``env``), and nothing printed (capsys stays empty).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import s3sync
from s3sync.errors import (
    DestinationBusyError,
    DestinationError,
    NotFoundError,
    S3SyncError,
    SourceError,
    UsageError,
)


def make_dataset(root: Path, n: int = 5) -> Path:
    """``n`` small images and a COCO-model captions.json naming them."""
    images, anns = [], []
    for i in range(n):
        rel = f"images/{i:04d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(30_000 + i))
        images.append({"id": i, "file_name": rel, "width": 4, "height": 3})
        anns.append({"id": 100 + i, "image_id": i, "caption": f"photo {i}"})
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


class Recorder:
    """A ``Progress`` object, as a user would write one (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.finished: list[str] = []

    def start(self, stage: str, total: int) -> None:
        with self.lock:
            self.totals[stage] = total

    def advance(self, stage: str, n: int) -> None:
        with self.lock:
            self.done[stage] = self.done.get(stage, 0) + n

    def message(self, text: str) -> None:
        pass

    def finish(self, stage: str) -> None:
        with self.lock:
            self.finished.append(stage)


def test_publish_ls_pull_verify_as_a_script_calls_them(s3_server, bucket, tmp_path, capsys) -> None:
    net = {"endpoint_url": s3_server.endpoint_url}
    src = make_dataset(tmp_path / "coco-mini")
    url = f"s3://{bucket}/sets/coco-mini"

    calls: list[tuple[str, int, int]] = []
    published = s3sync.publish(src, to=url, part_size="64KiB", chunk_size="64KiB",
                               progress=lambda stage, done, total: calls.append((stage, done, total)), **net)
    m = published.manifest
    assert (m.name, m.files, published.location.url()) == ("coco-mini", 6, url)
    assert m.chunk_size == 64 * 1024 and len(m.parts) >= 2  # the sizes were taken
    assert m.captions is not None and (m.captions.images, m.captions.annotations) == (5, 5)
    upload = [c for c in calls if c[0] == "upload"]
    assert upload and upload[-1][1] == upload[-1][2] == m.stream_size

    listed = s3sync.ls(url, **net)
    assert (listed.generation, listed.files, listed.extracted_size) == (m.generation, m.files, m.extracted_size)
    below = s3sync.ls(f"s3://{bucket}", **net)  # above datasets: what is published below
    assert [d.location.url() for d in below.datasets] == [url] and below.complete

    recorder = Recorder()
    pulled = s3sync.pull(url, tmp_path / "data", progress=recorder, **net)
    assert pulled.dest == tmp_path / "data" / "coco-mini" and not pulled.up_to_date
    assert pulled.manifest.generation == m.generation
    assert recorder.done["download"] == recorder.totals["download"] == m.stream_size
    assert "download" in recorder.finished
    assert json.loads((pulled.dest / "captions.json").read_text())["annotations"][4]["caption"] == "photo 4"

    again = s3sync.pull(url, tmp_path / "data", **net)
    assert again.up_to_date and again.bytes_received == 0

    checked = s3sync.verify(pulled.dest)
    assert checked.problems == () and checked.checked >= 6
    (pulled.dest / "images" / "0002.jpg").write_bytes(b"changed")
    changed = s3sync.verify(str(pulled.dest))  # a difference is in the result, not raised
    assert [(p.path, p.kind) for p in changed.problems if p.kind != "mtime"] == [("images/0002.jpg", "changed")]

    repaired = s3sync.repair(pulled.dest, **net)  # fetches that file again, from the recorded source
    assert "images/0002.jpg" in repaired.fetched and repaired.unrepaired == ()
    assert repaired.bytes_received < m.stream_size
    assert s3sync.verify(pulled.dest).problems == ()

    part = s3sync.pull(url, tmp_path / "subset", include=["captions.json"], **net)  # a partial pull
    assert sorted(p.name for p in part.dest.iterdir() if p.name != ".s3sync") == ["captions.json"]
    old = s3sync.pull(url, tmp_path / "old", generation=m.generation, **net)
    assert old.manifest.generation == m.generation

    assert capsys.readouterr() == ("", "")  # the API never prints


def test_a_name_resolves_through_env_as_on_the_cli(s3_server, bucket, tmp_path, capsys, monkeypatch) -> None:
    """``env`` is where S3SYNC_* settings come from; None (the default) is os.environ."""
    src = make_dataset(tmp_path / "mini", n=2)
    env = {"S3SYNC_BUCKET": bucket, "S3SYNC_ENDPOINT_URL": s3_server.endpoint_url}
    result = s3sync.publish(src, env=env)
    assert result.location.url() == f"s3://{bucket}/mini"
    assert s3sync.ls("mini", env=env).generation == result.manifest.generation

    with pytest.raises(UsageError, match="S3SYNC_BUCKET is not set"):
        s3sync.pull("mini", tmp_path / "data", env={})
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    pulled = s3sync.pull("mini", tmp_path / "data")  # env=None: os.environ, as the CLI reads it
    assert pulled.dest == tmp_path / "data" / "mini" and pulled.manifest.files == 3

    catalog = {c.name: c for c in s3sync.ls()}
    assert catalog["sbu"].url == f"s3://{bucket}/sbu" and catalog["sbu"].published is False
    assert catalog["sbu"].entry is not None and catalog["sbu"].entry.title
    assert capsys.readouterr() == ("", "")


def test_errors_are_raised_as_s3sync_errors(s3_server, bucket, tmp_path, capsys) -> None:
    net = {"endpoint_url": s3_server.endpoint_url}
    with pytest.raises(NotFoundError) as missing:
        s3sync.pull(f"s3://{bucket}/nothing-here", tmp_path / "data", **net)
    assert missing.value.manifest_missing and missing.value.exit_code == 1
    with pytest.raises(NotFoundError):
        s3sync.ls(f"s3://{bucket}/nothing-here", **net)
    with pytest.raises(SourceError, match="no such directory"):
        s3sync.publish(tmp_path / "absent", to=f"s3://{bucket}/x", **net)
    with pytest.raises(UsageError, match="chunk size"):
        s3sync.publish(make_dataset(tmp_path / "x", n=1), to=f"s3://{bucket}/x", chunk_size="1KiB", **net)
    with pytest.raises(UsageError, match="not a valid dataset name"):
        s3sync.pull(f"s3://{bucket}/x", tmp_path / "data", name="../up", **net)
    with pytest.raises(UsageError, match="endpoint URL"):
        s3sync.ls(f"s3://{bucket}/x", endpoint_url="127.0.0.1:9000")
    with pytest.raises(UsageError, match="progress="):
        s3sync.verify(tmp_path, progress=42)
    with pytest.raises(DestinationError):
        s3sync.verify(tmp_path / "not-a-dataset")
    with pytest.raises(S3SyncError):  # the config file named by env is read, as on the CLI
        s3sync.ls(f"s3://{bucket}/x", env={"S3SYNC_CONFIG": str(tmp_path / "absent.toml")})
    assert capsys.readouterr() == ("", "")


def test_import_is_lazy_and_names_are_the_api() -> None:
    """``import s3sync`` loads no pipeline, boto3 or rich; the API names are its functions even
    after the pipeline submodules of the same names were imported."""
    code = ("import sys, s3sync\n"
            "heavy = [m for m in ('boto3', 'botocore', 'rich', 's3sync.pull', 's3sync.api') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "import s3sync.pull, s3sync.publish, s3sync.verify\n"
            "from s3sync.pull import PullResult\n"
            "assert callable(s3sync.pull) and s3sync.pull.__module__ == 's3sync.api', s3sync.pull\n"
            "assert s3sync.publish.__module__ == s3sync.verify.__module__ == 's3sync.api'\n"
            "import s3sync.repair\n"
            "assert s3sync.repair.__module__ == 's3sync.api', s3sync.repair\n"
            "assert s3sync.errors.NotFoundError.exit_code == 1\n")
    env = {**os.environ, "PYTHONPATH": str(Path(s3sync.__file__).parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_a_pull_held_by_another_fails_naming_it_or_waits(s3_server, bucket, tmp_path, capsys) -> None:
    """The staging directory's lock is held here, as a running pull holds it. Without ``wait``
    the call raises ``DestinationBusyError`` naming this process; with ``wait=True`` it says so
    through ``progress.message`` (where this test releases the lock) and then completes."""
    from s3sync.journal import staging_dir

    net = {"endpoint_url": s3_server.endpoint_url}
    url = f"s3://{bucket}/held"
    s3sync.publish(make_dataset(tmp_path / "held", n=2), to=url, **net)
    staging = staging_dir(tmp_path / "data", "held")
    staging.mkdir(parents=True)
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(DestinationBusyError) as busy:
            s3sync.pull(url, tmp_path / "data", **net)
        assert busy.value.holder_pid == os.getpid() and busy.value.staging == staging

        class ReleaseWhenWaiting(Recorder):
            def message(self, text: str) -> None:
                self.messages = [*getattr(self, "messages", []), text]
                os.close(fd)  # the other "pull" finishes

        progress = ReleaseWhenWaiting()
        result = s3sync.pull(url, tmp_path / "data", wait=True, progress=progress, **net)
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise
    assert len(progress.messages) == 1 and "waiting for it to finish" in progress.messages[0]
    assert result.manifest.files == 3 and not staging.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the call put it back
    assert capsys.readouterr() == ("", "")
