"""When extraction may skip ``fchmod``: only if open() cannot have taken bits from the mode.

``SafeExtractor`` sets a file's mode again only when the umask, or a default POSIX ACL on
the tree (which replaces the umask), may have masked some of its bits. These pin the two
facts it decides on; the end-to-end modes (with and without a default ACL) are checked in
tests/integration/test_roundtrip.py and tests/faults/test_edges_and_credentials.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s3sync import archive


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o000])
def test_umask_is_read_without_changing_it(mask: int) -> None:
    old = os.umask(mask)
    try:
        assert archive._umask() == mask
        assert os.umask(mask) == mask  # still what was set
    finally:
        os.umask(old)


def test_default_acl_is_detected(tmp_path: Path, set_default_acl) -> None:
    plain, acl_dir = tmp_path / "plain", tmp_path / "acl"
    plain.mkdir()
    acl_dir.mkdir()
    assert not archive._has_default_acl(str(plain))
    set_default_acl(acl_dir)
    assert archive._has_default_acl(str(acl_dir))
    (acl_dir / "sub").mkdir()  # a directory made below inherits the default ACL
    assert archive._has_default_acl(str(acl_dir / "sub"))
    extractor = archive.SafeExtractor(acl_dir)
    assert extractor._masked_bits == 0o7777  # every file gets its mode set again


def test_unreadable_xattr_counts_as_an_acl(tmp_path: Path) -> None:
    assert archive._has_default_acl(str(tmp_path / "missing"))  # ENOENT: cannot tell, keep fchmod


def test_resume_into_an_existing_tree_always_sets_modes(tmp_path: Path) -> None:
    """Directories left by an interrupted pull may have been given a default ACL since:
    a resumed extraction sets every mode again; a fresh one relies on the umask."""
    tree = tmp_path / "tree"
    (tree / archive.METADATA_DIR).mkdir(parents=True)  # the journal's index lives here
    assert archive.SafeExtractor(tree)._masked_bits == archive._umask()
    (tree / "images").mkdir()  # left by an earlier run
    assert archive.SafeExtractor(tree)._masked_bits == 0o7777


def test_a_refused_record_stops_the_recording_of_later_members(tmp_path: Path) -> None:
    """on_member raising (the journal cannot be written, a progress callback raised) for a file
    in the middle of a batch of small files: no member after it may be reported, or the resume
    point would pass members the index never got (a resumed pull then misses them)."""
    import io
    import tarfile

    from corpus import stream_file

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(200):
            info = tarfile.TarInfo(f"f{i:03d}")
            info.size = 100
            tar.addfile(info, io.BytesIO(bytes([i % 256]) * 100))
    path = tmp_path / "small.tar"
    path.write_bytes(buf.getvalue())
    seen: list[str] = []

    def on_member(next_offset: int, record: archive.MemberRecord) -> None:
        seen.append(record.path)  # as pull's: the journal records it, then the progress callback raises
        if len(seen) >= 5:
            raise KeyboardInterrupt

    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt):
        archive.SafeExtractor(tmp_path / "out").extract(stream_file(path), on_member)
    assert seen == [f"f{i:03d}" for i in range(5)]
