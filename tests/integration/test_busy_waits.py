"""Every lock a pull, an update in place or a repair takes honours --wait (``wait=True``), and
a held one raises ``DestinationBusyError`` naming the holder, on moto and ``rclone serve s3``.

The lock is held here, in the test process, as a running pull or repair holds it: the
staging directory of an update (``DEST_PARENT/.NAME.s3sync-update``) and ``DIR/.s3sync/repair.lock``.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import s3sync
from s3sync import archive, cli, update
from s3sync.errors import DestinationBusyError
from s3sync.update import REPAIR_LOCK


def make_dataset(root: Path, n: int = 3) -> Path:
    images, anns = [], []
    for i in range(n):
        rel = f"images/{i:04d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(20_000 + i))
        images.append({"id": i, "file_name": rel, "width": 4, "height": 3})
        anns.append({"id": 100 + i, "image_id": i, "caption": f"photo {i}"})
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


def two_generations(tmp_path: Path, url: str, net: dict) -> tuple[Path, str]:
    """Generation A pulled into tmp/data/ds, then generation B published (one file changed)."""
    src = make_dataset(tmp_path / "src" / "ds")
    s3sync.publish(src, to=url, **net)
    dest = s3sync.pull(url, tmp_path / "data", **net).dest
    (src / "images" / "0001.jpg").write_bytes(os.urandom(25_000))
    b = s3sync.publish(src, to=url, **net).manifest.generation
    return dest, b


def hold(path: Path, directory: bool = True) -> int:
    """Take ``path``'s lock as a running pull (a directory) or repair (a file) does."""
    if directory:
        path.mkdir(exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


class ReleaseWhenWaiting:
    """A progress object that releases the held lock when told the call waits for it."""

    def __init__(self, fd: int) -> None:
        self.fd, self.messages = fd, []

    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, n: int) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass

    def message(self, text: str) -> None:
        self.messages.append(text)
        if "waiting for it to finish" in text and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def test_api_update_in_place_busy_then_waits(s3_server, bucket, tmp_path) -> None:
    net = {"endpoint_url": s3_server.endpoint_url}
    url = f"s3://{bucket}/ds"
    dest, b = two_generations(tmp_path, url, net)
    staging = update.update_dir(dest.parent, "ds")
    fd = hold(staging)
    progress = ReleaseWhenWaiting(fd)
    try:
        with pytest.raises(DestinationBusyError) as busy:
            s3sync.pull(url, tmp_path / "data", **net)
        err = busy.value
        assert err.holder_pid == os.getpid() and err.staging == staging
        assert f"pid {os.getpid()}" in str(err) and "wait=True" in err.hint
        result = s3sync.pull(url, tmp_path / "data", wait=True, progress=progress, **net)
    finally:
        if progress.fd >= 0:
            os.close(progress.fd)
    assert [m for m in progress.messages if "waiting" in m] and result.manifest.generation == b
    assert s3sync.verify(dest).problems == () and s3sync.verify(dest).generation == b


def test_cli_pull_wait_waits_for_an_update_in_place(s3_server, bucket, tmp_path, capsys) -> None:
    """``s3sync pull --wait`` (a real process) waits while the update's lock is held, says so,
    and finishes the update once it is released; without --wait: one line naming the pid and
    a hint naming --wait."""
    net = {"endpoint_url": s3_server.endpoint_url}
    url = f"s3://{bucket}/ds"
    dest, b = two_generations(tmp_path, url, net)
    fd = hold(update.update_dir(dest.parent, "ds"))
    try:
        assert cli.main(["pull", url, str(tmp_path / "data"), "--endpoint-url", s3_server.endpoint_url]) == 1
        err = capsys.readouterr().err
        assert f"pid {os.getpid()}" in err and "--wait" in err and "Traceback" not in err
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen([sys.executable, "-m", "s3sync", "pull", url, str(tmp_path / "data"), "--wait",
                                 "--endpoint-url", s3_server.endpoint_url], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "waiting for it to finish (--wait)" in line:
                break
        assert proc.poll() is None, "".join(seen)
    finally:
        os.close(fd)
    rest = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0, "".join(seen) + rest
    assert s3sync.verify(dest).generation == b and s3sync.verify(dest).problems == ()


def test_repair_busy_then_waits(s3_server, bucket, tmp_path, capsys) -> None:
    net = {"endpoint_url": s3_server.endpoint_url}
    url = f"s3://{bucket}/ds"
    s3sync.publish(make_dataset(tmp_path / "src" / "ds"), to=url, **net)
    dest = s3sync.pull(url, tmp_path / "data", **net).dest
    (dest / "images" / "0002.jpg").write_bytes(b"damaged")
    lock = dest / archive.METADATA_DIR / REPAIR_LOCK
    fd = hold(lock, directory=False)
    progress = ReleaseWhenWaiting(fd)
    try:
        with pytest.raises(DestinationBusyError) as busy:
            s3sync.repair(dest, **net)
        assert busy.value.holder_pid == os.getpid() and "wait=True" in busy.value.hint
        assert cli.main(["repair", str(dest), "--endpoint-url", s3_server.endpoint_url]) == 1
        err = capsys.readouterr().err
        assert f"pid {os.getpid()}" in err and "--wait" in err
        repaired = s3sync.repair(dest, wait=True, progress=progress, **net)
    finally:
        if progress.fd >= 0:
            os.close(progress.fd)
    assert "images/0002.jpg" in repaired.fetched and repaired.unrepaired == ()
    assert s3sync.verify(dest).problems == ()


def test_a_pull_leaves_alone_the_old_tree_an_update_is_removing(s3_server, bucket, tmp_path) -> None:
    """An update that swapped its tree in holds its lock while it removes the old one
    (``.NAME.s3sync-old``, minutes for a big dataset): a second pull neither removes it under
    it nor puts it back; it is busy (``--wait``: it waits, then goes on)."""
    net = {"endpoint_url": s3_server.endpoint_url}
    url = f"s3://{bucket}/ds"
    dest, b = two_generations(tmp_path, url, net)
    old = update.old_dir(dest.parent, "ds")
    (old / "images").mkdir(parents=True)
    (old / "images" / "x.jpg").write_bytes(b"old")
    fd = hold(update.update_dir(dest.parent, "ds"))
    progress = ReleaseWhenWaiting(fd)
    try:
        with pytest.raises(DestinationBusyError):
            s3sync.pull(url, tmp_path / "data", **net)
        assert (old / "images" / "x.jpg").read_bytes() == b"old"
        result = s3sync.pull(url, tmp_path / "data", wait=True, progress=progress, **net)
    finally:
        if progress.fd >= 0:
            os.close(progress.fd)
    assert result.manifest.generation == b and not old.exists()
    assert s3sync.verify(dest).problems == ()
