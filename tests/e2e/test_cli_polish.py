"""CLI polish (issue 13 section 2) through the installed command: ``--json`` errors, each
command's help, the network options only where S3 is used, and ``pull --wait``."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest
from test_cli import (  # tests/e2e is on sys.path (rootdir-relative imports)
    SMALL,
    make_tree,
)

from s3sync.journal import staging_dir

moto = pytest.mark.parametrize("s3_server", ["moto"], indirect=True)


def error_doc(result, code: int, kind: str) -> dict:
    """``--json`` on an error: one JSON document on stdout, the human lines on stderr."""
    assert result.code == code, result.describe()
    assert result.stdout, result.describe()
    doc = json.loads(result.stdout)
    assert set(doc) == {"error"} and set(doc["error"]) == {"type", "message", "hint", "exit_code"}, doc
    assert doc["error"]["type"] == kind and doc["error"]["exit_code"] == code, doc
    assert result.stderr.startswith(f"error: {doc['error']['message']}\n"), result.describe()
    if doc["error"]["hint"]:
        assert f"hint: {doc['error']['hint']}" in result.stderr
    assert "Traceback" not in result.stderr
    return doc["error"]


@moto
def test_json_errors_are_one_document_on_stdout(run, s3_server, bucket, tmp_path: Path) -> None:
    ep = ["--endpoint-url", s3_server.endpoint_url]
    missing = error_doc(run("pull", f"s3://{bucket}/nothing", tmp_path / "d", *ep, "--json"), 1, "NotFoundError")
    assert "nothing" in missing["message"] and missing["hint"]
    error_doc(run("--json", "pull"), 2, "UsageError")  # refused by argparse, before the command runs
    error_doc(run("ls", "s3://Bad_Bucket/x", "--json"), 2, "UsageError")
    error_doc(run("verify", tmp_path, "--json"), 1, "DestinationError")
    plain = run("pull", f"s3://{bucket}/nothing", tmp_path / "d", *ep)  # without --json: stdout stays empty
    assert plain.code == 1 and plain.stdout == "" and plain.stderr.startswith("error: ")

    # verify prints its result (problems, "ok": false) and exits 1: still one document.
    url = f"s3://{bucket}/ds"
    assert run("publish", make_tree(tmp_path / "ds"), "--to", url, *ep, *SMALL, "-q").code == 0
    assert run("pull", url, tmp_path / "data", *ep, "-q").code == 0
    (tmp_path / "data" / "ds" / "big.bin").write_bytes(b"x")
    checked = run("verify", tmp_path / "data" / "ds", "--json")
    assert checked.code == 1, checked.describe()
    doc = json.loads(checked.stdout)
    assert doc["ok"] is False and "error" not in doc
    assert "big.bin" in {p["path"] for p in doc["problems"]}


COMMANDS = [["publish"], ["pull"], ["adopt"], ["verify"], ["repair"], ["ls"], ["gc"], ["build"], ["build", "mscoco"],
            ["build", "sbu"], ["build", "imagenet"], ["captions"], ["captions", "merge"]]
S3 = {"publish", "pull", "adopt", "repair", "ls", "gc"}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_examples_environment_and_exit_codes(run, command: list[str]) -> None:
    r = run(*command, "--help")
    assert r.code == 0, r.describe()
    text = r.stdout
    assert "examples:\n  s3sync " in text and "exit codes:\n  0 " in text and "\n  130  interrupted" in text, text
    assert ("--endpoint-url" in text and "--no-sign-request" in text) == (command[0] in S3), text
    assert ("S3SYNC_BUCKET" in text) == (command[0] in S3), text
    takes_concurrency = command[0] in S3 or command in (["verify"], ["build", "mscoco"])
    assert ("--concurrency" in text) == takes_concurrency, text
    if takes_concurrency:
        assert "S3SYNC_CONCURRENCY" in text
    assert all(len(line) <= 120 for line in text.splitlines()), text  # wrapped, not one long line


def test_top_level_help_lists_examples_and_exit_codes(run) -> None:
    r = run("--help")
    assert r.code == 0 and "examples:" in r.stdout and "exit codes:" in r.stdout, r.describe()


@pytest.mark.parametrize("args", [
    ["verify", "--endpoint-url", "http://127.0.0.1:9", "DIR"],
    ["--endpoint-url", "http://127.0.0.1:9", "verify", "DIR"],
    ["--no-sign-request", "captions", "merge", "OUT.json", "IN.json"],
    ["captions", "merge", "OUT.json", "IN.json", "--concurrency", "2"],
    ["--concurrency", "2", "build", "sbu", "DIR"],
    ["build", "imagenet", "DIR", "--urls", "u.txt", "--region", "eu-west-1"],
    ["--profile", "p", "build", "mscoco", "DIR"],
], ids=lambda a: " ".join(a))
def test_network_options_only_where_s3_is_used(run, tmp_path: Path, args: list[str]) -> None:
    r = run(*args, cwd=tmp_path)
    assert r.code == 2 and r.stdout == "", r.describe()
    assert r.stderr.startswith("error: ") and ("does not apply" in r.stderr or "unrecognized" in r.stderr), \
        r.describe()
    assert not any(tmp_path.iterdir())  # nothing was started


def test_network_options_before_an_s3_command_still_apply(run, tmp_path: Path) -> None:
    """``s3sync --endpoint-url URL ls s3://b/x`` as ``aws --endpoint-url URL s3 ls``: the option is
    taken (an endpoint with a path is refused by name, so it was read)."""
    r = run("--endpoint-url", "http://127.0.0.1:9/path", "ls", "s3://bucket/x")
    assert r.code == 2 and "has a path" in r.stderr, r.describe()


@moto
def test_a_second_pull_fails_at_once_naming_the_holder_or_waits(run, s3sync_exe, s3_server, bucket,
                                                                 tmp_path: Path) -> None:
    """The lock of the staging directory is held here, by this test (pid known), as a running
    pull would hold it: without --wait the pull fails at once naming the pid; with --wait it
    says it waits, and finishes once the lock is released."""
    ep = ["--endpoint-url", s3_server.endpoint_url]
    url = f"s3://{bucket}/ds"
    src = make_tree(tmp_path / "ds")
    assert run("publish", src, "--to", url, *ep, *SMALL, "-q").code == 0
    parent = tmp_path / "data"
    staging = staging_dir(parent, "ds")
    staging.mkdir(parents=True)
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        busy = run("pull", url, parent, *ep)
        assert busy.code == 1, busy.describe()
        assert f"another s3sync pull (pid {os.getpid()}) is already writing {staging}" in busy.stderr
        assert "--wait" in busy.stderr.splitlines()[-1]
        doc = error_doc(run("pull", url, parent, *ep, "--json"), 1, "DestinationBusyError")
        assert str(os.getpid()) in doc["message"]

        waiting = subprocess.Popen([s3sync_exe, "pull", url, parent, *ep, "--wait"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        try:
            first = waiting.stderr.readline()  # blocks until the pull says it waits
            assert "is already writing" in first and "waiting for it to finish (--wait)" in first, first
            assert waiting.poll() is None
        except BaseException:
            waiting.kill()
            raise
    finally:
        os.close(fd)  # releases the lock: the waiting pull goes on
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, first + err
    assert (parent / "ds" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert not staging.exists()
