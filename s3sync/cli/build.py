"""``s3sync build DATASET DIR``: make a dataset from its original sources.

One sub-command per dataset, each in its own module (``cli/build_NAME.py`` with
``register(builds, common)`` and ``run(args, settings, ui)``), listed in ``_BUILDERS``.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import build_imagenet, build_mscoco, build_sbu

_BUILDERS = (build_mscoco, build_sbu, build_imagenet)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``build`` sub-command, with one sub-parser per dataset (``args.dataset``)."""
    p = sub.add_parser("build", parents=[common], help="make a dataset from its original sources",
                       description="Make a dataset from its original sources (downloads, URL lists), resumably.")
    builds = p.add_subparsers(dest="dataset", metavar="DATASET")
    builds.required = True
    for module in _BUILDERS:
        module.register(builds, common)
