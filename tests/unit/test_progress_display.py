"""Progress displays: a finished stage shows the bytes actually done, not start()'s estimate."""

from __future__ import annotations

import io

from rich.console import Console

from s3sync.ui import PlainProgress, RichProgress


def test_plain_progress_finish_shows_the_true_size_not_the_estimate():
    out = io.StringIO()
    progress = PlainProgress(out, interval_s=3600)
    progress.start("upload", 2048 * 1024)  # publish's estimate: file sizes + 1 KiB per member
    progress.advance("upload", 1536 * 1024)
    progress.finish("upload")
    assert out.getvalue().splitlines()[-1].startswith("upload: 1.5 MiB of 1.5 MiB 100.0%")


def test_rich_progress_finish_sets_total_to_completed():
    progress = RichProgress(Console(file=io.StringIO(), force_terminal=False, width=100))
    try:
        progress.start("upload", 1000)
        progress.advance("upload", 700)
        progress.finish("upload")
        (task,) = progress._bar.tasks
        assert (task.completed, task.total) == (700, 700)
    finally:
        progress.close()
