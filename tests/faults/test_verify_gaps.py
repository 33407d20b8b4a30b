"""What ``verify`` must notice (issue 10, item 12): a replaced hard-linked file, directory
modes, mtimes, extra files beside the parts of a ``--no-extract`` pull; names with control
characters kept on one output line; and files published without owner read permission,
which a non-root user can never read back (not a change; pulling again cannot help).

Datasets are hand-made tars (publish never writes hard links), pulled once from moto.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import tarfile
from pathlib import Path

import pytest

from s3sync import cli
from s3sync.verify import verify

from .conftest import MessageLog
from .test_hostile_input import reg, special, tar_of

moto = pytest.mark.parametrize("s3_server", ["moto"], indirect=True)

T = 1_700_000_000


def _dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info, _ = special(name, tarfile.DIRTYPE)
    info.mode = mode
    return info, None


def _kinds(result) -> set[tuple[str, str]]:
    return {(p.kind, p.path) for p in result.problems}


@moto
def test_hard_links_modes_and_mtimes(kit) -> None:
    tar = tar_of(_dir("d", 0o750), reg("d/a.txt", b"alpha\n"), special("d/h1", tarfile.LNKTYPE, "d/a.txt"),
                 special("d/h2", tarfile.LNKTYPE, "d/a.txt"), special("s", tarfile.SYMTYPE, "d/a.txt"),
                 _dir("e"), reg("e/m.txt", b"em\n"))
    result = kit.pull(kit.put_tar(tar, files=2, members=7))
    dest = result.dest
    assert verify(dest).problems == ()  # no false alarm: links, directories, mtimes as pulled
    # d/h1 replaced by another file of the same size; d/h2 by an identical copy: each is no
    # longer the hard link the dataset has (and h1's content differs too).
    (dest / "d" / "h1").unlink()
    (dest / "d" / "h1").write_bytes(b"ALPHA\n")
    (dest / "d" / "h2").unlink()
    (dest / "d" / "h2").write_bytes(b"alpha\n")
    os.utime(dest / "d" / "h2", (T, T))
    (dest / "d" / "h2").chmod(0o644)
    os.utime(dest / "d", (T, T))  # back to its pulled mtime: only the links differ here
    (dest / "e").chmod(0o700)
    os.utime(dest / "e" / "m.txt", (T + 60, T + 60))
    os.utime(dest / "s", (T - 60, T - 60), follow_symlinks=False)
    got = _kinds(verify(dest))
    assert got == {("link", "d/h1"), ("changed", "d/h1"), ("link", "d/h2"),
                   ("mode", "e"), ("mtime", "e/m.txt"), ("mtime", "s")}, got


@moto
def test_directory_mtime(kit) -> None:
    result = kit.pull(kit.put_tar(tar_of(_dir("d"), reg("d/a.txt", b"a")), files=1, members=2))
    os.utime(result.dest / "d", (T + 1, T + 1))
    assert _kinds(verify(result.dest)) == {("mtime", "d")}


@moto
def test_extra_files_beside_the_parts_of_a_no_extract_pull(kit) -> None:
    result = kit.pull(kit.put_tar(tar_of(reg("a.txt", b"a" * 1000)), files=1), extract=False)
    assert verify(result.dest).problems == ()
    (result.dest / "stray.tar").write_bytes(b"x")
    (result.dest / "sub").mkdir()
    (result.dest / "sub" / "inside").write_bytes(b"y")
    assert _kinds(verify(result.dest)) == {("extra", "stray.tar"), ("extra", "sub")}


@moto
def test_problem_lines_escape_control_characters(kit, capsys) -> None:
    names = ["new\nline.txt", "tab\there.txt", "back\\slash.txt", "bell\x07.txt", "sep\u2028.txt",
             "latin\udce9.txt"]  # the last: byte E9, a name that is not UTF-8 (PEP 383 surrogate escape)
    tar = tar_of(*(reg(n, b"x") for n in names))
    result = kit.pull(kit.put_tar(tar, files=len(names), members=len(names)))
    for n in names:
        (result.dest / n).unlink()
    assert cli.main(["verify", str(result.dest)]) == 1
    out = capsys.readouterr().out
    assert sorted(out.splitlines()) == sorted(
        f"missing\t{n}\tfile is missing" for n in
        ["new\\nline.txt", "tab\\there.txt", "back\\\\slash.txt", "bell\\x07.txt", "sep\\u2028.txt",
         "latin\\xe9.txt"]), out
    assert cli.main(["verify", "--json", str(result.dest)]) == 1
    doc = json.loads(capsys.readouterr().out)
    # --json keeps raw strings; a non-UTF-8 byte is the JSON escape \udcXX (json.loads and
    # os.fsencode give the byte back)
    assert sorted(p["path"] for p in doc["problems"]) == sorted(names)


def _without_root_file_access() -> list[str] | None:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]
    return prefix if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0 else None


@moto
@pytest.mark.parametrize("also_changed", [False, True])
def test_files_published_without_owner_read_permission(kit, also_changed: bool) -> None:
    """Mode 0000/0200 files (and a directory without owner search permission) cannot be
    read back by a non-root user: verify says so and how to check them, not 'pull again'."""
    prefix = _without_root_file_access()
    if prefix is None:
        pytest.skip("root without setpriv: every file is readable")
    closed0, closed2, inner = reg("zero.bin", b"0" * 100), reg("wo.bin", b"2" * 100), reg("shut/in.txt", b"i")
    closed0[0].mode, closed2[0].mode = 0o000, 0o200
    tar = tar_of(reg("ok.txt", b"fine"), closed0, closed2, _dir("shut", 0o600), inner)
    result = kit.pull(kit.put_tar(tar, files=4, members=5))
    if os.geteuid() == 0:
        assert verify(result.dest).problems == ()  # root reads them all
    if also_changed:
        (result.dest / "ok.txt").write_bytes(b"FINE")
        os.utime(result.dest / "ok.txt", (T, T))
    exe = Path(sysconfig.get_path("scripts")) / "s3sync"
    proc = subprocess.run([*prefix, str(exe), "verify", str(result.dest)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    lines = {tuple(line.split("\t")[:2]) for line in proc.stdout.splitlines()}
    expected = {("unverifiable", "zero.bin"), ("unverifiable", "wo.bin"), ("unverifiable", "shut/in.txt")}
    assert lines == expected | ({("changed", "ok.txt")} if also_changed else set()), proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    if also_changed:
        assert "1 of 5 entries differ" in proc.stderr, proc.stderr
        assert "run verify as root to check the 3 it cannot read" in proc.stderr, proc.stderr
    else:
        assert "pull" not in proc.stderr.split("hint:")[1], proc.stderr
        assert "3 of 5 entries cannot be read back by this user" in proc.stderr, proc.stderr
        assert "hint: run 's3sync verify' as root" in proc.stderr, proc.stderr


@moto
def test_publish_warns_about_entries_without_owner_read_permission(kit) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can publish files without owner read permission")
    from s3sync.config import Location
    from s3sync.publish import publish

    from .conftest import FAST_TRANSFER

    src = kit.tmp / "src" / "ds"
    (src / "sub").mkdir(parents=True)
    for name, mode in [("a.bin", 0o000), ("b.bin", 0o200), ("c.bin", 0o244), ("d.bin", 0o644), ("e.bin", 0o000)]:
        (src / name).write_bytes(b"x")
        (src / name).chmod(mode)
    (src / "sub").chmod(0o600)
    progress = MessageLog()
    publish(src, "ds", Location(kit.bucket, "ds"), kit.store(kit.server.endpoint_url), FAST_TRANSFER, progress)
    (src / "sub").chmod(0o755)
    assert progress.lines == ["warning: 5 entries published with no owner read permission ('a.bin', 'b.bin', "
                              "'c.bin' and 2 more); a non-root pull cannot read them back"], progress.lines
    clean = kit.tmp / "src" / "clean"
    clean.mkdir()
    (clean / "f").write_bytes(b"y")
    progress = MessageLog()
    publish(clean, "clean", Location(kit.bucket, "clean"), kit.store(kit.server.endpoint_url), FAST_TRANSFER,
            progress)
    assert progress.lines == []
