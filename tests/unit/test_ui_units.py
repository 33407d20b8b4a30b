"""Progress rates in the same binary units as the amounts beside them and as the summaries
(issue 13 section 2): ``MiB/s`` beside ``MiB``, never rich's decimal ``MB/s``."""

from __future__ import annotations

import io

from rich.console import Console

from s3sync.config import format_size
from s3sync.ui import PlainProgress, RichProgress


def test_rich_bars_show_binary_rates_beside_binary_amounts() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    bar = RichProgress(console)
    bar.start("download", 200 * 1024 * 1024)
    bar.advance("download", 50 * 1024 * 1024)
    bar.finish("download")
    bar.close()
    text = out.getvalue()
    assert "MiB" in text and "/s" in text, text
    assert "MB/s" not in text and "kB/s" not in text, text
    assert any(f"{unit}/s" in text for unit in ("B", "KiB", "MiB", "GiB")), text


def test_plain_lines_use_the_units_of_format_size() -> None:
    out = io.StringIO()
    plain = PlainProgress(out, interval_s=0.0)
    plain.start("download", 3 * 1024 * 1024)
    plain.advance("download", 3 * 1024 * 1024)
    line = out.getvalue().splitlines()[-1]
    assert line.startswith(f"download: {format_size(3 * 1024 * 1024)} of {format_size(3 * 1024 * 1024)}"), line
    assert line.endswith("iB/s") or line.endswith(" B/s"), line
