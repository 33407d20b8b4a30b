"""``s3sync verify``: re-hash a pulled dataset and name what differs."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from ..config import Settings, format_size
from ..errors import VerifyFailed, VerifyIncomplete
from ..ui import UI
from .common import CONCURRENCY_ENVIRONMENT, EXIT_OK, help_text, options, plural


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``verify`` sub-command to ``sub`` (argparse sub-parsers)."""
    # No S3: verify reads the local copy only.
    p = sub.add_parser("verify", parents=[options(network=False)], help="re-hash a pulled dataset and name what differs",
                       **help_text(
                           "Re-hash every file of a dataset 'pull' extracted into DIR against the member index the\n"
                           "pull recorded (DIR/.s3sync/), and print one line per difference:\n"
                           "KIND<TAB>PATH<TAB>DETAIL (kinds: missing, changed, type, mode, mtime, link, extra,\n"
                           "unreadable, unverifiable, incomplete, captions). Reads nothing from S3.",
                           ["s3sync verify /data/sbu",
                            "s3sync verify /data/sbu --json | jq '.problems[] | .path'"],
                           environment=CONCURRENCY_ENVIRONMENT,
                           exit_codes=((0, "every entry matches"), (1, "differences (listed on stdout), or DIR is not "
                                       "a pulled dataset"), (2, "usage"), (130, "interrupted"))))
    p.add_argument("dir", metavar="DIR", type=Path, help="a directory created by 's3sync pull'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..verify import verify

    progress = ui.progress()
    try:
        result = verify(args.dir.expanduser(), settings.transfer.concurrency, progress)
    finally:
        getattr(progress, "close", lambda: None)()
    if ui.as_json:
        ui.emit_json({"command": "verify", "dir": str(result.dest), "name": result.name,
                      "generation": result.generation, "checked": result.checked,
                      "checked_bytes": result.checked_bytes, "ok": not result.problems,
                      "problems": [{"path": p.path, "kind": p.kind, "detail": p.detail} for p in result.problems],
                      "captions": ({"images": result.captions.images, "annotations": result.captions.annotations}
                                   if result.captions is not None else None),
                      "elapsed_s": round(result.elapsed_s, 3)})
    else:
        for p in result.problems:
            ui.line(f"{p.kind}\t{escape_field(p.path)}\t{escape_field(p.detail)}")
    if result.problems:
        # A file published without owner read permission is "unverifiable" to a non-root
        # user: not a difference, and pulling again cannot change it.
        unverifiable = {p.path for p in result.problems if p.kind == "unverifiable"}
        extra = {p.path for p in result.problems if p.kind == "extra"}  # not among the checked entries
        differ = {p.path for p in result.problems if p.kind not in ("unverifiable", "extra")}
        if not differ and not extra:
            raise VerifyIncomplete(f"{result.dest}: {len(unverifiable)} of {result.checked} entries cannot be read "
                                   f"back by this user (published without owner read permission); the rest match "
                                   f"generation {result.generation}")
        also = (f", and {len(extra)} extra {'entry is' if len(extra) == 1 else 'entries are'} not part of it"
                if extra else "")
        hint = _repair_hint(result.dest, bool(differ), bool(extra))
        if unverifiable:
            hint += f"; run verify as root to check the {len(unverifiable)} it cannot read"
        if differ:
            message = f"{len(differ)} of {result.checked} entries differ from generation {result.generation}{also}"
        else:
            message = (f"{plural(len(extra), 'extra entry is', 'extra entries are')} not part of generation "
                       f"{result.generation}; the {plural(result.checked, 'entry', 'entries')} of the dataset match")
        raise VerifyFailed(f"{result.dest}: {message}", hint=hint)
    counted = (f", {plural(result.captions.images, 'image')} and {plural(result.captions.annotations, 'caption')} "
               "as the manifest records" if result.captions is not None else "")
    ui.info(f"{result.dest}: {plural(result.checked, 'entry', 'entries')}, "
            f"{format_size(result.checked_bytes)} verified OK{counted} "
            f"({result.elapsed_s:.1f}s)")
    return EXIT_OK


def _repair_hint(dest: Path, differ: bool, extra: bool) -> str:
    """What to run about the differences verify found: ``s3sync repair`` where it can repair
    ``dest`` (a pull of an s3sync dataset that recorded its source), else a fresh pull."""
    from ..errors import S3SyncError
    from ..repair import source_of

    try:
        source_of(dest)
    except S3SyncError:
        return VerifyFailed.hint
    where = shlex.quote(str(dest))
    if not differ:
        return f"run 's3sync repair {where} --delete-extra' to delete them (or remove them yourself)"
    if extra:
        return (f"run 's3sync repair {where}' to fetch again only what differs (add --delete-extra to "
                "delete the extra entries too)")
    return f"run 's3sync repair {where}' to fetch again only what differs"


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_field(text: str) -> str:
    """``text`` as one tab-free line for verify's plain output (``--json`` keeps raw strings).

    A backslash, tab, newline and carriage return become ``\\\\``, ``\\t``, ``\\n``, ``\\r``;
    other ASCII control characters ``\\xHH``; a byte of a name that is not UTF-8 (carried
    as a surrogate escape, PEP 383) ``\\xHH`` too (80-FF: never an ASCII control); any other
    non-printable character (Unicode categories C and Z but space: U+0085, U+2028,
    U+200B...) ``\\uHHHH`` or ``\\UHHHHHHHH``. Everything else is kept, so the escaping is
    reversible and one problem is always one line of three tab-separated fields.
    """
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80 or 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code & 0xFF:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


