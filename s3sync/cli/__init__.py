"""The ``s3sync`` command: argument parsing, settings resolution, error-to-exit-code mapping.

The only place that prints (through ``ui``) or exits. Each command lives in its own
module (``register`` adds its parser, ``run`` resolves what it needs once and calls one
pipeline function); this one parses, loads the settings and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from typing import NoReturn

from .. import configfile, interrupts
from ..config import Settings
from ..errors import (
    Interrupted,
    NotFoundError,
    S3SyncError,
    TransientStoreError,
    UsageError,
)
from ..ui import UI
from . import adopt, build, captions, gc, ls, publish, pull, repair, verify
from .common import S3_ENVIRONMENT, help_text, options
from .verify import escape_field

__all__ = ["build_parser", "escape_field", "load_settings", "main", "on_interrupt", "run"]


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"run '{self.prog} --help' for usage")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``s3sync`` command."""
    # The shared options go after the command's name or before it (``s3sync --profile p pull``,
    # as ``aws --profile p s3 ls``); ``check_applies`` refuses one given before a command
    # that does not take it.
    common = options()  # all the shared options: the commands that use S3 and run in parallel
    parser = _Parser(prog="s3sync", parents=[options(network=False, concurrency=False, suppress=False),
                                             options(output=False)],
                     **help_text("Publish and pull ML datasets through S3, verified and resumable.\n\n"
                                 "'s3sync COMMAND --help' lists the options of a command. The options below, and "
                                 "the network options and --concurrency of the commands that take them, may come "
                                 "before or after the command's name.",
                                 ["s3sync publish /data/sbu --to s3://my-bucket/sbu",
                                  "s3sync pull s3://my-bucket/sbu /data",
                                  "s3sync verify /data/sbu",
                                  "s3sync ls s3://my-bucket"],
                                 environment=S3_ENVIRONMENT))
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    for module in (publish, pull, adopt, verify, repair, ls, gc, build, captions):
        module.register(sub, common)
    return parser


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked (importlib.metadata costs ~40 ms of start-up)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        print(f"s3sync {_version()}")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("s3sync-datasets")
    except PackageNotFoundError:
        return "unknown"


def load_settings(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    """Resolve settings from the config file, ``S3SYNC_*`` variables and flags, as the
    Python API does (``configfile.load``).

    Raises:
        ConfigError: the file is unreadable or not valid TOML.
    """
    flags = {
        "endpoint_url": getattr(args, "endpoint_url", None), "profile": getattr(args, "profile", None),
        "region": getattr(args, "region", None), "no_sign_request": getattr(args, "no_sign_request", False) or None,
        "concurrency": getattr(args, "concurrency", None),
        "chunk_size": getattr(args, "chunk_size", None), "part_size": getattr(args, "part_size", None),
    }
    return configfile.load(env, flags)


_SHARED = {"endpoint_url": "--endpoint-url", "profile": "--profile", "region": "--region",
           "no_sign_request": "--no-sign-request", "concurrency": "--concurrency"}


def check_applies(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a network option or --concurrency given before a command that does not take it
    (``s3sync --endpoint-url URL verify DIR``: verify reads nothing from S3); after the
    command, argparse itself refuses it.

    Raises:
        UsageError: naming the option and the command.
    """
    leaf, names = parser, ["s3sync"]
    while True:  # down to the parser of the (sub-)command that runs
        subs = [a for a in leaf._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
        if not subs:
            break
        names.append(getattr(args, subs[0].dest))
        leaf = subs[0].choices[names[-1]]
    takes = {a.dest for a in leaf._actions}  # noqa: SLF001
    for dest, flag in _SHARED.items():
        if dest in vars(args) and dest not in takes:
            raise UsageError(f"{flag} does not apply to '{' '.join(names)}'",
                             hint=f"run '{' '.join(names)} --help' for its options")


_INTERRUPTED_HINTS = {
    "pull": "run the same command again: the pull resumes where it stopped, keeping the verified chunks",
    "publish": "run the same command again: the publish starts over; what was published before is unchanged",
    "build": "run the same command again: the build resumes; no URL already stored or failed is fetched again",
}


def for_command(err: S3SyncError, command: str | None) -> S3SyncError:
    """Give ``err`` the hint that fits ``command``, where the pipelines cannot know it.

    A missing bucket is created before a publish but only checked before a pull or ``ls``;
    an interrupted (or network-failed) pull resumes, a publish starts over. Hints a
    pipeline chose for the case itself are kept.
    """
    if isinstance(err, NotFoundError) and err.bucket_missing and command == "publish":
        err.hint = "create the bucket first (e.g. 'aws s3 mb s3://BUCKET'), or check its name and --endpoint-url"
    elif isinstance(err, Interrupted) and "hint" not in vars(err):
        err.hint = _INTERRUPTED_HINTS.get(command or "", "run the same command again")
    elif isinstance(err, TransientStoreError) and "hint" not in vars(err) and command != "pull":
        # The class's hint speaks of a pull resuming.
        err.hint = "check --endpoint-url and the network, then run the same command again" + (
            " (the publish starts over; what was published before is unchanged)" if command == "publish" else "")
    return err


def main(argv: list[str] | None = None) -> int:
    """Run the command; return its exit code (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    ui = UI(as_json="--json" in argv)  # a usage error says so as JSON too, before parsing succeeds
    command: str | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        check_applies(parser, args)
        ui = UI(quiet=args.quiet, as_json=args.json, verbose=args.verbose)
        settings = load_settings(args, dict(os.environ))
        return args.func(args, settings, ui)
    except S3SyncError as err:
        if debug:
            traceback.print_exc()
        ui.error(for_command(err, command))
        return err.exit_code
    except BrokenPipeError:
        # stdout was closed early (`s3sync ls --json | head -1`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        ui.error(for_command(Interrupted("interrupted"), command))
        return Interrupted.exit_code
    except Exception as err:  # a bug: say so in one line unless --debug
        if debug:
            traceback.print_exc()
        ui.error(S3SyncError(f"internal error: {type(err).__name__}: {err}",
                             hint="rerun with --debug and report the traceback"))
        return 1


def on_interrupt(signum: int, frame: object) -> None:
    """Handler of the first SIGINT or SIGTERM: a second one exits at once; this one raises
    KeyboardInterrupt in the main thread, at once or, inside a step the journal must see
    whole, at its end (``interrupts.deferred``).

    Raises:
        KeyboardInterrupt: see above.
    """
    signal.signal(signal.SIGINT, _exit_now)
    signal.signal(signal.SIGTERM, _exit_now)
    interrupts.deliver()


_AGAIN = (b"error: interrupted again: stopped at once, without the cleanup the first interrupt started\n"
          b"hint: a pull resumes from its last checkpoint when run again; what a publish left is removed "
          b"by the next publish of the same prefix ('s3sync ls URL -v' lists it)\n")


def _exit_now(signum: int, frame: object) -> None:
    """Handler of a second SIGINT or SIGTERM: say what was skipped, exit 130 at once."""
    try:
        os.write(2, _AGAIN)  # no print(): the interrupted code may hold the stderr buffer's lock
    except OSError:
        pass
    os._exit(Interrupted.exit_code)


def run() -> NoReturn:
    """Console-script entry point.

    SIGTERM is handled like Ctrl-C. After the first interrupt the pipeline flushes its
    resume state and unwinds; a second Ctrl-C exits at once. The process leaves with
    ``os._exit`` once output is flushed, so that worker threads still blocked in a
    network read after an interrupt do not delay the exit (their work is simply redone
    by the resumed run).
    """
    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_interrupt)
    # Started with stdout or stderr closed (``s3sync ls >&-``): Python sets them to None;
    # write that output nowhere rather than fail with a traceback.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until os._exit
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file s3sync writes is closed by now; skipping the interpreter's teardown
    # (garbage-collecting botocore's models, joining idle pool threads) saves ~50 ms.
    os._exit(code)


if __name__ == "__main__":
    run()
