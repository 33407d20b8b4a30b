"""Rendering for the terminal: progress displays, tables, messages. The only module
that imports ``rich``.

Data goes to stdout, messages and progress to stderr. ``RichProgress`` draws bars
on a terminal; ``PlainProgress`` prints a line every few seconds when stderr is not
a terminal (logs, CI); ``-q`` uses ``progress.NullProgress``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, TextIO

from .config import format_size
from .errors import S3SyncError
from .progress import ITEM_STAGES

if TYPE_CHECKING:
    from rich.console import Console

# rich is imported where it is first used: it costs ~60 ms of start-up, and a command whose
# output is not a terminal (scripts, -q, --json) may never draw a bar or a table.


class RichProgress:
    """Bars per stage (bytes, rate, ETA) on an interactive terminal."""

    def __init__(self, console: Console, verbose: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar
        from rich.text import Text

        class Amount(ProgressColumn):
            """Bytes done (of total), or items for the stages of ``ITEM_STAGES``."""

            def __init__(self) -> None:
                super().__init__()
                self._bytes = DownloadColumn(binary_units=True)

            def render(self, task: Any) -> Any:
                if not task.fields.get("items"):
                    return self._bytes.render(task)
                total = f"/{int(task.total):,}" if task.total is not None else ""
                return Text(f"{int(task.completed):,}{total}", style="progress.download")

        class Rate(ProgressColumn):
            """Bytes per second, or items per second for the stages of ``ITEM_STAGES``."""

            def render(self, task: Any) -> Any:
                speed = task.finished_speed or task.speed
                if not task.fields.get("items"):
                    # rich's TransferSpeedColumn counts in powers of 1000 (MB/s) beside the
                    # binary amounts (MiB): the rate uses the same units as the amounts and
                    # as the summaries (config.format_size).
                    return Text("?" if speed is None else f"{format_size(speed)}/s", style="progress.data.speed")
                return Text("?" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")

        self._verbose = verbose
        self._bar = RichBar(
            TextColumn("{task.description:>9}"), BarColumn(), Amount(), Rate(), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._bar.start()

    def start(self, stage: str, total: int) -> None:
        with self._lock:
            if stage in self._tasks:
                self._bar.update(self._tasks[stage], total=total or None)
            else:  # None: rich shows a bar without a percentage or ETA
                self._tasks[stage] = self._bar.add_task(stage, total=total or None, items=stage in ITEM_STAGES)

    def advance(self, stage: str, n: int) -> None:
        with self._lock:
            task = self._tasks.get(stage)
            if task is not None:
                self._bar.advance(task, n)

    def message(self, text: str) -> None:
        if self._verbose or text.startswith("warning: "):  # a warning is shown without -v
            self._bar.console.print(text, style="dim", markup=False)

    def finish(self, stage: str) -> None:
        with self._lock:
            task = self._tasks.get(stage)
            if task is not None:
                total = next(t.total for t in self._bar.tasks if t.id == task)
                if total is not None:
                    self._bar.update(task, completed=total)

    def close(self) -> None:
        self._bar.stop()


class PlainProgress:
    """One line per stage every ``interval_s`` seconds, for logs."""

    def __init__(self, stream: TextIO, interval_s: float = 5.0, verbose: bool = False) -> None:
        self._verbose = verbose
        self._stream = stream
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._done: dict[str, int] = {}
        self._total: dict[str, int] = {}
        self._since: dict[str, float] = {}
        self._last = time.monotonic()

    def start(self, stage: str, total: int) -> None:
        with self._lock:
            self._total[stage] = total
            if stage not in self._done:  # again for a stage begun: a corrected total
                self._done[stage] = 0
                self._since[stage] = time.monotonic()

    def advance(self, stage: str, n: int) -> None:
        with self._lock:
            self._done[stage] = self._done.get(stage, 0) + n
            now = time.monotonic()
            if now - self._last >= self._interval_s:
                self._last = now
                self._line(stage, now)

    def _line(self, stage: str, now: float) -> None:
        if stage in ITEM_STAGES:
            return self._items_line(now)
        done, total = self._done[stage], self._total.get(stage, 0)
        rate = done / max(1e-6, now - self._since.get(stage, now))
        amount = f"{format_size(done)} of {format_size(total)} {100 * done / total:5.1f}%" if total \
            else format_size(done)
        print(f"{stage}: {amount} at {format_size(rate)}/s", file=self._stream, flush=True)

    def _items_line(self, now: float) -> None:
        """``crawl: 1,234 of 10,000 12.3% (56 failed) at 45.6/s, ETA 3m12s``."""
        stage = "crawl"
        done, total = self._done.get(stage, 0), self._total.get(stage, 0)
        rate = done / max(1e-6, now - self._since.get(stage, now))
        amount = f"{done:,} of {total:,} {100 * done / total:5.1f}%" if total else f"{done:,}"
        failed = self._done.get("failed", 0)
        eta = ""
        if total and rate > 0 and done < total:
            left = int((total - done) / rate)
            eta = f", ETA {left // 3600}h{left // 60 % 60:02d}m" if left >= 3600 else f", ETA {left // 60}m{left % 60:02d}s"
        print(f"{stage}: {amount} ({failed:,} failed) at {rate:,.1f}/s{eta}", file=self._stream, flush=True)

    def message(self, text: str) -> None:
        if self._verbose or text.startswith("warning: "):  # a warning is shown without -v
            print(text, file=self._stream, flush=True)

    def finish(self, stage: str) -> None:
        with self._lock:
            if stage in self._done:
                self._done[stage] = self._total.get(stage) or self._done[stage]
                if not self._done[stage] and stage not in ITEM_STAGES:
                    return  # nothing was transferred: no "0 B at 0 B/s" line
                if stage == "crawl" or stage not in ITEM_STAGES:  # the crawl's line shows the failures
                    self._line(stage, time.monotonic())

    def close(self) -> None:
        pass


class UI:
    """Everything the CLI shows.

    Args:
        quiet: errors only.
        as_json: results as one JSON document on stdout.
        verbose: also show notes: retries with their cause, resume points.
    """

    def __init__(self, *, quiet: bool = False, as_json: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.as_json = as_json
        self.verbose = verbose
        self._emitted = False

    @cached_property
    def out(self) -> Console:
        """rich console on stdout."""
        from rich.console import Console

        return Console(file=sys.stdout, highlight=False, soft_wrap=True,
                       width=None if sys.stdout.isatty() else 200)

    @cached_property
    def err(self) -> Console:
        """rich console on stderr."""
        from rich.console import Console

        return Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def progress(self) -> Any:
        """A progress sink suited to the output: rich bars, plain lines, or nothing."""
        from .progress import NullProgress

        if self.quiet or self.as_json:
            return NullProgress()
        if self.err.is_terminal:
            return RichProgress(self.err, self.verbose)
        return PlainProgress(sys.stderr, verbose=self.verbose)

    def info(self, text: str) -> None:
        """A message on stderr (suppressed by -q and --json)."""
        if not self.quiet and not self.as_json:
            print(text, file=sys.stderr, flush=True)

    def error(self, err: S3SyncError) -> None:
        """``error: ...`` and ``hint: ...`` on stderr; with ``--json`` also one document
        ``{"error": {"type", "message", "hint", "exit_code"}}`` on stdout, unless the command
        already printed its result there (verify's ``"ok": false``): stdout holds one
        document."""
        print(f"error: {err}", file=sys.stderr, flush=True)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr, flush=True)
        if self.as_json and not self._emitted:
            self.emit_json({"error": {"type": type(err).__name__, "message": str(err),
                                      "hint": err.hint or None, "exit_code": err.exit_code}})

    def line(self, text: str) -> None:
        """One line of data on stdout, exactly as given (tabs kept, for scripts)."""
        print(text)

    def emit_json(self, doc: Any) -> None:
        """One JSON document on stdout.

        A name that is not UTF-8 holds lone surrogates (PEP 383), which no UTF-8 stream
        can carry: the document is then written with ASCII escapes, where such a byte is
        ``\\udcXX`` (valid JSON; ``json.loads`` and ``os.fsencode`` give the byte back).
        """
        self._emitted = True
        text = json.dumps(doc, indent=2, ensure_ascii=False)
        try:
            text.encode(sys.stdout.encoding or "utf-8")
        except UnicodeEncodeError:
            text = json.dumps(doc, indent=2)
        print(text)

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        """A table on stdout (plain aligned text when stdout is not a terminal)."""
        from rich.table import Table

        table = Table(title=title, show_lines=False, box=None if not self.out.is_terminal else None)
        for c in columns:
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(*r)
        self.out.print(table)

    def kv(self, pairs: list[tuple[str, str]]) -> None:
        """``key: value`` lines on stdout."""
        width = max(len(k) for k, _ in pairs)
        for k, v in pairs:
            self.out.print(f"{k:<{width}}  {v}", markup=False)
