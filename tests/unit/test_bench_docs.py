"""scripts/bench.py --docs: docs/bench.md and bench.json are rebuilt from the sections a run
produced, and keep the sections it did not (an --archive run must not drop the main table,
nor a main run the --archive section)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("s3sync_bench_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


bench = _load_script()

OLD_SECTIONS = {
    "results": "### s3sync benchmark: 10 files, 1 MiB, 1 parts of <= 256MiB, 5 repeats\n\n| a | 1.0 |\n",
    "rss": "### Peak RSS against dataset size (one run each)\n\n| 1GiB | 178 |\n",
    "profile": "### Profile of one `s3sync pull` (profile): 10 files\n\ntext\n\n"
               "### Profile of one `s3sync publish`: 10 files\n\nmore\n",
    "archive": "### Existing archives: 2 files, old\n\n| h | 9.9 |\n",
}


def _old_docs(docs: Path) -> None:
    docs.mkdir()
    (docs / "bench.md").write_text("# s3sync benchmark results\n\nheader\n\n"
                                   + "\n".join(OLD_SECTIONS.values()))
    (docs / "bench.json").write_text(json.dumps({"results": {"old": 1}, "rss": {"old": 2}, "archive": {"old": 3}}))


def test_sections_a_run_did_not_produce_are_kept(tmp_path):
    docs, out = tmp_path / "docs", tmp_path / "out"
    _old_docs(docs)
    out.mkdir()
    (out / "archive.md").write_text("### Existing archives: 2,132 files, new\n\n| h | 4.46 |\n")
    (out / "archive.json").write_text(json.dumps({"new": 4}))
    (out / "archive-profile.md").write_text("### Profile of one split-archive pull (case h)\n\n"
                                            "#### Profile of one `s3sync pull` (archive-h)\n\nnew profile\n")
    bench.compose_docs(out, docs)
    text = (docs / "bench.md").read_text()
    for stem in ("results", "rss", "profile"):
        assert OLD_SECTIONS[stem].strip() in text
    assert "old\n\n| h | 9.9 |" not in text and "| h | 4.46 |" in text
    # in SECTIONS order: main table, RSS, profiles, then the archive section and its profile
    order = [text.index(h) for h in ("### s3sync benchmark:", "### Peak RSS", "### Profile of one `s3sync pull`",
                                     "### Existing archives: 2,132", "### Profile of one split-archive pull")]
    assert order == sorted(order)
    assert json.loads((docs / "bench.json").read_text()) == {"results": {"old": 1}, "rss": {"old": 2},
                                                             "archive": {"new": 4}}
    # and read back, each section is found again under its own stem (the archive profile's
    # sub-heading does not pass for the main profile)
    again = bench.existing_sections(text)
    assert "new profile" in again["archive-profile"] and "new profile" not in again["profile"]


def test_a_section_the_run_produced_replaces_the_old_one(tmp_path):
    docs, out = tmp_path / "docs", tmp_path / "out"
    _old_docs(docs)
    out.mkdir()
    (out / "results.md").write_text("### s3sync benchmark: 99 files, new\n\n| a | 0.5 |\n")
    bench.compose_docs(out, docs)
    text = (docs / "bench.md").read_text()
    assert "| a | 0.5 |" in text and "| a | 1.0 |" not in text
    assert OLD_SECTIONS["archive"].strip() in text and OLD_SECTIONS["rss"].strip() in text


def test_a_fast_link_section_is_kept_and_its_per_rate_headings_stay_inside_it(tmp_path):
    docs, out = tmp_path / "docs", tmp_path / "out"
    _old_docs(docs)
    out.mkdir()
    (out / "fast-link.md").write_text("### Fast links: 10 files, 1 MiB\n\n#### 2gbit (238 MiB/s each way)\n\n"
                                      "| b | 5.19 |\n\n#### At 2gbit: profile of one `s3sync pull` (fast-2gbit)\n\n"
                                      "fast profile\n")
    bench.compose_docs(out, docs)
    text = (docs / "bench.md").read_text()
    assert text.index("### s3sync benchmark:") < text.index("### Fast links:") < text.index("### Peak RSS")
    again = bench.existing_sections(text)
    assert "fast profile" in again["fast-link"] and "fast profile" not in again.get("profile", "")
    # a later run of another mode keeps it
    (out / "fast-link.md").unlink()
    (out / "rss.md").write_text("### Peak RSS against dataset size (one run each)\n\n| 8GiB | 180 |\n")
    bench.compose_docs(out, docs)
    assert "| b | 5.19 |" in (docs / "bench.md").read_text()


def test_fast_link_rates_and_targets():
    assert bench.rate_bits("2gbit") == 2_000_000_000
    assert bench.rate_bits("500mbit") == 500_000_000 and bench.rate_bits("2.5Gbit") == 2_500_000_000
    assert bench.rate_bits("none") == float("inf")
    for bad in ("2gb", "fast", "", "gbit"):
        try:
            bench.rate_bits(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
    target = {name: t for name, _, _, t, _ in bench.fast_ratios("2gbit")}
    assert target["d/b"] == 1.05 and target["a/b"] is None
    assert {name: t for name, _, _, t, _ in bench.fast_ratios("5gbit")}["d/b"] is None
    assert {name: t for name, _, _, t, _ in bench.fast_ratios("none")}["d/b"] is None
