"""``s3sync captions merge``: combine COCO-model captions files into one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import Settings, format_size
from ..errors import UsageError
from ..ui import UI
from .common import EXIT_OK, help_text, options, plural

_MERGE_HELP = """\
Each IN.json is read and checked (it parses; every image has a caption; every caption points
at an image; every file_name is a file relative to IN.json's directory). The output holds all
their images and captions: image and annotation ids renumbered 0..N-1 in input order (each
image keeps its old id as "source_id"), every file_name made relative to OUT's directory (so
every input must lie under it), and every image tagged "dataset": TAG.

TAG is the name of IN.json's directory (/data/sbu/captions.json -> sbu) unless given as
IN.json:TAG (split at the last ':' when IN.json:TAG is not itself an existing file).

OUT is written atomically; an existing OUT is replaced only with --force, an input never."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``captions`` command and its ``merge`` sub-command to ``sub`` (argparse sub-parsers)."""
    # Local files only: no network options, nothing in parallel.
    common = options(network=False, concurrency=False)
    p = sub.add_parser("captions", parents=[common], help="work on COCO-model captions files (merge)",
                       **help_text("Work on COCO-model captions files (images, annotations with captions).",
                                   ["s3sync captions merge OUT.json IN.json..."]))
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    m = actions.add_parser("merge", parents=[common], help="combine captions files into one (ids unique, "
                                                           "file_names relative to OUT, images tagged)",
                           **help_text(_MERGE_HELP, [
                               "s3sync captions merge /data/captions.json /data/sbu/captions.json "
                               "/data/mscoco/captions.json:coco",
                               "s3sync captions merge all.json a/captions.json b/captions.json --force"]))
    m.add_argument("out", metavar="OUT.json", type=Path, help="the merged file to write")
    m.add_argument("inputs", metavar="IN.json[:TAG]", nargs="+", help="captions files to merge, in order")
    m.add_argument("--force", action="store_true", help="replace OUT.json if it exists")
    m.set_defaults(func=run)


def parse_input(text: str) -> tuple[Path, str | None]:
    """``IN.json`` or ``IN.json:TAG`` -> (path, tag or None for the default).

    The text is a path if it names an existing file (a ':' in a file's name is kept);
    otherwise it is split at its last ':'.

    Raises:
        UsageError: ``IN.json:`` with an empty tag.
    """
    path = Path(text).expanduser()
    if ":" not in text or path.exists():
        return path, None
    name, _, tag = text.rpartition(":")
    if not tag or not name:
        raise UsageError(f"{text!r}: empty dataset tag or file name", hint="write IN.json or IN.json:TAG")
    return Path(name).expanduser(), tag


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..captionfiles import MergeSource, default_tag, merge_files

    sources = []
    for text in args.inputs:
        path, tag = parse_input(text)
        sources.append(MergeSource(path, tag if tag is not None else default_tag(path)))
    progress = ui.progress()
    try:
        result = merge_files(args.out.expanduser(), sources, force=args.force, progress=progress)
    finally:
        getattr(progress, "close", lambda: None)()
    if ui.as_json:
        ui.emit_json({"command": "captions merge", "out": str(result.out), "size": result.size,
                      "images": result.images, "annotations": result.annotations,
                      "inputs": [{"path": str(i.path), "dataset": i.dataset, "prefix": i.prefix,
                                  "images": i.images, "annotations": i.annotations} for i in result.inputs],
                      "elapsed_s": round(result.elapsed_s, 3)})
        return EXIT_OK
    if ui.quiet:
        return EXIT_OK
    for i in result.inputs:
        ui.line(f"{i.dataset}\t{plural(i.images, 'image')}\t{plural(i.annotations, 'caption')}\t{i.path}")
    ui.line(f"total\t{plural(result.images, 'image')}\t{plural(result.annotations, 'caption')}\t{result.out}")
    ui.info(f"merged {plural(len(result.inputs), 'file')} into {result.out}: {plural(result.images, 'image')}, "
            f"{plural(result.annotations, 'caption')}, {format_size(result.size)} ({result.elapsed_s:.1f}s)")
    return EXIT_OK
