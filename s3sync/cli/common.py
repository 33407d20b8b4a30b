"""What the command modules share: the exit code of success, the S3 store, plurals, the option
groups (output, network, concurrency) and the layout of each command's help."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from ..config import Settings

EXIT_OK = 0


def store_for(settings: Settings, bucket: str) -> Any:
    from ..stores.s3 import S3Store, make_client

    client = make_client(settings.s3, max_connections=settings.transfer.concurrency + 4)
    return S3Store(client, bucket, concurrency=settings.transfer.concurrency)


def plural(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def options(*, network: bool = True, concurrency: bool = True, output: bool = True,
            suppress: bool = True) -> argparse.ArgumentParser:
    """A parent parser with the options a command accepts beside its own.

    Every command takes the output options (-q, -v, --json, --debug), before or after its
    name (``s3sync -q ls`` = ``s3sync ls -q``). Only the commands that talk to S3 take the
    network options (--endpoint-url, --profile, --region, --no-sign-request), and only those
    that run requests or hashes in parallel take --concurrency.

    Args:
        network: add the network options.
        concurrency: add --concurrency.
        output: add the output options.
        suppress: default every option to SUPPRESS (the copies on the sub-commands: a value
            given before the command must not be overwritten by the sub-parser's default, an
            argparse pitfall); False for the top-level parser, which gives the defaults.
    """
    p = argparse.ArgumentParser(add_help=False)
    d = {"default": argparse.SUPPRESS} if suppress else {}
    flag = {"default": argparse.SUPPRESS} if suppress else {"default": False}
    if network:
        g = p.add_argument_group("network options")
        g.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (default: boto3's, e.g. AWS_ENDPOINT_URL_S3)",
                       **d)
        g.add_argument("--profile", help="AWS profile from ~/.aws/config", **d)
        g.add_argument("--region", help="AWS region", **d)
        g.add_argument("--no-sign-request", action="store_true", help="anonymous requests (public buckets)", **flag)
    if concurrency:
        p.add_argument("--concurrency", type=int, metavar="N",
                       help="parallel requests or files (default: 2 per CPU, 4 to 32)", **d)
    if not output:
        return p
    g = p.add_argument_group("output options")
    g.add_argument("-q", "--quiet", action="store_true", help="print errors only", **flag)
    g.add_argument("-v", "--verbose", action="store_true",
                   help="more detail: retries and resume points (pull), history and leftovers (ls)", **flag)
    g.add_argument("--json", action="store_true",
                   help="print the result (or the error) as one JSON document on stdout", **flag)
    g.add_argument("--debug", action="store_true", help="show tracebacks", **flag)
    return p


EXIT_CODES = (
    (0, "success"),
    (1, "failure (the error line says what and the hint line what to do)"),
    (2, "usage: a bad option, size, name or URL, or an invalid config file"),
    (130, "interrupted (Ctrl-C, SIGTERM)"),
)

S3_ENVIRONMENT = (
    ("S3SYNC_BUCKET", "the bucket a dataset name lives in (s3://BUCKET/NAME)"),
    ("S3SYNC_ENDPOINT_URL", "S3 endpoint, as --endpoint-url"),
    ("S3SYNC_CONCURRENCY", "as --concurrency"),
    ("S3SYNC_CONFIG", "the config file (default ~/.config/s3sync/config.toml)"),
    ("AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_S3, ...", "boto3's usual settings and credentials chain"),
)
CONCURRENCY_ENVIRONMENT = (("S3SYNC_CONCURRENCY", "as --concurrency"),)


def help_text(description: str, examples: list[str], *, environment: tuple[tuple[str, str], ...] = (),
              exit_codes: tuple[tuple[int, str], ...] = EXIT_CODES) -> dict[str, Any]:
    """``add_parser`` keywords for a command's ``--help``: its description, then examples,
    environment variables and exit codes, as ``aws s3 cp help`` lays them out.

    Args:
        description: paragraphs, already wrapped (shown as given).
        examples: command lines (``s3sync ...``), with ``#`` comments if any.
        environment: (variable, meaning) the command reads.
        exit_codes: (code, meaning).
    """
    # A paragraph given as one long line is wrapped; one broken by hand is kept as it is.
    paragraphs = [textwrap.fill(para, 88) if max(map(len, para.splitlines())) > 88 else para
                  for para in description.split("\n\n")]
    description = "\n\n".join(paragraphs)
    parts = ["examples:", *(f"  {e}" for e in examples)]
    if environment:
        width = max(len(name) for name, _ in environment)
        parts += ["", "environment variables:", *(f"  {name:<{width}}  {what}" for name, what in environment)]
    parts += ["", "exit codes:", *(f"  {code:<3}  {what}" for code, what in exit_codes)]
    return {"description": description, "epilog": "\n".join(parts),
            "formatter_class": argparse.RawDescriptionHelpFormatter}
