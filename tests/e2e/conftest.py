"""Fixtures for the end-to-end tier: the installed ``s3sync`` command in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

COMMAND_TIMEOUT_S = 120


def _s3sync_executable() -> str:
    """The console script installed next to this interpreter (not a pyenv shim on PATH)."""
    beside = Path(sysconfig.get_path("scripts")) / "s3sync"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("s3sync")
    if found is None:
        pytest.fail("the s3sync command is not installed: pip install -e .", pytrace=False)
    return found


@dataclass
class Result:
    """What one run of the command did."""

    args: list[str]
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    def describe(self) -> str:
        return f"s3sync {' '.join(self.args)} -> {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"


@pytest.fixture(scope="session")
def s3sync_exe() -> str:
    return _s3sync_executable()


@pytest.fixture
def run(s3sync_exe: str):
    """``run(*args, env=None, cwd=None, prefix=None) -> Result``: the command with this test's environment.

    The environment is a copy of ``os.environ`` as the autouse hermetic fixture left it
    (dummy credentials, no AWS_*/S3SYNC_* leaking in), plus ``env`` overrides; a value of
    None removes a variable. ``prefix`` goes before the command (e.g. ``setpriv ...``).
    """

    def _run(*args: str | os.PathLike, env: dict[str, str | None] | None = None,
             cwd: Path | None = None, prefix: list[str] | None = None) -> Result:
        full_env = dict(os.environ)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        argv = [str(a) for a in args]
        proc = subprocess.run([*(prefix or []), s3sync_exe, *argv], capture_output=True, text=True, env=full_env,
                              cwd=cwd, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
        return Result(argv, proc.returncode, proc.stdout, proc.stderr)

    return _run


@pytest.fixture
def run_many(run):
    """``run_many([(args, kwargs), ...]) -> [Result]``: independent commands run concurrently.

    Each command spends most of its time starting Python and importing boto3, so a few at
    a time keep the suite fast on a 2-core machine.
    """
    from concurrent.futures import ThreadPoolExecutor

    def _run_many(calls: list[tuple[list, dict]]) -> list[Result]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda call: run(*call[0], **call[1]), calls))

    return _run_many
