"""``buildstate``: the build state record publish reads, and the outputs a build may replace."""

from __future__ import annotations

import pytest

from s3sync import buildstate
from s3sync.errors import BuildError, SourceError


def test_a_dir_without_a_record_is_publishable(tmp_path):
    assert buildstate.read(tmp_path) is None
    buildstate.check_publishable(tmp_path)


def test_begin_makes_the_dir_unpublishable_until_finish(tmp_path):
    state = buildstate.begin(tmp_path, "mscoco", ("captions.json",))
    with pytest.raises(SourceError, match=r"\.s3sync/build\.json.*did not finish") as err:
        buildstate.check_publishable(tmp_path)
    assert "run the same `s3sync build ...` command again" in err.value.hint
    buildstate.finish(state)
    buildstate.check_publishable(tmp_path)
    assert buildstate.read(tmp_path).outputs == ("captions.json",)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"complete": "yes"}'])
def test_an_unreadable_record_counts_as_incomplete(tmp_path, content):
    (tmp_path / ".s3sync").mkdir()
    (tmp_path / ".s3sync" / "build.json").write_bytes(content)
    with pytest.raises(SourceError, match="build.json"):
        buildstate.check_publishable(tmp_path)


def test_begin_refuses_an_output_no_build_wrote_and_keeps_those_one_did(tmp_path):
    (tmp_path / "captions.json").write_text("mine")
    with pytest.raises(BuildError, match="captions.json exists, but no build"):
        buildstate.begin(tmp_path, "sbu", ("captions.json", "failures.tsv"))
    assert buildstate.read(tmp_path) is None  # nothing recorded: the refusal comes first
    (tmp_path / "captions.json").unlink()
    state = buildstate.begin(tmp_path, "sbu", ("captions.json", "failures.tsv"))
    (tmp_path / "captions.json").write_text("built")
    (tmp_path / "failures.tsv").write_text("built")
    buildstate.finish(state)
    again = buildstate.begin(tmp_path, "sbu", ("captions.json", "failures.tsv"))  # a rerun: its own files
    assert not again.complete


def test_begin_removes_temporary_files_killed_writes_of_its_outputs_left(tmp_path):
    from s3sync.fsutil import temp_name

    state = buildstate.begin(tmp_path, "mscoco", ("captions.json",))
    buildstate.finish(state)
    stale = [temp_name(tmp_path / "captions.json", 4242), temp_name(buildstate.record_path(tmp_path), 7)]
    for path in stale:
        path.write_text("half")
    other = tmp_path / ".captions.json.tmp-x"  # not write_atomic's name: not ours to remove
    other.write_text("keep")
    buildstate.begin(tmp_path, "mscoco", ("captions.json",))
    assert not any(p.exists() for p in stale) and other.exists()


def test_a_dir_built_by_another_builder_is_refused(tmp_path):
    """A copy of a built mscoco DIR, then `build sbu` into it: sbu would replace mscoco's
    captions.json (which a build, just not this one, wrote) and mix two datasets."""
    buildstate.finish(buildstate.begin(tmp_path, "mscoco", ("captions.json", "neuraltalk2.json")))
    (tmp_path / "captions.json").write_text("mscoco's")
    with pytest.raises(BuildError, match="built by 's3sync build mscoco'") as err:
        buildstate.begin(tmp_path, "sbu", ("captions.json", "failures.tsv"))
    assert "another DIR" in err.value.hint
    assert (tmp_path / "captions.json").read_text() == "mscoco's"
    assert buildstate.read(tmp_path).builder == "mscoco" and buildstate.read(tmp_path).complete
