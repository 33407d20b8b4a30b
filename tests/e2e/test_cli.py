"""The installed ``s3sync`` command, end to end, against real S3 servers in subprocesses.

Covers: publish / ls / pull round trips with ``--endpoint-url`` (and ``--json`` output that
parses), the built-in catalog listing, name resolution through ``S3SYNC_BUCKET``, a pull
into an already complete destination, and the error contract: exit code 2 for usage errors
and 1 otherwise, ``error: ...`` then ``hint: ...`` on stderr, never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SMALL = ["--chunk-size", "64KiB", "--part-size", "256KiB"]


def make_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "images").mkdir()
    for i in range(5):
        (root / "images" / f"{i:04d}.jpg").write_bytes(os.urandom(30_000 + i))
    (root / "big.bin").write_bytes(os.urandom(600_000))  # spans several 256 KiB parts
    (root / "captions.json").write_text('{"images": [], "annotations": []}\n')
    (root / "empty-dir").mkdir()
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "latest").symlink_to("images/0004.jpg")
    (root / "naïve name + space.txt").write_text("é\n")
    return root


def tree(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".s3sync" or rel.startswith(".s3sync/"):
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode),
                        int(st.st_mtime))
    return out


def assert_error(result, code: int) -> None:
    """The error contract: exit code, ``error:`` first, a ``hint:`` line, no traceback."""
    assert result.code == code, result.describe()
    assert result.stderr.startswith("error: "), result.describe()
    lines = result.stderr.splitlines()
    assert any(line.startswith("hint: ") for line in lines[1:]), result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    assert "internal error" not in result.stderr, result.describe()
    assert result.stdout == "", result.describe()


# --------------------------------------------------------------------------- round trips


def test_publish_ls_pull_round_trip(run, s3_server, bucket, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src" / "photos")
    url = f"s3://{bucket}/team/photos"
    ep = ["--endpoint-url", s3_server.endpoint_url]

    pub = run("publish", src, "--to", url, *ep, *SMALL, "--json")
    assert pub.code == 0, pub.describe()
    doc = pub.json()
    assert doc["name"] == "photos"
    assert doc["url"] == url
    assert doc["files"] == 9
    assert doc["parts"] >= 3
    assert "Traceback" not in pub.stderr

    ls = run("ls", url, *ep, "--json")
    assert ls.code == 0, ls.describe()
    summary = ls.json()
    assert summary["generation"] == doc["generation"]
    assert summary["files"] == 9
    assert summary["stream_size"] == doc["stream_size"] == sum(p["size"] for p in summary["parts"])
    assert len(summary["parts"]) == doc["parts"]

    ls_text = run("ls", url, *ep)
    assert ls_text.code == 0, ls_text.describe()
    assert doc["generation"] in ls_text.stdout

    dest = tmp_path / "dest"
    pull = run("pull", url, dest, *ep, "--json")
    assert pull.code == 0, pull.describe()
    pdoc = pull.json()
    assert Path(pdoc["dest"]) == dest / "photos"
    assert pdoc["generation"] == doc["generation"]
    assert pdoc["up_to_date"] is False
    assert tree(dest / "photos") == tree(src)
    assert sorted(p.name for p in dest.iterdir()) == ["photos"]  # no staging left behind

    # Pulling again into the complete destination is a no-op, in JSON and in text mode.
    again = run("pull", url, dest, *ep, "--json")
    assert again.code == 0, again.describe()
    assert again.json()["up_to_date"] is True
    assert again.json()["bytes_received"] == 0
    assert tree(dest / "photos") == tree(src)

    # A URL whose last segment differs from the dataset's name: the manifest's name wins.
    custom = run("publish", src, "--name", "custom-name", "--to", f"s3://{bucket}/other/prefix", *ep, "-q")
    assert custom.code == 0, custom.describe()
    named = run("pull", f"s3://{bucket}/other/prefix", tmp_path / "named", *ep, "--json")
    assert named.code == 0, named.describe()
    assert Path(named.json()["dest"]) == tmp_path / "named" / "custom-name"
    assert tree(tmp_path / "named" / "custom-name") == tree(src)

    # --no-extract stores the verified parts.
    parts = run("pull", url, tmp_path / "parts", *ep, "--no-extract", "-q")
    assert parts.code == 0, parts.describe()
    assert parts.stdout == "" and parts.stderr == ""  # -q: nothing but errors
    names = sorted(p.name for p in (tmp_path / "parts" / "photos").iterdir() if p.name != ".s3sync")
    assert names == [f"part-{i:05d}.tar" for i in range(doc["parts"])]


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_names_resolve_through_s3sync_bucket(run, s3_server, bucket, tmp_path: Path) -> None:
    """publish without --to and pull/ls by name; the endpoint from flag, S3SYNC_* or boto3's chain."""
    src = make_tree(tmp_path / "mscoco")
    env = {"S3SYNC_BUCKET": bucket}

    pub = run("publish", src, "--endpoint-url", s3_server.endpoint_url, *SMALL, "--json", env=env)
    assert pub.code == 0, pub.describe()
    assert pub.json()["url"] == f"s3://{bucket}/mscoco"

    listing = run("ls", "--json", env=env)
    assert listing.code == 0, listing.describe()
    urls = {d["name"]: d["url"] for d in listing.json()["datasets"]}
    assert urls["mscoco"] == f"s3://{bucket}/mscoco"
    assert urls["sbu"] == f"s3://{bucket}/sbu"

    # S3SYNC_ENDPOINT_URL and boto3's own AWS_ENDPOINT_URL_S3 both reach the server.
    summary = run("ls", "mscoco", "--json", env={**env, "S3SYNC_ENDPOINT_URL": s3_server.endpoint_url})
    assert summary.code == 0, summary.describe()
    assert summary.json()["generation"] == pub.json()["generation"]
    pull = run("pull", "mscoco", tmp_path / "data", "-q", env={**env, "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url})
    assert pull.code == 0, pull.describe()
    assert tree(tmp_path / "data" / "mscoco") == tree(src)

    # A built-in name nobody published: a missing manifest (exit 1), not a usage error.
    missing = run("pull", "imagenet", tmp_path / "data", "--endpoint-url", s3_server.endpoint_url, env=env)
    assert_error(missing, 1)
    assert not (tmp_path / "data" / "imagenet").exists()


def test_ls_lists_builtin_catalog(run) -> None:
    plain = run("ls")
    assert plain.code == 0, plain.describe()
    for name in ("sbu", "mscoco", "imagenet"):
        assert name in plain.stdout
    doc = run("ls", "--json")
    assert doc.code == 0, doc.describe()
    entries = {d["name"]: d for d in doc.json()["datasets"]}
    assert {"sbu", "mscoco", "imagenet"} <= set(entries)
    assert all(entries[n]["title"] and entries[n]["licence"] for n in ("sbu", "mscoco", "imagenet"))
    assert all(entries[n]["url"] is None for n in entries)  # no S3SYNC_BUCKET in the hermetic env


def test_version_and_help(run) -> None:
    version = run("--version")
    assert version.code == 0 and version.stdout.startswith("s3sync "), version.describe()
    assert run("--help").code == 0
    for command in ("publish", "pull", "ls"):
        helped = run(command, "--help")
        assert helped.code == 0 and "--endpoint-url" in helped.stdout


# --------------------------------------------------------------------------- usage errors (exit 2)


USAGE_ERRORS = [
    ["--bogus"],
    [],
    ["frobnicate"],
    ["ls", "--no-such-flag"],
    ["pull", "only-one-arg"],
    ["publish", ".", "--chunk-size", "12XB"],
    ["publish", ".", "--part-size", "lots"],
    ["publish", ".", "--chunk-size", "1KiB"],  # below the smallest chunk
    ["publish", ".", "--concurrency", "0"],
    ["publish", ".", "--concurrency", "many"],
    ["publish", ".", "--to", "s3://"],
    ["publish", ".", "--to", "http://bucket/prefix"],
    ["publish", ".", "--name", "../escape", "--to", "s3://bucket/x"],
    ["pull", "s3://", "DEST"],
    ["pull", "s3:///prefix", "DEST"],
    ["pull", "s3://Bad_Bucket!/x", "DEST"],
    ["pull", "s3://bucket/a/../b", "DEST"],
    ["pull", "sbu", "DEST"],  # a name, but no S3SYNC_BUCKET
    ["pull", "../../etc", "DEST"],
    ["ls", "sbu"],
]


def test_usage_errors_exit_2(run_many, tmp_path: Path) -> None:
    """Bad flags, sizes, URLs and names: exit 2 with error + hint, and nothing created."""
    calls = [([a.replace("DEST", str(tmp_path / "dest")) for a in args], {"cwd": tmp_path})
             for args in USAGE_ERRORS]
    failures = []
    for args, result in zip(USAGE_ERRORS, run_many(calls)):
        try:
            assert_error(result, 2)
        except AssertionError as err:
            failures.append(f"{' '.join(args) or '(no args)'}: {err}")
    assert not failures, "\n\n".join(failures)
    assert not (tmp_path / "dest").exists()


def test_bad_config_file_is_a_usage_error(run, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("bucket = [unclosed\n")
    assert_error(run("ls", env={"S3SYNC_CONFIG": str(config)}), 2)
    config.write_text('no_such_field = 1\n')
    assert_error(run("ls", env={"S3SYNC_CONFIG": str(config)}), 2)
    assert_error(run("ls", env={"S3SYNC_CONFIG": str(tmp_path / "missing.toml")}), 2)


# --------------------------------------------------------------------------- other errors (exit 1)


def test_missing_manifest_bucket_and_source_exit_1(run_many, s3_server, bucket, tmp_path: Path) -> None:
    ep = ["--endpoint-url", s3_server.endpoint_url]
    dest = tmp_path / "dest"
    src = make_tree(tmp_path / "src")
    # A source holding a FIFO, and one with a symlink leaving the tree.
    fifo_src = tmp_path / "fifo-src"
    fifo_src.mkdir()
    os.mkfifo(fifo_src / "pipe")
    out_src = tmp_path / "escape-src"
    out_src.mkdir()
    (out_src / "passwd").symlink_to("/etc/passwd")
    calls = [
        ["pull", f"s3://{bucket}/nothing-here", dest, *ep],  # no manifest
        ["ls", f"s3://{bucket}/nothing-here", *ep],
        ["pull", "s3://no-such-bucket-s3sync/x", dest, *ep],  # no bucket
        ["publish", src, "--to", "s3://no-such-bucket-s3sync/x", *ep],
        ["publish", fifo_src, "--to", f"s3://{bucket}/fifo", *ep],  # unpublishable source
        ["publish", out_src, "--to", f"s3://{bucket}/escape", *ep],
        ["publish", tmp_path / "no-such-dir", "--to", f"s3://{bucket}/none", *ep],  # a typo in SRC_DIR
    ]
    failures = []
    for args, result in zip(calls, run_many([(c, {}) for c in calls])):
        try:
            assert_error(result, 1)
        except AssertionError as err:
            failures.append(str(err))
    assert not failures, "\n\n".join(failures)
    assert not dest.exists() or list(dest.iterdir()) == []
    # Nothing was committed by the failed publishes.
    assert [o.key for o in _list(s3_server, bucket)] == []


def _list(s3_server, bucket):
    from s3sync.config import S3Settings
    from s3sync.stores.s3 import S3Store, make_client

    store = S3Store(make_client(S3Settings(endpoint_url=s3_server.endpoint_url)), bucket)
    return list(store.list(""))


def _without_root_file_access() -> list[str] | None:
    """A command prefix under which permission bits apply, or None if that is impossible.

    Root ignores directory modes (CAP_DAC_OVERRIDE); ``setpriv`` drops that capability and
    CAP_DAC_READ_SEARCH for the child process only.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--inh-caps=-dac_override,-dac_read_search",
              "--bounding-set=-dac_override,-dac_read_search"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        return None
    return prefix


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
@pytest.mark.parametrize("what", ["directory", "file"])
def test_unreadable_source_exits_1(run, s3_server, bucket, tmp_path: Path, what: str) -> None:
    """An unreadable directory fails the scan, an unreadable file its read: either way a
    one-line error naming it, exit 1, nothing left in the bucket."""
    prefix = _without_root_file_access()
    if prefix is None:
        pytest.skip("running as root without setpriv: everything is readable")
    src = make_tree(tmp_path / "src")
    locked = src / "images" if what == "directory" else src / "images" / "0000.jpg"
    mode = locked.stat().st_mode
    locked.chmod(0)
    try:
        result = run("publish", src, "--to", f"s3://{bucket}/x", "--endpoint-url", s3_server.endpoint_url,
                     prefix=prefix)
    finally:
        locked.chmod(mode)
    assert_error(result, 1)
    assert str(locked) in result.stderr
    if what == "file":
        assert f"{locked}: cannot read (Permission denied)" in result.stderr
        assert "hint: make the file readable (or remove it), then publish again" in result.stderr
    assert [o.key for o in _list(s3_server, bucket)] == []


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_verify_lists_each_kind_of_difference(run, s3_server, bucket, tmp_path: Path) -> None:
    """A pulled copy with a file deleted, one changed (same size), one added, one made
    unreadable: one line per problem (kind, path, detail) and exit 1."""
    prefix = _without_root_file_access()
    if prefix is None:
        pytest.skip("running as root without setpriv: every file is readable")
    src = make_tree(tmp_path / "src")
    url, ep = f"s3://{bucket}/v", ["--endpoint-url", s3_server.endpoint_url]
    assert run("publish", src, "--to", url, *ep, "-q").code == 0
    assert run("pull", url, tmp_path / "dest", *ep, "-q").code == 0
    copy = tmp_path / "dest" / "src"
    assert run("verify", copy).code == 0
    (copy / "images" / "0000.jpg").unlink()
    changed = copy / "images" / "0001.jpg"
    changed.write_bytes(bytes(len(changed.read_bytes())))
    (copy / "images" / "stray.jpg").write_bytes(b"x")
    (copy / "big.bin").chmod(0)
    try:
        result = run("verify", copy, prefix=prefix)
    finally:
        (copy / "big.bin").chmod(0o644)
    assert result.code == 1, result.describe()
    lines = {tuple(line.split("\t")[:2]) for line in result.stdout.splitlines()}
    assert {("missing", "images/0000.jpg"), ("changed", "images/0001.jpg"), ("extra", "images/stray.jpg"),
            ("unreadable", "big.bin"), ("mode", "big.bin")} <= lines, result.describe()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)
def test_rejected_credentials_exit_1(run, s3_server, bucket, tmp_path: Path) -> None:
    """rclone accepts only the configured key pair: a wrong secret is a credentials error."""
    result = run("ls", f"s3://{bucket}/x", "--endpoint-url", s3_server.endpoint_url,
                 env={"AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    assert_error(result, 1)


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
@pytest.mark.parametrize("how", ["flag", "env"])
def test_unknown_aws_profile_exits_1(run, s3_server, bucket, tmp_path: Path, how: str) -> None:
    flag, env = (["--profile", "no-such-profile-s3sync"], {}) if how == "flag" else \
        ([], {"AWS_PROFILE": "no-such-profile-s3sync"})
    result = run(*flag, "pull", f"s3://{bucket}/x", str(tmp_path / "dest"),
                 "--endpoint-url", s3_server.endpoint_url, env=env)
    assert_error(result, 1)
    assert "AWS profile 'no-such-profile-s3sync' not found" in result.stderr
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
@pytest.mark.parametrize("value", ["bogus", ""])
def test_bad_aws_checksum_setting_exits_2(run, s3_server, bucket, tmp_path: Path, value: str) -> None:
    result = run("publish", make_tree(tmp_path / "ds"), "--to", f"s3://{bucket}/ds",
                 "--endpoint-url", s3_server.endpoint_url, env={"AWS_REQUEST_CHECKSUM_CALCULATION": value})
    assert_error(result, 2)
    assert "request_checksum_calculation" in result.stderr


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_destination_holding_another_generation_is_updated(run, s3_server, bucket, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "ds")
    url = f"s3://{bucket}/ds"
    ep = ["--endpoint-url", s3_server.endpoint_url]
    assert run("publish", src, "--to", url, *ep, *SMALL, "-q").code == 0
    dest = tmp_path / "dest"
    assert run("pull", url, dest, *ep, "-q").code == 0
    (src / "new.txt").write_text("v2\n")
    assert run("publish", src, "--to", url, *ep, *SMALL, "-q").code == 0
    updated = run("pull", url, dest, *ep)  # issue 13: updated in place, only the new member fetched
    assert updated.code == 0 and "updated ds in" in updated.stderr and "1 file new or changed" in updated.stderr, updated
    assert (dest / "ds" / "new.txt").read_text() == "v2\n"
    assert run("verify", dest / "ds", "-q").code == 0
    # An unrelated existing directory is not overwritten either (an empty one is taken over).
    (tmp_path / "other" / "ds").mkdir(parents=True)
    (tmp_path / "other" / "ds" / "mine.txt").write_text("keep\n")
    assert_error(run("pull", url, tmp_path / "other", *ep), 1)
    assert [p.name for p in (tmp_path / "other" / "ds").iterdir()] == ["mine.txt"]
    (tmp_path / "empty" / "ds").mkdir(parents=True)
    assert run("pull", url, tmp_path / "empty", *ep, "-q").code == 0
    assert (tmp_path / "empty" / "ds" / "new.txt").exists()


def test_closed_stdout_is_not_an_internal_error(s3sync_exe: str) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        proc = subprocess.run([s3sync_exe, "ls", "--json"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ), timeout=60)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr


def test_started_without_stdout_is_not_an_internal_error(s3sync_exe: str) -> None:
    """``s3sync ls >&-``: Python starts with sys.stdout None."""
    proc = subprocess.run([s3sync_exe, "ls"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ), timeout=60, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_adopt_command_then_pull_and_verify(run, s3_server, s3_client, bucket, tmp_path: Path) -> None:
    """``s3sync adopt`` once through the installed command: pieces made by GNU tar, gzip,
    split and md5sum; then ``pull`` reads the version 2 manifest and ``verify`` passes."""
    src = make_tree(tmp_path / "src" / "photos")
    archive = tmp_path / "photos.tar.gz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(src), "."], check=True)
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    subprocess.run(["split", "-n", "3", "-d", str(archive), str(pieces / "photos.tar.gz.")], check=True)
    sums = subprocess.run(["md5sum", *sorted(p.name for p in pieces.iterdir())], cwd=pieces, check=True,
                          capture_output=True).stdout
    (pieces / "MD5SUMS").write_bytes(sums)
    for f in pieces.iterdir():
        s3_client.put_object(Bucket=bucket, Key=f"raw/{f.name}", Body=f.read_bytes())
    url = f"s3://{bucket}/raw"
    ep = ["--endpoint-url", s3_server.endpoint_url]

    adopted = run("adopt", url, "--name", "photos", *ep, "--chunk-size", "64KiB", "-v")
    assert adopted.code == 0, adopted.describe()
    assert f"adopted photos at {url}/manifest.json" in adopted.stderr + adopted.stdout
    assert "3 pieces (gzip tar), 3 verified" in adopted.stderr + adopted.stdout
    assert (adopted.stderr + adopted.stdout).count(", matches") == 3  # -v: a line per piece
    again = run("adopt", url, *ep, "--json")
    assert again.code == 2 and "never overwrites a manifest" in again.stderr and "--replace" in again.stderr

    pull = run("pull", url, tmp_path / "dest", *ep, "--json")
    assert pull.code == 0, pull.describe()
    assert tree(tmp_path / "dest" / "photos") == tree(src)
    checked = run("verify", tmp_path / "dest" / "photos")
    assert checked.code == 0, checked.describe()
