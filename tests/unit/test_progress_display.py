"""Progress displays: start() again for a stage already begun corrects its total (publish's
upload total is an estimate until the tar stream is complete); finish() completes it."""

from __future__ import annotations

import io

from rich.console import Console

from s3sync.ui import PlainProgress, RichProgress


def test_plain_progress_keeps_the_count_when_the_total_is_corrected():
    out = io.StringIO()
    progress = PlainProgress(out, interval_s=3600)
    progress.start("upload", 2048 * 1024)  # publish's estimate: file sizes + 1 KiB per member
    progress.advance("upload", 1536 * 1024)
    progress.start("upload", 1536 * 1024)
    progress.finish("upload")
    assert out.getvalue().splitlines()[-1].startswith("upload: 1.5 MiB of 1.5 MiB 100.0%")


def test_plain_progress_finish_completes_the_stage():
    out = io.StringIO()
    progress = PlainProgress(out, interval_s=3600)
    progress.start("verify", 3 * 1024 * 1024)
    progress.advance("verify", 1024 * 1024)  # e.g. files found missing are not re-hashed
    progress.finish("verify")
    assert out.getvalue().splitlines()[-1].startswith("verify: 3.0 MiB of 3.0 MiB 100.0%")


def test_rich_progress_corrected_total_then_finish():
    progress = RichProgress(Console(file=io.StringIO(), force_terminal=False, width=100))
    try:
        progress.start("upload", 1000)
        progress.advance("upload", 700)
        progress.start("upload", 700)
        (task,) = progress._bar.tasks
        assert (task.completed, task.total) == (700, 700)
        progress.finish("upload")
        assert (task.completed, task.total) == (700, 700)
    finally:
        progress.close()


def test_a_warning_is_shown_without_verbose_and_a_note_is_not():
    out = io.StringIO()
    progress = PlainProgress(out, interval_s=3600)
    progress.message("chunk 3 retried")
    progress.message("warning: 2 entries published with no owner read permission")
    assert out.getvalue() == "warning: 2 entries published with no owner read permission\n"
    console_out = io.StringIO()
    rich = RichProgress(Console(file=console_out, force_terminal=False, width=200))
    try:
        rich.message("chunk 3 retried")
        rich.message("warning: 1 entry published with no owner read permission")
    finally:
        rich.close()
    assert "warning: 1 entry" in console_out.getvalue() and "retried" not in console_out.getvalue()
