"""The architecture's import rules (DESIGN.md section 4), checked on the source with ast.

- each third-party library is imported by exactly one module;
- imports point down: core < machinery < pipelines < interface;
- errors.py imports nothing; only the CLI and the Python API (api.py) read os.environ.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "s3sync"

OWNER = {
    "boto3": "stores/s3.py",
    "botocore": "stores/s3.py",
    "s3transfer": "stores/s3.py",
    "urllib3": ("stores/s3.py", "stores/http.py", "crawl.py"),  # boto3's stack, our HTTP client, the crawler
    "PIL": "images.py",
    "xxhash": "hashing.py",
    "rich": "ui.py",
    "tarfile": "archive.py",
    "zlib_ng": "codecs.py",  # the gzip decoder, picked by scripts/bench_codecs.py
    "zstandard": "codecs.py",
    "bz2": "codecs.py",
    "lzma": "codecs.py",
    "zipfile": "zipstream.py",
}

LAYER = {
    "errors": 0, "selection": 0, "captions": 0, "pieces": 0, "hashing": 0, "interrupts": 0, "threads": 0, "planning": 0, "manifest": 0, "config": 0, "progress": 0,
    "index": 0,
    "stores": 1, "stores.base": 1, "stores.s3": 1, "stores.http": 1, "codecs": 1, "archive": 1, "engine": 1, "journal": 1, "partfiles": 1,
    "lease": 1, "configfile": 1, "partwriter": 1, "fsutil": 1, "buildstate": 1, "zipstream": 1, "images": 1, "crawl": 1, "indexfile": 1,
    "leftovers": 2, "gc": 2,
    "publish": 2, "pull": 2, "update": 2, "sources": 2, "splitpull": 2, "adopt": 2, "catalog": 2, "verify": 2, "repair": 2,
    "captionfiles": 2, "builders": 2, "builders.mscoco": 2,
    "ui": 3, "cli": 3, "cli.common": 3, "cli.publish": 3, "cli.pull": 3, "cli.adopt": 3, "cli.verify": 3, "cli.repair": 3,
    "cli.ls": 3, "cli.captions": 3, "cli.gc": 3, "cli.build": 3, "cli.build_mscoco": 3, "cli.build_sbu": 3, "cli.build_imagenet": 3, "cli.crawlopts": 3,
    "__main__": 3, "api": 3, "builders.listcrawl": 2, "builders.sbu": 2, "builders.imagenet": 2, "builders.sourcefiles": 2,
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute top-level name or s3sync-relative module, level) for every import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.module or "", 0))
            else:
                base = _name(path).split(".")[: -node.level] if node.level else []
                if node.module:
                    found.append((".".join(base + node.module.split(".")), node.level))
                else:
                    found += [(".".join(base + [a.name]), node.level) for a in node.names]
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_third_party_libraries_have_one_owner(path: Path) -> None:
    rel = str(path.relative_to(PACKAGE))
    for name, level in _imports(path):
        if level:
            continue
        top = name.split(".")[0]
        if top in OWNER:
            owners = OWNER[top] if isinstance(OWNER[top], tuple) else (OWNER[top],)
            assert rel in owners, f"{rel} imports {top}, which belongs to {' and '.join(owners)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    me = _name(path)
    assert me in LAYER, f"{me} has no layer in this test: add it"
    for name, level in _imports(path):
        if not level or name not in LAYER:
            continue
        assert LAYER[name] <= LAYER[me], f"{me} (layer {LAYER[me]}) imports {name} (layer {LAYER[name]})"


def test_errors_imports_nothing() -> None:
    assert [n for n, _ in _imports(PACKAGE / "errors.py") if n != "__future__"] == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_cli_reads_the_environment(path: Path) -> None:
    # The CLI, and the Python API beside it when its caller passes no env (it resolves
    # settings from os.environ as the CLI does).
    if path.relative_to(PACKAGE).as_posix() in ("cli/__init__.py", "api.py"):
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reads = [n.attr for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "os"
             and n.attr in ("environ", "getenv", "environb")]
    assert reads == [], f"{path.name} reads the environment"
