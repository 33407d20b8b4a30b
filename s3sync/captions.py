"""COCO-model caption files: parse, check, merge, and convert for NeuralTalk2. Pure: no I/O.

The model is MS COCO's captions format (cocodataset.org, "Data format", captions section,
as in ``annotations/captions_train2014.json``)::

    {"info": {...}, "licenses": [...],
     "images": [{"id": int, "file_name": str, "width": int, "height": int, ...}, ...],
     "annotations": [{"id": int, "image_id": int, "caption": str}, ...]}

s3sync's builders write ``captions.json`` in this model at the root of a dataset with
``file_name`` relative to that root (``train2014/COCO_train2014_000000000009.jpg``), so that
SBU, ImageNet and COCO can be combined (``merge``) and checked before a publish (``check``).
NeuralTalk2's ``prepro.py`` reads a list ``[{"file_path", "captions", "id"}]`` instead
(``to_neuraltalk2``).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import CaptionsError

CAPTIONS_NAME = "captions.json"
"""The captions file at the root of a dataset, checked by publish and verify."""

_SHOWN = 3  # problems named in one error message
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A JSON escape of a UTF-16 surrogate (``\\ud800``-``\\udfff``): the only way a parsed
document can hold a string that is not encodable as UTF-8 (a lone one)."""


@dataclass(frozen=True, slots=True)
class CaptionCounts:
    """How many images and captions (annotations) a captions file holds."""

    images: int
    annotations: int


@dataclass(frozen=True, slots=True)
class MergeInput:
    """One file to ``merge``.

    Attributes:
        dataset: the tag each of its images gets (``"dataset"`` field), e.g. ``sbu``.
        doc: its parsed document (``parse``).
        prefix: the POSIX path from the merged file's directory to this file's directory
            (``""`` if the same), prepended to every ``file_name``.
    """

    dataset: str
    doc: dict[str, Any]
    prefix: str = ""


def parse(data: bytes, source: str) -> dict[str, Any]:
    """The document in ``data`` (UTF-8 JSON), with its ``images`` and ``annotations`` lists.

    Args:
        data: the file's bytes.
        source: the file's name for messages.

    Raises:
        CaptionsError: not UTF-8 JSON, not an object, ``images``/``annotations`` missing
            or not lists, ``NaN``/``Infinity`` (Python's JSON extension, not JSON),
            nested too deeply for the parser, or a string holding a lone
            surrogate (``\\ud800``: it cannot be written as UTF-8).
    """
    try:
        doc = json.loads(data, parse_constant=_no_constant)
    except _NotJson as err:
        raise CaptionsError(f"{source}: not valid JSON: it holds {err.args[0]}, which JSON (RFC 8259) does not "
                            "have", hint="write a number or null there") from None
    except RecursionError:
        raise CaptionsError(f"{source}: its JSON is nested too deeply to be read (arrays or objects inside one "
                            "another thousands of levels deep)") from None
    except UnicodeDecodeError as err:
        raise CaptionsError(f"{source}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                            f"{err.start})") from err
    except json.JSONDecodeError as err:
        raise CaptionsError(f"{source}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from err
    if not isinstance(doc, dict):
        raise CaptionsError(f"{source}: the top level is a JSON {type(doc).__name__}, not an object with "
                            "'images' and 'annotations'")
    for field in ("images", "annotations"):
        if not isinstance(doc.get(field), list):
            what = "missing" if field not in doc else f"a {type(doc[field]).__name__}, not a list"
            raise CaptionsError(f"{source}: '{field}' is {what}")
    if _SURROGATE_ESCAPE.search(data):  # rare: only then is the document walked
        _check_text(doc, source)
    return doc


class _NotJson(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity`` in the input (``json.loads`` accepts them)."""


def _no_constant(name: str) -> Any:
    raise _NotJson(name)


def _check_text(doc: Any, source: str) -> None:
    """Refuse a document holding a string (or key) that cannot be encoded as UTF-8 (a lone
    surrogate), naming where. ``json.dumps`` finds whether there is one at C speed; only
    then is the document walked to name it.

    Raises:
        CaptionsError: naming ``source`` and the first such string's place.
    """
    try:
        json.dumps(doc, ensure_ascii=False, check_circular=False).encode("utf-8")
        return
    except UnicodeEncodeError:
        pass
    except (ValueError, TypeError, RecursionError):
        return  # not JSON text at all: the writer names that
    where = _unencodable(doc, "")
    raise CaptionsError(f"{source}: {where or 'a string'} holds a lone UTF-16 surrogate (an unpaired \\ud800-"
                        "\\udfff escape): it is not text and cannot be written as UTF-8",
                        hint="fix that string in the file (or remove it)")


def _unencodable(value: Any, where: str) -> str | None:
    """The place (``annotations[3].caption``) of the first string not encodable as UTF-8."""
    stack = [(value, where)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return where
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                stack.append((item, f"{where}.{key}" if where else str(key)))
                stack.append((key, f"{where} (a key)" if where else "a key"))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]") for i, item in reversed(list(enumerate(value))))
    return None


def counts(doc: dict[str, Any]) -> CaptionCounts:
    """The image and annotation counts of a parsed document (no check)."""
    return CaptionCounts(len(doc["images"]), len(doc["annotations"]))


def check(doc: dict[str, Any], source: str, exists: Callable[[str], bool] | None = None) -> CaptionCounts:
    """Check that a parsed document holds together; return its counts.

    Every image has an integer ``id`` (unique) and a relative ``file_name`` that stays inside
    the dataset (no ``..`` component, not absolute) and, if ``exists`` is given, for which
    ``exists(file_name)`` is true; every annotation has an integer ``id`` (unique), an
    ``image_id`` naming an image, and a string ``caption``; every image has at least one caption;
    every string can be written as UTF-8 (no lone surrogate).

    Args:
        doc: from ``parse``.
        source: the file's name for messages.
        exists: tells whether a ``file_name`` (relative to the dataset's root) is a file.

    Raises:
        CaptionsError: naming ``source``, how many problems there are, and the first few.
    """
    problems: list[str] = []
    total = shown = 0

    def bad(text: str, weight: int = 1) -> None:
        """One line naming ``weight`` problems (the images without caption share one line)."""
        nonlocal total, shown
        total += weight
        if len(problems) < _SHOWN:
            problems.append(text)
            shown += weight

    image_ids: set[int] = set()
    names: set[str] = set()
    for i, image in enumerate(doc["images"]):
        if not isinstance(image, dict) or not _is_int(image.get("id")):
            bad(f"images[{i}] has no integer 'id'")
            continue
        iid = image["id"]
        if iid in image_ids:
            bad(f"images[{i}]: id {iid} is used twice")
        image_ids.add(iid)
        name = image.get("file_name")
        if not isinstance(name, str) or not name:
            bad(f"image {iid} has no 'file_name'")
        elif not _inside(name):
            bad(f"image {iid}: file_name {name!r} is not a relative path inside the dataset")
        elif name in names:
            bad(f"image {iid}: file_name {name!r} is used twice")
        else:
            names.add(name)
            if exists is not None and not exists(name):
                bad(f"image {iid}: file_name {name!r} does not exist")
    captioned: set[int] = set()
    ann_ids: set[int] = set()
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            bad(f"annotations[{i}] has no integer 'id'")
            continue
        aid = ann["id"]
        if aid in ann_ids:
            bad(f"annotations[{i}]: id {aid} is used twice")
        ann_ids.add(aid)
        if not isinstance(ann.get("caption"), str):
            bad(f"annotation {aid} has no string 'caption'")
        image_id = ann.get("image_id")
        if not _is_int(image_id) or image_id not in image_ids:
            bad(f"annotation {aid} points at image_id {image_id!r}, which is not an image")
        else:
            captioned.add(image_id)
    uncaptioned = len(image_ids) - len(captioned)
    if uncaptioned:
        first = next(iid for iid in (im.get("id") for im in doc["images"] if isinstance(im, dict))
                     if iid in image_ids and iid not in captioned)
        bad(f"{uncaptioned:,} image{'s have' if uncaptioned > 1 else ' has'} no caption (first: image {first})",
            uncaptioned)
    if not total:
        _check_text(doc, source)  # a document built in memory (not from ``parse``) may hold one too
    if total:
        more = f" (and {total - shown:,} more)" if total > shown else ""
        raise CaptionsError(f"{source}: {total:,} problem{'s' if total > 1 else ''} in {len(doc['images']):,} images "
                            f"and {len(doc['annotations']):,} captions: {'; '.join(problems)}{more}")
    return counts(doc)


def new_document(description: str, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
                 licenses: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A COCO-model document with an ``info`` block (``description``, ``date_created`` now, UTC)."""
    info = {"description": description, "date_created": datetime.now(UTC).isoformat(timespec="seconds")}
    return {"info": info, "licenses": licenses or [], "images": images, "annotations": annotations}


def merge(inputs: Sequence[MergeInput], description: str = "merged by s3sync captions merge") -> dict[str, Any]:
    """One document holding every image and caption of ``inputs``, in order.

    Image ids become 0..N-1 and annotation ids 0..M-1 in input order (each image keeps its
    original id as ``source_id``); ``file_name`` gets the input's ``prefix``; each image is
    tagged ``"dataset": input.dataset``; licence ids are renumbered the same way. Counts are
    preserved: the result has the sum of the inputs' images and annotations.

    Raises:
        CaptionsError: an annotation points at no image of its input (``check`` first).
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    licenses: list[dict[str, Any]] = []
    for item in inputs:
        licence_ids: dict[Any, int] = {}
        for lic in item.doc.get("licenses") or []:
            if isinstance(lic, dict) and _is_key(lic.get("id")):
                licence_ids[lic.get("id")] = len(licenses) + 1
                licenses.append({**lic, "id": len(licenses) + 1})
        image_ids: dict[int, int] = {}
        for image in item.doc["images"]:
            new = {**image, "id": len(images), "source_id": image["id"], "dataset": item.dataset,
                   "file_name": posixpath.normpath(posixpath.join(item.prefix, image["file_name"]))}
            if "license" in image and _is_key(image["license"]) and image["license"] in licence_ids:
                new["license"] = licence_ids[image["license"]]
            image_ids[image["id"]] = new["id"]
            images.append(new)
        for ann in item.doc["annotations"]:
            if ann.get("image_id") not in image_ids:
                raise CaptionsError(f"{item.dataset}: annotation {ann.get('id')!r} points at image_id "
                                    f"{ann.get('image_id')!r}, which is not an image")
            annotations.append({**ann, "id": len(annotations), "image_id": image_ids[ann["image_id"]]})
    return new_document(description, images, annotations, licenses)


def to_neuraltalk2(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """NeuralTalk2's input list: ``[{"file_path": file_name, "captions": [...], "id": image id}]``,
    one entry per image in document order, captions in annotation order (the format read by
    ``prepro.py`` of github.com/karpathy/neuraltalk2)."""
    by_image: dict[int, list[str]] = {image["id"]: [] for image in doc["images"]}
    for ann in doc["annotations"]:
        if ann["image_id"] in by_image:
            by_image[ann["image_id"]].append(ann["caption"])
    return [{"file_path": image["file_name"], "captions": by_image[image["id"]], "id": image["id"]}
            for image in doc["images"]]


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON, as COCO's own files are (no spaces, non-ASCII kept); strict
    (RFC 8259): a float NaN or infinity raises ValueError rather than being written bare."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _is_key(value: object) -> bool:
    """A licence id that can name a licence: a JSON scalar (a list or object cannot)."""
    return value is None or isinstance(value, (int, float, str))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inside(name: str) -> bool:
    if name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    return ".." not in name.split("/") and posixpath.normpath(name) not in (".", "")
