"""``s3sync repair``: re-fetch only what ``verify`` flags in a pulled dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import Settings, format_size
from ..errors import DestinationBusyError, VerifyFailed
from ..ui import UI
from .common import EXIT_OK, S3_ENVIRONMENT, help_text, plural, store_for
from .verify import escape_field


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``repair`` sub-command to ``sub`` (argparse sub-parsers)."""
    p = sub.add_parser(
        "repair", parents=[common], help="re-fetch only what verify flags in a pulled dataset",
        **help_text(
            "Verify DIR, then fetch again only the files that are missing or changed, from the\n"
            "source and generation it was pulled from (chunk by chunk, each checked against the\n"
            "manifest's digests), make missing directories and symlinks again, and set modes and\n"
            "mtimes that differ. Entries that are not part of the dataset are listed, and deleted\n"
            "only with --delete-extra.",
            ["s3sync repair /data/sbu", "s3sync repair /data/sbu --delete-extra"],
            environment=S3_ENVIRONMENT,
            exit_codes=((0, "DIR matches its generation again"),
                        (1, "something could not be repaired (listed), the generation is no longer stored, or "
                            "DIR is not a pulled dataset"), (2, "usage"), (130, "interrupted"))))
    p.add_argument("dir", metavar="DIR", type=Path, help="a directory created by 's3sync pull'")
    p.add_argument("--delete-extra", action="store_true", help="delete files and directories that are not part "
                                                               "of the dataset")
    p.add_argument("--wait", action="store_true",
                   help="if another repair is running on DIR, wait for it to finish, then go on")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..journal import wait_for_lock
    from ..repair import repair, source_of

    dest = args.dir.expanduser()
    location = source_of(dest)
    store = store_for(settings, location.bucket)
    try:
        while True:
            progress = ui.progress()
            try:
                result = repair(dest, location, store, settings.transfer, delete_extra=args.delete_extra,
                                progress=progress)
                break
            except DestinationBusyError as err:
                if not args.wait:
                    raise
                ui.info(f"{err}; waiting for it to finish (--wait)")
                wait_for_lock(err.staging)
            finally:
                getattr(progress, "close", lambda: None)()
    finally:
        store.close()
    kept = kept_extra(result)
    for note in result.notes:  # e.g. no reader lease (read-only credentials): gc cannot see this repair
        ui.info(note)
    if ui.as_json:
        ui.emit_json({"command": "repair", "dir": str(result.dest), "url": result.url,
                      "generation": result.generation,
                      "problems": [{"path": p.path, "kind": p.kind, "detail": p.detail} for p in result.problems],
                      "fetched": list(result.fetched), "remade": list(result.remade),
                      "metadata": list(result.metadata), "extra": list(result.extra),
                      "deleted": list(result.deleted), "kept": kept,
                      "unrepaired": [{"path": p.path, "kind": p.kind, "detail": p.detail} for p in result.unrepaired],
                      "bytes_received": result.bytes_received, "stream_size": result.stream_size,
                      "notes": list(result.notes),
                      "ok": not result.unrepaired, "elapsed_s": round(result.elapsed_s, 3)})
    else:
        for path in result.fetched:
            ui.line(f"fetched\t{escape_field(path)}")
        for path in result.remade:
            ui.line(f"remade\t{escape_field(path)}")
        for path in result.metadata:
            ui.line(f"metadata\t{escape_field(path)}")
        for path in result.deleted:
            ui.line(f"deleted\t{escape_field(path)}")
        for path in kept:
            ui.line(f"extra\t{escape_field(path)}")
    if result.unrepaired:
        raise VerifyFailed(f"{result.dest}: {plural(len(result.unrepaired), 'problem')} left unrepaired "
                           f"(first: {result.unrepaired[0].path}: {result.unrepaired[0].detail})",
                           hint="see the list above; 's3sync verify' names what still differs")
    if not result.problems:
        ui.info(f"{result.dest}: nothing to repair (generation {result.generation}, "
                f"{plural(len(result.problems), 'problem')}); nothing fetched")
        return EXIT_OK
    also = (f"; {plural(len(kept), 'extra entry', 'extra entries')} kept (--delete-extra deletes them)"
            if kept else "")
    ui.info(f"{result.dest}: repaired to generation {result.generation}: {plural(len(result.fetched), 'file')} "
            f"fetched again ({format_size(result.bytes_received)} received of a {format_size(result.stream_size)} "
            f"stream), {len(result.remade)} remade, {len(result.metadata)} with mode or mtime set, "
            f"{plural(len(result.deleted), 'extra entry', 'extra entries')} deleted{also} ({result.elapsed_s:.1f}s)")
    return EXIT_OK


def kept_extra(result: Any) -> list[str]:
    """The extra entries still in place: neither deleted, nor inside a deleted directory,
    nor left unrepaired (a deletion that failed is named among those)."""
    deleted = set(result.deleted)
    failed = {p.path for p in result.unrepaired}
    return [p for p in result.extra if p not in failed and not _self_or_parent_in(p, deleted)]


def _self_or_parent_in(path: str, names: set[str]) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:i]) in names for i in range(1, len(parts) + 1))
