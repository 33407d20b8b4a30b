"""Adversarial tests of issue 13/17 where the merged pieces meet: partial pulls of history
generations under reader leases with extras, gc then repair, ls --members, the API's pull with
every option, nested-dataset checks at publish. moto and rclone through ``s3_server``.

Each test marked ``xfail(strict=True)`` states what a user should get and fails on the code as
it is: the reason names what happens instead. The unmarked ones held up and stay as guards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import s3sync
from s3sync import cli
from s3sync.config import Location, TransferSettings
from s3sync.gc import collect
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.selection import Selection
from s3sync.stores.s3 import S3Store
from s3sync.verify import verify
from tests.faults.proxy import FaultProxy, Rule

SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=256 * 1024, window=8)


def make_tree(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "meta").mkdir()
    for i in range(6):
        (root / "images" / f"{i:04d}.jpg").write_bytes(os.urandom(3_000 + 101 * i))
    (root / "meta" / "a.json").write_text('{"a": 1}')
    (root / "readme.txt").write_text("hello")
    return root


def url(store: S3Store) -> str:
    return store.client.meta.endpoint_url


def two_generations(store: S3Store, tmp_path: Path):
    src = make_tree(tmp_path / "src" / "ds")
    loc = Location(store.bucket, "ds")
    a = publish(src, "ds", loc, store, SMALL).manifest
    (src / "images" / "0002.jpg").write_bytes(os.urandom(4_444))
    (src / "images" / "0009.jpg").write_bytes(os.urandom(999))
    b = publish(src, "ds", loc, store, SMALL).manifest
    return src, loc, a, b


def readers_left(store: S3Store, loc: Location) -> list[str]:
    return [o.key for o in store.list(loc.prefix + "/") if "/readers/" in o.key]


# --------------------------------------------------------------------------- partial pulls of history generations


def test_partial_history_with_extras_then_current(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    r = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation,
             selection=Selection.make(["images/"], []))
    dest = r.dest
    assert verify(dest, 2).problems == ()
    (dest / "mine.txt").write_text("mine")
    (dest / "images" / "mine.jpg").write_text("mine")
    assert readers_left(store, loc) == []
    r2 = pull(loc, None, tmp_path / "data", store, SMALL, selection=Selection.make(["images/", "meta/"], []))
    probs = verify(dest, 2).problems
    assert [p.kind for p in probs] == ["extra", "extra"], probs
    assert (dest / "meta" / "a.json").exists()
    assert (dest / "images" / "0009.jpg").read_bytes() == (src / "images" / "0009.jpg").read_bytes()
    assert not (dest / "readme.txt").exists()
    assert r2.updated is not None


def test_partial_back_to_history_delete_extra(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL).dest
    (dest / "mine.txt").write_text("mine")
    r = s3sync.pull(loc.url(), tmp_path / "data", wait=True, delete_extra=True, generation=a.generation,
                    include=["images/*.jpg"], exclude=["0001.jpg"], endpoint_url=url(store), env={})
    assert not (dest / "mine.txt").exists()
    assert not (dest / "images" / "0009.jpg").exists()
    assert not (dest / "images" / "0001.jpg").exists()
    assert not (dest / "readme.txt").exists()
    assert verify(dest, 2).problems == ()
    assert r.manifest.generation == a.generation
    assert readers_left(store, loc) == []


def test_repair_partial_after_gc(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation,
                selection=Selection.make(["images/"], [])).dest
    collect(store, loc, 1, grace_s=0)
    (dest / "images" / "0001.jpg").write_bytes(b"broken")
    code = cli.main(["repair", str(dest), "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    assert a.generation in err, err


def test_ls_members_cli(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    code = cli.main(["ls", loc.url(), "--members", "images/", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 0 and "images/0009.jpg" in out and "readme.txt" not in out, err


def test_ls_members_generation(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    code = cli.main(["ls", loc.url(), "--members", "--generation", a.generation, "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 0 and "images/0002.jpg" in out and "0009.jpg" not in out, err


def test_the_hint_of_ls_on_a_history_copy_works(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    code = cli.main(["ls", f"{loc.url()}/{a.generation}", "--members", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code != 0 and f"--generation {a.generation}" in err, err
    code = cli.main(["ls", loc.url(), "--members", "--generation", a.generation, "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 0, err


def test_publish_next_to(store: S3Store, tmp_path: Path, capsys) -> None:
    src = make_tree(tmp_path / "src" / "ds")
    publish(src, "a", Location(store.bucket, "a"), store, SMALL)
    code = cli.main(["publish", str(src), "--to", f"s3://{store.bucket}/ab", "--name", "ab", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 0, err
    code = cli.main(["publish", str(src), "--to", f"s3://{store.bucket}/a-b/x", "--name", "ab", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 0, err
    code = cli.main(["publish", str(src), "--to", f"s3://{store.bucket}/a/", "--name", "a", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 0, err  # the same dataset again (a trailing slash)


def test_publish_trailing_slash_nested(store: S3Store, tmp_path: Path, capsys) -> None:
    src = make_tree(tmp_path / "src" / "ds")
    publish(src, "a", Location(store.bucket, "g/a"), store, SMALL)
    code = cli.main(["publish", str(src), "--to", f"s3://{store.bucket}/g/a//sub", "--name", "x", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in err, err
    code = cli.main(["publish", str(src), "--to", f"s3://{store.bucket}/g", "--name", "x", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code != 0 and "g/a" in err and "Traceback" not in err, err


# --------------------------------------------------------------------------- kill -9 / --wait

WORKTREE = Path(__file__).resolve().parents[2]


def cli_proc(endpoint: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    return subprocess.Popen([sys.executable, "-m", "s3sync", *args, "--endpoint-url", endpoint], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def snapshot(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.startswith(".s3sync"):
            continue
        dirnames[:] = [d for d in dirnames if not (rel == "." and d == ".s3sync")]
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d))] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.normpath(os.path.join(rel, f))] = os.readlink(p) if os.path.islink(p) else Path(p).read_bytes()
    return out


def gated(proxy: FaultProxy) -> threading.Event:
    gate = threading.Event()
    proxy.add(Rule("hook", key="/part-", hook=lambda req: gate.wait(20)))
    return gate


def wait_for(cond, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_kill9_partial_history_update_with_extras_then_rerun(s3_server, store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, generation=a.generation,
                selection=Selection.make(["images/"], [])).dest
    (dest / "mine.txt").write_text("mine")
    (dest / "images" / "mine.jpg").write_text("mine too")
    before = snapshot(dest)
    args = ["pull", loc.url(), str(data), "--include", "images/", "--include", "meta/"]
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        proc = cli_proc(proxy.url, *args)
        try:
            time.sleep(2.0)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            gate.set()
    assert snapshot(dest) == before  # the old tree intact
    res = subprocess.run([sys.executable, "-m", "s3sync", *args, "--endpoint-url", url(store)],
                         env={**os.environ, "PYTHONPATH": str(WORKTREE)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    fresh = pull(loc, None, tmp_path / "fresh", store, SMALL, selection=Selection.make(["images/", "meta/"], [])).dest
    got = snapshot(dest)
    assert got.pop("mine.txt") == b"mine" and got.pop("images/mine.jpg") == b"mine too"
    assert got == snapshot(fresh)
    assert [p.kind for p in verify(dest, 2).problems] == ["extra", "extra"]
    assert readers_left(store, loc) == []


def test_wait_while_an_update_carries_extras(s3_server, store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, generation=a.generation).dest
    (dest / "mine.txt").write_text("mine")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        first = cli_proc(proxy.url, "pull", loc.url(), str(data))
        time.sleep(1.5)
        second = cli_proc(url(store), "pull", loc.url(), str(data), "--wait", "--delete-extra")
        time.sleep(1.5)
        gate.set()
        o1, e1 = first.communicate(timeout=60)
        o2, e2 = second.communicate(timeout=60)
    assert first.returncode == 0, e1
    assert second.returncode == 0, e2
    assert verify(dest, 2).problems == () and not (dest / "mine.txt").exists(), (e1, e2)


def test_delete_extra_on_a_complete_pull(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL).dest
    (dest / "mine.txt").write_text("mine")
    code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--delete-extra", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 0 and not (dest / "mine.txt").exists(), err


def test_wait_then_other_selection(s3_server, store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, generation=a.generation).dest
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        first = cli_proc(proxy.url, "pull", loc.url(), str(data))
        time.sleep(1.5)
        second = cli_proc(url(store), "pull", loc.url(), str(data), "--wait", "--include", "images/")
        time.sleep(1.5)
        gate.set()
        o1, e1 = first.communicate(timeout=60)
        o2, e2 = second.communicate(timeout=60)
    assert first.returncode == 0, e1
    assert second.returncode == 0, e2
    assert not (dest / "readme.txt").exists(), e2


def test_wait_then_other_generation(s3_server, store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, generation=a.generation).dest
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        first = cli_proc(proxy.url, "pull", loc.url(), str(data))
        time.sleep(1.5)
        second = cli_proc(url(store), "pull", loc.url(), str(data), "--wait", "--generation", a.generation)
        time.sleep(1.5)
        gate.set()
        o1, e1 = first.communicate(timeout=60)
        o2, e2 = second.communicate(timeout=60)
    assert first.returncode == 0, e1
    assert second.returncode == 0, e2
    assert verify(dest, 2).generation == a.generation, e2


def test_api_include_as_a_string(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    try:
        r = s3sync.pull(loc.url(), tmp_path / "data", include="meta/", endpoint_url=url(store), env={})
    except TypeError:
        return
    except s3sync.errors.S3SyncError as err:
        assert "'meta/'" in str(err), str(err)
        return
    assert sorted(snapshot(r.dest)) == ["meta", "meta/a.json"]


def test_include_matching_nothing(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--include", "nothing-here", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code != 0 and "matches no member" in err and "Traceback" not in err, err
    assert not (tmp_path / "data" / "ds").exists()


def test_ctrl_c_partial_history_lease_removed(s3_server, store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        proc = cli_proc(proxy.url, "pull", loc.url(), str(data), "--generation", a.generation, "--include", "images/")
        time.sleep(2.0)
        assert len(readers_left(store, loc)) == 1
        proc.send_signal(signal.SIGINT)
        gate.set()
        o, e = proc.communicate(timeout=30)
    assert proc.returncode == 130, e
    assert readers_left(store, loc) == []
    assert "Traceback" not in e


def test_kill9_lease_then_gc_then_rerun(s3_server, store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, generation=a.generation, selection=Selection.make(["images/"], [])).dest
    before = snapshot(dest)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        proc = cli_proc(proxy.url, "pull", loc.url(), str(data), "--generation", a.generation)
        time.sleep(2.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gate.set()
    assert len(readers_left(store, loc)) == 1
    collect(store, loc, 1, grace_s=0)  # the dead lease (same machine) does not keep it
    code = cli.main(["pull", loc.url(), str(data), "--generation", a.generation, "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) <= 3
    assert snapshot(dest) == before
    assert verify(dest, 2).problems == ()
    code = cli.main(["pull", loc.url(), str(data), "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 0, err
    fresh = pull(loc, None, tmp_path / "fresh", store, SMALL).dest
    assert snapshot(dest) == snapshot(fresh)


def test_repair_history_partial_lease(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation,
                selection=Selection.make(["images/"], [])).dest
    (dest / "images" / "0001.jpg").write_bytes(b"broken")
    (dest / "images" / "0003.jpg").unlink()
    code = cli.main(["repair", str(dest), "--endpoint-url", url(store), "--wait", "--delete-extra"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert verify(dest, 2).problems == ()
    assert readers_left(store, loc) == []
    assert not (dest / "readme.txt").exists()


def sel(*inc: str) -> Selection:
    return Selection.make(list(inc), [])


def test_extra_file_where_a_newly_selected_dir_goes(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation, selection=sel("images/")).dest
    (dest / "meta").write_text("my meta notes")
    before = snapshot(dest)
    code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--include", "images/", "--include", "meta/",
                     "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code != 0 and "meta" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 2, err
    assert snapshot(dest) == before


def test_extra_inside_a_newly_selected_dir_is_kept(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation, selection=sel("images/")).dest
    (dest / "meta").mkdir()
    (dest / "meta" / "mine.txt").write_text("mine")
    r = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("images/", "meta/"))
    assert (dest / "meta" / "mine.txt").read_text() == "mine"
    assert (dest / "meta" / "a.json").exists()
    assert [p.path for p in verify(dest, 2).problems] == ["meta/mine.txt"]
    assert r.updated is not None and r.updated.extras >= 1


def test_narrowing_keeps_extras_in_a_dropped_dir(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("images/", "meta/")).dest
    (dest / "meta" / "mine.txt").write_text("mine")
    pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation, selection=sel("images/"))
    assert (dest / "meta" / "mine.txt").read_text() == "mine"
    assert not (dest / "meta" / "a.json").exists()
    assert not (dest / "images" / "0009.jpg").exists()


def test_narrowing_reports_an_edited_member_it_drops(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("images/", "meta/")).dest
    (dest / "meta" / "a.json").write_text('{"a": "my week of edits"}')
    r = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("images/")).updated
    assert r is not None
    assert r.altered >= 1 or (dest / "meta" / "a.json").exists()


def test_widening_over_an_edited_unselected_path(store: S3Store, tmp_path: Path, capsys) -> None:
    # readme.txt is not selected; the user writes their own readme.txt (an extra); widening to all
    # must refuse (it is in the way of a member) or keep the user's bytes; never overwrite silently.
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("images/")).dest
    (dest / "readme.txt").write_text("mine, not the dataset's")
    code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code != 0 or (dest / "readme.txt").read_text() == "mine, not the dataset's", err


def test_ls_members_without_index(store: S3Store, tmp_path: Path, capsys) -> None:
    code = cli.main(["ls", f"s3://{store.bucket}/nothing", "--members", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in err and "internal error" not in err, err


@pytest.mark.parametrize("rerun", [["--generation", "A"], ["--include", "meta/"], ["--delete-extra"]])
def test_kill9_then_rerun_with_other_options(s3_server, store: S3Store, tmp_path: Path, rerun: list[str]) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, generation=a.generation, selection=sel("images/")).dest
    (dest / "images" / "mine.jpg").write_text("mine")
    before = snapshot(dest)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        proc = cli_proc(proxy.url, "pull", loc.url(), str(data), "--include", "images/", "--include", "meta/")
        time.sleep(2.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gate.set()
    assert snapshot(dest) == before
    rerun = [a.generation if x == "A" else x for x in rerun]
    res = subprocess.run([sys.executable, "-m", "s3sync", "pull", loc.url(), str(data), *rerun,
                          "--endpoint-url", url(store)], env={**os.environ, "PYTHONPATH": str(WORKTREE)},
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    gen = a.generation if "--generation" in rerun else None
    selection = sel("meta/") if "--include" in rerun else None
    fresh = pull(loc, None, tmp_path / "fresh", store, SMALL, generation=gen, selection=selection).dest
    got = snapshot(dest)
    if "--delete-extra" not in rerun:
        assert got.pop("images/mine.jpg") == b"mine"
        got = {k: v for k, v in got.items() if k != "images" or selection is None}
    assert got == snapshot(fresh)
    assert all(p.kind == "extra" for p in verify(dest, 2).problems)
    assert not [n for n in os.listdir(data) if n != "ds"], os.listdir(data)


def test_publish_next_to_in_a_group(store: S3Store, tmp_path: Path, capsys) -> None:
    src = make_tree(tmp_path / "src" / "ds")
    publish(src, "a", Location(store.bucket, "g/a"), store, SMALL)
    for to in ("g/ab", "g/a.b", "ga", "g/a_"):
        code = cli.main(["publish", str(src), "--to", f"s3://{store.bucket}/{to}", "--name", "x",
                         "--endpoint-url", url(store)])
        out, err = capsys.readouterr()
        assert code == 0, (to, err)


# --------------------------------------------------------------------------- hard links, big members


def hardlinked(store: S3Store, tmp_path: Path):
    src = make_tree(tmp_path / "src" / "ds")
    (src / "other").mkdir()
    os.link(src / "images" / "0001.jpg", src / "other" / "same.jpg")
    (src / "big.bin").write_bytes(os.urandom(700_000))  # > part_size: spans parts and chunks
    loc = Location(store.bucket, "ds")
    a = publish(src, "ds", loc, store, SMALL).manifest
    return src, loc, a


def test_partial_pull_of_a_hard_link_whose_target_is_not_selected(store: S3Store, tmp_path: Path) -> None:
    src, loc, a = hardlinked(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("other/")).dest
    assert (dest / "other" / "same.jpg").read_bytes() == (src / "images" / "0001.jpg").read_bytes()
    assert verify(dest, 2).problems == ()


def test_partial_pull_of_a_hard_link_target_only(store: S3Store, tmp_path: Path) -> None:
    src, loc, a = hardlinked(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("images/0001.jpg")).dest
    assert verify(dest, 2).problems == ()
    assert not (dest / "other").exists()


def test_repair_a_hard_link_in_a_partial_pull(store: S3Store, tmp_path: Path) -> None:
    src, loc, a = hardlinked(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("other/", "big.bin")).dest
    (dest / "other" / "same.jpg").unlink()
    with open(dest / "big.bin", "r+b") as f:
        f.seek(400_000)
        f.write(b"XXXX")
    r = s3sync.repair(dest, endpoint_url=url(store), env={})
    assert r.unrepaired == ()
    assert verify(dest, 2).problems == ()


def test_update_where_the_link_target_changes(store: S3Store, tmp_path: Path) -> None:
    src, loc, a = hardlinked(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("other/", "images/")).dest
    os.unlink(src / "images" / "0001.jpg")
    (src / "images" / "0001.jpg").write_bytes(b"new content")  # the link is broken in the source
    publish(src, "ds", loc, store, SMALL)
    pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("other/", "images/"))
    assert verify(dest, 2).problems == ()
    assert (dest / "images" / "0001.jpg").read_bytes() == b"new content"
    assert (dest / "other" / "same.jpg").read_bytes() != b"new content"


# --------------------------------------------------------------------------- more meeting points


def test_repair_while_an_update_is_downloading(s3_server, store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, generation=a.generation, selection=sel("images/")).dest
    (dest / "images" / "0003.jpg").write_bytes(b"broken")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        first = cli_proc(proxy.url, "pull", loc.url(), str(data), "--include", "images/")
        time.sleep(1.5)
        rep = subprocess.run([sys.executable, "-m", "s3sync", "repair", str(dest), "--endpoint-url", url(store)],
                             env={**os.environ, "PYTHONPATH": str(WORKTREE)}, capture_output=True, text=True)
        gate.set()
        o1, e1 = first.communicate(timeout=60)
    assert "Traceback" not in rep.stderr and "internal error" not in rep.stderr, rep.stderr
    assert first.returncode == 0, e1
    assert verify(dest, 2).problems == (), (rep.stderr, e1)
    fresh = pull(loc, None, tmp_path / "fresh", store, SMALL, selection=sel("images/")).dest
    assert snapshot(dest) == snapshot(fresh)


def test_no_extract_with_include(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--no-extract", "--include", "images/",
                     "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in err and "internal error" not in err, err


def test_no_extract_over_a_partial_pull(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation, selection=sel("images/")).dest
    before = snapshot(dest)
    code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--no-extract", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    assert code != 0 and snapshot(dest) == before, err


def test_api_bogus_generation(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    with pytest.raises(s3sync.errors.NotFoundError) as info:
        s3sync.pull(loc.url(), tmp_path / "data", generation="20200101T000000Z-deadbeef", include=["images/"],
                    wait=True, delete_extra=True, endpoint_url=url(store), env={})
    assert a.generation in str(info.value) or a.generation in (info.value.hint or "")


def test_api_generation_path_traversal(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    with pytest.raises(s3sync.errors.S3SyncError):
        s3sync.pull(loc.url(), tmp_path / "data", generation="../ds", endpoint_url=url(store), env={})


def test_gc_keeps_a_generation_a_partial_update_is_reading(s3_server, store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, selection=sel("images/")).dest
    (dest / "mine.txt").write_text("mine")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        first = cli_proc(proxy.url, "pull", loc.url(), str(data), "--generation", a.generation,
                         "--include", "images/", "--include", "meta/")
        assert wait_for(lambda: len(readers_left(store, loc)) == 1)
        code = cli.main(["ls", loc.url(), "--generations", "--endpoint-url", url(store)])
        out, err = capsys.readouterr()
        assert code == 0 and "in use by 1 reader" in out, (out, err)
        r = collect(store, loc, 1, grace_s=0)
        gate.set()
        o1, e1 = first.communicate(timeout=60)
    assert first.returncode == 0, e1
    assert verify(dest, 2).generation == a.generation
    assert [p.path for p in verify(dest, 2).problems] == ["mine.txt"]
    assert readers_left(store, loc) == []
    assert a.generation in {g for g, *_ in r.busy}, r


def test_ls_members_of_a_history_copy_prefix(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    code = cli.main(["ls", f"{loc.url()}/{a.generation}", "--members", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 2 and "history copy" in err and "Traceback" not in err and "internal error" not in err, err


def test_pull_of_a_history_copy_prefix(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    code = cli.main(["pull", f"{loc.url()}/{a.generation}", str(tmp_path / "data"), "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    assert code != 0 or verify(tmp_path / "data" / "ds", 2).problems == ()


def test_ls_generation_flag_abbreviation(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    code = cli.main(["ls", loc.url(), "--generation", a.generation, "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err, err


# --------------------------------------------------------------------------- symlinks the user planted


def outside_dir(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "precious.txt").write_text("precious")
    return out


def test_widening_over_a_planted_symlink_dir_with_delete_extra(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    out = outside_dir(tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation, selection=sel("images/")).dest
    os.symlink(out, dest / "meta")
    s3sync.pull(loc.url(), tmp_path / "data", include=["images/", "meta/"], delete_extra=True, wait=True,
                endpoint_url=url(store), env={})
    assert sorted(os.listdir(out)) == ["precious.txt"]
    assert not (dest / "meta").is_symlink() and (dest / "meta" / "a.json").is_file()
    assert verify(dest, 2).problems == ()


def test_update_carries_a_symlink_to_outside_and_delete_extra_spares_its_target(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    out = outside_dir(tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation).dest
    os.symlink(out, dest / "images" / "ext")
    pull(loc, None, tmp_path / "data", store, SMALL)
    assert (dest / "images" / "ext").is_symlink() and os.readlink(dest / "images" / "ext") == str(out)
    assert (out / "precious.txt").read_text() == "precious"
    pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation, delete_extra=True,
         selection=sel("images/", "meta/"))
    assert not (dest / "images" / "ext").exists() and not (dest / "images" / "ext").is_symlink()
    assert (out / "precious.txt").read_text() == "precious"


def test_repair_delete_extra_spares_a_symlink_target_in_a_partial_pull(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    out = outside_dir(tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation, selection=sel("images/")).dest
    os.symlink(out, dest / "meta")  # an unselected member's path
    os.symlink(out, dest / "images" / "ext")
    r = s3sync.repair(dest, delete_extra=True, wait=True, endpoint_url=url(store), env={})
    assert r.unrepaired == ()
    assert (out / "precious.txt").read_text() == "precious"
    assert not (dest / "meta").is_symlink() and not (dest / "images" / "ext").is_symlink()
    assert verify(dest, 2).problems == ()


def test_an_update_while_a_repair_is_fetching(s3_server, store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, generation=a.generation).dest
    (dest / "images" / "0002.jpg").write_bytes(b"broken")  # changed in b too
    (dest / "images" / "0004.jpg").write_bytes(b"broken")  # the same in b
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        rep = cli_proc(proxy.url, "repair", str(dest))
        time.sleep(2.0)
        up = subprocess.run([sys.executable, "-m", "s3sync", "pull", loc.url(), str(data), "--endpoint-url", url(store)],
                            env={**os.environ, "PYTHONPATH": str(WORKTREE)}, capture_output=True, text=True)
        gate.set()
        o, e = rep.communicate(timeout=60)
    assert "Traceback" not in e and "internal error" not in e, e
    assert "Traceback" not in up.stderr, up.stderr
    problems = verify(dest, 2).problems
    assert problems == (), (problems, up.returncode, up.stderr, rep.returncode, e)
    assert "DEST_PARENT" not in e and "No such file" not in e, e


def test_ctrl_c_repair_of_a_history_partial_removes_its_lease(s3_server, store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation, selection=sel("images/")).dest
    (dest / "images" / "0001.jpg").write_bytes(b"broken")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        proc = cli_proc(proxy.url, "repair", str(dest))
        assert wait_for(lambda: len(readers_left(store, loc)) == 1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        gate.set()
        o, e = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in e, e
    assert readers_left(store, loc) == []
    r = s3sync.repair(dest, endpoint_url=url(store), env={})
    assert r.unrepaired == () and verify(dest, 2).problems == ()


def test_wait_behind_a_holder_killed_9_takes_over(s3_server, store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, generation=a.generation, selection=sel("images/")).dest
    (dest / "mine.txt").write_text("mine")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        first = cli_proc(proxy.url, "pull", loc.url(), str(data), "--include", "images/", "--include", "meta/")
        time.sleep(1.5)
        second = cli_proc(url(store), "pull", loc.url(), str(data), "--include", "images/", "--include", "meta/",
                          "--wait")
        time.sleep(1.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
        o2, e2 = second.communicate(timeout=60)
        gate.set()
    assert second.returncode == 0, e2
    fresh = pull(loc, None, tmp_path / "fresh", store, SMALL, selection=sel("images/", "meta/")).dest
    got = snapshot(dest)
    assert got.pop("mine.txt") == b"mine"
    assert got == snapshot(fresh)
    assert [p.kind for p in verify(dest, 2).problems] == ["extra"]


def test_ls_members_escapes_odd_names(store: S3Store, tmp_path: Path, capsys) -> None:
    src = make_tree(tmp_path / "src" / "ds")
    (src / "a\nb.txt").write_text("x")
    (src / "t\tab.txt").write_text("y")
    loc = Location(store.bucket, "ds")
    publish(src, "ds", loc, store, SMALL)
    code = cli.main(["ls", loc.url(), "--members", "*.txt", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln.strip()]
    paths = [ln.split("\t", 1)[1] for ln in lines if "\t" in ln]
    assert "a\\nb.txt" in paths and "t\\tab.txt" in paths, out
    code = cli.main(["ls", loc.url(), "--members", "*.txt", "--json", "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code == 0 and "a\\nb.txt" in out, out


@pytest.mark.parametrize("extra", [["--include", ""], ["--generation", ""], ["--exclude", "**"],
                                   ["--include", "[z-a]"], ["--generation", "x/../y"], ["--include", "images/",
                                                                                      "--no-extract"]])
def test_odd_options_are_one_line_errors(store: S3Store, tmp_path: Path, capsys, extra: list[str]) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    code = cli.main(["pull", loc.url(), str(tmp_path / "data"), *extra, "--endpoint-url", url(store)])
    out, err = capsys.readouterr()
    assert code != 0, (extra, err)
    assert "Traceback" not in err and "internal error" not in err, err
    assert len([ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("check:", "download:"))]) <= 2, err


def test_partial_and_update_of_long_and_boundary_members(store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "src" / "ds"
    deep = src / ("d" * 120) / ("é" * 60)
    deep.mkdir(parents=True)
    (deep / ("f" * 200 + ".bin")).write_bytes(os.urandom(70_000))
    (src / "zero").write_bytes(b"")
    for i in range(40):  # members around chunk (64 KiB) and part (256 KiB) boundaries
        (src / f"m{i:03d}.bin").write_bytes(os.urandom(65_536 - 512 if i % 3 else 1_000 + i))
    loc = Location(store.bucket, "ds")
    publish(src, "ds", loc, store, SMALL)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("d*/", "zero", "m0[1-3]?.bin")).dest
    assert verify(dest, 2).problems == ()
    for i in (11, 20, 33):
        (src / f"m{i:03d}.bin").write_bytes(os.urandom(65_536 + 7))
    (deep / ("f" * 200 + ".bin")).write_bytes(os.urandom(1))
    publish(src, "ds", loc, store, SMALL)
    pull(loc, None, tmp_path / "data", store, SMALL, selection=sel("d*/", "zero", "m0[1-3]?.bin"))
    fresh = pull(loc, None, tmp_path / "fresh", store, SMALL, selection=sel("d*/", "zero", "m0[1-3]?.bin")).dest
    assert snapshot(dest) == snapshot(fresh) and verify(dest, 2).problems == ()
    (dest / "m020.bin").write_bytes(b"x")
    os.unlink(dest / deep.relative_to(src) / ("f" * 200 + ".bin"))
    assert s3sync.repair(dest, endpoint_url=url(store), env={}).unrepaired == ()
    assert snapshot(dest) == snapshot(fresh)


def test_api_ctrl_c_of_a_partial_history_update_with_every_option(s3_server, store: S3Store, tmp_path: Path) -> None:
    src, loc, a, b = two_generations(store, tmp_path)
    data = tmp_path / "data"
    dest = pull(loc, None, data, store, SMALL, selection=sel("images/")).dest
    (dest / "mine.txt").write_text("mine")
    before = snapshot(dest)
    code = ("import sys, s3sync\n"
            "try:\n"
            f"    s3sync.pull({loc.url()!r}, {str(data)!r}, wait=True, delete_extra=True, generation={a.generation!r},"
            " include=['images/', 'meta/'], exclude=['0001.jpg'], endpoint_url=sys.argv[1], env={})\n"
            "except KeyboardInterrupt:\n"
            "    sys.exit(42)\n")
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    with FaultProxy(s3_server.endpoint_url) as proxy:
        gate = gated(proxy)
        proc = subprocess.Popen([sys.executable, "-c", code, proxy.url], env=env, stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: len(readers_left(store, loc)) == 1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        gate.set()
        _, e = proc.communicate(timeout=30)
    assert proc.returncode == 42, e
    assert snapshot(dest) == before
    assert readers_left(store, loc) == []
    res = subprocess.run([sys.executable, "-c", code, url(store)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    fresh = pull(loc, None, tmp_path / "fresh", store, SMALL, generation=a.generation,
                 selection=Selection.make(["images/", "meta/"], ["0001.jpg"])).dest
    assert snapshot(dest) == snapshot(fresh) and verify(dest, 2).problems == ()
