"""s3sync: publish ML datasets to S3 as verified tar parts and pull them back, extracted while downloading.

The Python API (``s3sync/api.py``)::

    import s3sync

    result = s3sync.pull("sbu", "/data")               # -> s3sync.pull.PullResult
    s3sync.publish("/data/sbu", to="s3://bucket/sbu")  # -> PublishResult
    s3sync.verify("/data/sbu").problems                # -> VerifyResult
    s3sync.ls("s3://bucket/sbu").files                 # -> Manifest
    s3sync.repair("/data/sbu").fetched                 # -> RepairResult

Errors are ``s3sync.errors.S3SyncError`` subclasses. The functions are imported on first
use, so that ``import s3sync`` stays fast.
"""

from __future__ import annotations

import sys as _sys
import types as _types
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from . import errors
from .progress import NullProgress, Progress

if _TYPE_CHECKING:
    from .api import CatalogListing, ls, publish, pull, repair, verify

__all__ = ["CatalogListing", "NullProgress", "Progress", "errors", "ls", "publish", "pull", "repair", "verify"]

_API = frozenset({"CatalogListing", "ls", "publish", "pull", "repair", "verify"})


def __getattr__(name: str) -> _Any:
    # PEP 562: the API module (and through it the pipelines) is imported on first use.
    if name in _API:
        from . import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 's3sync' has no attribute {name!r}")


def __dir__() -> list[str]:
    # PEP 562: the public names only, each of which resolves (not the helpers imported here,
    # nor the pipeline submodules that happen to be imported, such as ``gc``).
    return sorted(__all__)


class _Package(_types.ModuleType):
    """``s3sync.pull``, ``publish`` and ``verify`` are the API's functions, though submodules
    of the same names exist (the pipelines): importing a submodule binds it on its package
    (importlib's ``setattr(parent, child, module)``), which would replace the function. That
    binding is dropped here; the submodules stay importable by their full names
    (``from s3sync.pull import PullResult``, ``importlib.import_module("s3sync.pull")``), but
    ``from s3sync import pull`` and ``import s3sync.pull as m`` give the function."""

    def __setattr__(self, name: str, value: _Any) -> None:
        if name in _API and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
