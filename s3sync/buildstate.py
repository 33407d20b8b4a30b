"""The build state record of a dataset directory: ``DIR/.s3sync/build.json``.

Every ``s3sync build`` (mscoco, sbu, imagenet) keeps one record per ``DIR``::

    {"version": 1, "builder": "mscoco", "started": "2026-12-06T19:30:00+00:00",
     "complete": false, "outputs": ["captions.json", "neuraltalk2.json"]}

- ``begin`` writes it with ``complete: false`` before the build writes its first byte into
  ``DIR``, and ``finish`` rewrites it with ``complete: true`` as the build's very last step
  (after ``captions.json``). A build that fails or is killed leaves ``complete: false``, so
  ``publish`` (``check_publishable``) refuses the half-built ``DIR`` before any upload. A
  ``DIR`` with no record (a dataset made by hand) is not a build's and publishes as it is.
- ``outputs`` are the files at ``DIR``'s root that builds of this ``DIR`` write
  (``captions.json``...). ``begin`` refuses to start when one of the new build's outputs
  already exists and no earlier build recorded it: it is the user's own file, and a build
  would silently replace it.
- ``begin`` also removes the temporary files a killed ``fsutil.write_atomic`` of those
  outputs (and of the record) left (``.NAME.tmp-PID``, ``fsutil.remove_stale_temps``): the
  build holds ``DIR``'s lock, so no writer of them is alive, and publish would upload them.

Both writes are atomic (``fsutil.write_atomic``: the record is old or new, never torn).
Machinery layer: no pipeline imports, so ``publish`` and the builders can both use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import BuildError, DestinationError, SourceError
from .fsutil import remove_stale_temps, write_atomic

METADATA_DIR = ".s3sync"  # archive.METADATA_DIR: publish leaves it out
RECORD_NAME = "build.json"
RECORD_VERSION = 1
RERUN_HINT = "finish the build: run the same `s3sync build ...` command again"


@dataclass(frozen=True, slots=True)
class BuildState:
    """What a build state record says.

    Attributes:
        path: the record's file.
        builder: the builder's name (``mscoco``, ``sbu``, ``imagenet``); ``""`` if unreadable.
        started: when the last build of ``DIR`` started (ISO 8601, UTC); ``""`` if unknown.
        complete: the last build of ``DIR`` finished (False for a record that cannot be read).
        outputs: the root files builds of ``DIR`` have written.
    """

    path: Path
    builder: str
    started: str
    complete: bool
    outputs: tuple[str, ...]


def record_path(dest: Path) -> Path:
    """``DIR/.s3sync/build.json``."""
    return dest / METADATA_DIR / RECORD_NAME


def read(dest: Path) -> BuildState | None:
    """The record of ``dest``, or None if it has none.

    A record that exists but cannot be read or parsed counts as incomplete (``complete``
    False): it was not written by a build that finished.
    """
    path = record_path(dest)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return BuildState(path, "", "", False, ())
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        return BuildState(path, "", "", False, ())
    outputs = doc.get("outputs")
    return BuildState(path, str(doc.get("builder") or ""), str(doc.get("started") or ""), doc.get("complete") is True,
                      tuple(o for o in outputs if isinstance(o, str)) if isinstance(outputs, list) else ())


def check_publishable(src: Path) -> None:
    """Refuse a ``src`` whose build has not finished (``publish`` calls it before any upload).

    Raises:
        SourceError: ``src/.s3sync/build.json`` exists and does not say ``complete: true``.
    """
    state = read(src)
    if state is not None and not state.complete:
        what = f"the {state.builder} build" if state.builder else "a build"
        raise SourceError(f"{state.path}: {what} of {src} did not finish: the dataset is incomplete; nothing was "
                          "uploaded", hint=RERUN_HINT)


def begin(dest: Path, builder: str, outputs: Sequence[str]) -> BuildState:
    """Record that a build of ``dest`` starts (``complete: false``), before it writes anything
    else; remove the temporary files killed writes of ``outputs`` left. Call it holding
    ``dest``'s build lock.

    Args:
        dest: the dataset directory (its ``.s3sync/`` is created if missing).
        builder: the builder's name.
        outputs: the files at ``dest``'s root this build writes (``captions.json``...).

    Raises:
        BuildError: an output exists in ``dest`` that no earlier build of ``dest`` wrote.
        DestinationError: the record cannot be written.
    """
    earlier = read(dest)
    if earlier is not None and earlier.builder and earlier.builder != builder:
        raise BuildError(f"{dest} was built by 's3sync build {earlier.builder}' ({earlier.path}): a {builder} build "
                         "would mix two datasets and replace its outputs",
                         hint=f"build {builder} into another DIR (combine captions with 's3sync captions merge')")
    owned = set(earlier.outputs) if earlier is not None else set()
    for name in outputs:
        target = dest / name
        if name not in owned and os.path.lexists(target):
            raise BuildError(f"{target} exists, but no build of {dest} wrote it: a build would replace it",
                             hint=f"move {target} away (or build into another DIR), then run the same command "
                                  "again")
    path = record_path(dest)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for name in (*outputs, f"{METADATA_DIR}/{RECORD_NAME}"):
            remove_stale_temps(dest / name)
    except OSError as err:
        raise DestinationError(f"{path.parent}: cannot create or clean ({err.strerror or err})") from err
    state = BuildState(path, builder, datetime.now(UTC).isoformat(timespec="seconds"), False,
                       tuple(sorted(owned | set(outputs))))
    _write(state)
    return state


def finish(state: BuildState) -> BuildState:
    """Record that the build ``begin`` started is complete: its very last write.

    Raises:
        DestinationError: the record cannot be written.
    """
    done = BuildState(state.path, state.builder, state.started, True, state.outputs)
    _write(done)
    return done


def _write(state: BuildState) -> None:
    doc = {"version": RECORD_VERSION, "builder": state.builder, "started": state.started,
           "complete": state.complete, "outputs": list(state.outputs)}
    try:
        write_atomic(state.path, json.dumps(doc).encode())
    except OSError as err:
        raise DestinationError(f"{state.path}: cannot write the build record ({err.strerror or err})",
                               hint="free some space or fix the permissions, then run the same command again; "
                                    "it resumes") from err


__all__ = ["RECORD_NAME", "RERUN_HINT", "BuildState", "begin", "check_publishable", "finish", "read", "record_path"]
