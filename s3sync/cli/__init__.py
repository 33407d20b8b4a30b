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
import tomllib
import traceback
from pathlib import Path
from typing import Any, NoReturn

from .. import interrupts
from ..config import Settings, resolve
from ..errors import (
    ConfigError,
    Interrupted,
    NotFoundError,
    S3SyncError,
    TransientStoreError,
    UsageError,
)
from ..ui import UI
from . import adopt, build, captions, gc, ls, publish, pull, repair, verify
from .verify import escape_field

__all__ = ["build_parser", "escape_field", "load_settings", "main", "on_interrupt", "run"]


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"run '{self.prog} --help' for usage")


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command (``s3sync -q ls`` and ``s3sync ls -q``).

    The copies on the sub-commands default to SUPPRESS so that they do not overwrite a
    value given before the command (an argparse pitfall).
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    d = {"default": argparse.SUPPRESS} if suppress else {}
    flag = {"default": argparse.SUPPRESS} if suppress else {"default": False}
    g.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (default: boto3's, e.g. AWS_ENDPOINT_URL_S3)", **d)
    g.add_argument("--profile", help="AWS profile from ~/.aws/config", **d)
    g.add_argument("--region", help="AWS region", **d)
    g.add_argument("--no-sign-request", action="store_true", help="anonymous requests (public buckets)", **flag)
    g.add_argument("--concurrency", type=int, metavar="N", help="parallel requests (default: 2 per CPU, 4 to 32)", **d)
    g.add_argument("-q", "--quiet", action="store_true", help="print errors only", **flag)
    g.add_argument("-v", "--verbose", action="store_true", help="more detail: retries and resume points (pull), history and leftovers (ls)", **flag)
    g.add_argument("--json", action="store_true", help="print the result as one JSON document on stdout", **flag)
    g.add_argument("--debug", action="store_true", help="show tracebacks", **flag)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``s3sync`` command."""
    common = _common(suppress=True)
    parser = _Parser(prog="s3sync", parents=[_common(suppress=False)],
                     description="Publish and pull ML datasets through S3, verified and resumable.")
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
    """Resolve settings from the config file, ``S3SYNC_*`` variables and flags.

    The config file is ``$S3SYNC_CONFIG`` or ``$XDG_CONFIG_HOME/s3sync/config.toml``
    (``~/.config/...``); a missing default file is not an error.

    Raises:
        ConfigError: the file is unreadable or not valid TOML.
    """
    explicit = env.get("S3SYNC_CONFIG")
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    path = Path(explicit) if explicit else Path(base) / "s3sync" / "config.toml"
    doc: dict[str, Any] = {}
    if explicit or path.exists():
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML ({err})") from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML (not UTF-8: byte {err.object[err.start]:#04x} "
                              f"at offset {err.start})") from err
    flags = {
        "endpoint_url": args.endpoint_url, "profile": args.profile, "region": args.region,
        "no_sign_request": args.no_sign_request or None, "concurrency": args.concurrency,
        "chunk_size": getattr(args, "chunk_size", None), "part_size": getattr(args, "part_size", None),
    }
    return resolve(doc, env, flags, str(path), cpus=os.cpu_count())


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
    ui = UI()
    command: str | None = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
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
