"""``s3sync build``: make a dataset from its original sources, one sub-command per dataset."""

from __future__ import annotations

import argparse
from typing import Any

from . import build_mscoco


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``build`` command and its per-dataset sub-commands to ``sub``."""
    p = sub.add_parser("build", help="make a dataset from its original sources (mscoco, ...)")
    builds = p.add_subparsers(dest="dataset", metavar="DATASET", parser_class=type(p))
    builds.required = True
    build_mscoco.register(builds, common)
