"""``s3sync build DATASET DIR``: make a dataset from its original sources.

One sub-command per dataset, each in its own module (``cli/build_NAME.py`` with
``register(builds, common)`` and ``run(args, settings, ui)``), listed in ``_BUILDERS``.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import build_imagenet, build_mscoco, build_sbu
from .common import help_text, options

_BUILDERS = (build_mscoco, build_sbu, build_imagenet)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``build`` sub-command, with one sub-parser per dataset (``args.dataset``)."""
    # Builders download over HTTP(S), not S3: no network options; only mscoco's downloads
    # follow --concurrency (the crawlers have --threads).
    p = sub.add_parser("build", parents=[options(network=False, concurrency=False)],
                       help="make a dataset from its original sources",
                       **help_text("Make a dataset from its original sources (downloads, URL lists), resumably.",
                                   ["s3sync build mscoco /data/mscoco --year 2014",
                                    "s3sync build sbu /data/sbu --threads 32",
                                    "s3sync build imagenet /data/imagenet --urls fall11_urls.txt --words words.txt"]))
    builds = p.add_subparsers(dest="dataset", metavar="DATASET")
    builds.required = True
    for module in _BUILDERS:
        module.register(builds, options(network=False, concurrency=module is build_mscoco))
