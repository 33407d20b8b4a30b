"""Hints that depend on the command (issue 10 item 11): the pipelines raise the same classes
for pull and publish; ``cli.main`` knows which command ran and says what a rerun will do.

The pipeline functions are replaced by ones that raise at once, so no server is needed (the
S3 client is built but never sends a request).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from s3sync import cli
from s3sync.errors import Interrupted, NotFoundError, TransientStoreError

ENDPOINT = ["--endpoint-url", "http://127.0.0.1:9"]


def run_raising(monkeypatch, capsys, tmp_path: Path, command: str, exc: BaseException) -> tuple[int, str]:
    def raise_it(*args, **kwargs):
        raise exc

    # By full name: ``s3sync.pull`` and ``s3sync.publish`` are the API's functions.
    monkeypatch.setattr(importlib.import_module("s3sync.pull"), "pull", raise_it)
    monkeypatch.setattr(importlib.import_module("s3sync.publish"), "publish", raise_it)
    (tmp_path / "ds").mkdir(exist_ok=True)
    argv = (["pull", "s3://bucket/ds", str(tmp_path / "dest")] if command == "pull"
            else ["publish", str(tmp_path / "ds"), "--to", "s3://bucket/ds"])
    code = cli.main([*argv, *ENDPOINT])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("exc", [Interrupted("stopped"), KeyboardInterrupt()], ids=["Interrupted", "Ctrl-C"])
def test_interrupted_pull_says_a_rerun_resumes(monkeypatch, capsys, tmp_path: Path, exc) -> None:
    code, err = run_raising(monkeypatch, capsys, tmp_path, "pull", exc)
    assert code == 130
    hint = err.splitlines()[-1]
    assert hint.startswith("hint: ") and "resumes" in hint and "publish" not in hint


@pytest.mark.parametrize("exc", [Interrupted("stopped"), KeyboardInterrupt()], ids=["Interrupted", "Ctrl-C"])
def test_interrupted_publish_says_a_rerun_starts_over(monkeypatch, capsys, tmp_path: Path, exc) -> None:
    code, err = run_raising(monkeypatch, capsys, tmp_path, "publish", exc)
    assert code == 130
    hint = err.splitlines()[-1]
    assert hint.startswith("hint: ") and "starts over" in hint and "pull" not in hint


def test_a_hint_chosen_by_the_pipeline_is_kept(monkeypatch, capsys, tmp_path: Path) -> None:
    _, err = run_raising(monkeypatch, capsys, tmp_path, "pull", Interrupted("stopped", hint="a special case"))
    assert err.splitlines()[-1] == "hint: a special case"


def test_missing_bucket_hint_on_publish_says_create_it(monkeypatch, capsys, tmp_path: Path) -> None:
    missing = NotFoundError("s3://bucket: bucket not found", bucket_missing=True, hint="check the bucket name")
    _, err = run_raising(monkeypatch, capsys, tmp_path, "publish", missing)
    assert "create the bucket first" in err.splitlines()[-1]
    missing = NotFoundError("s3://bucket: bucket not found", bucket_missing=True, hint="check the bucket name")
    _, err = run_raising(monkeypatch, capsys, tmp_path, "pull", missing)
    assert err.splitlines()[-1] == "hint: check the bucket name"


def test_network_failure_hint_speaks_of_the_command_that_ran(monkeypatch, capsys, tmp_path: Path) -> None:
    _, err = run_raising(monkeypatch, capsys, tmp_path, "publish", TransientStoreError("s3://b/k: reset"))
    assert "resumes" not in err and "publish starts over" in err.splitlines()[-1]
    _, err = run_raising(monkeypatch, capsys, tmp_path, "pull", TransientStoreError("s3://b/k: reset"))
    assert "resumes" in err.splitlines()[-1]
