"""Answers of real servers (through the fault proxy) that must come out as the right s3sync
error with a hint that points the right way (issue 10 item 11)."""

from __future__ import annotations

import io

import pytest

from s3sync.errors import StoreError, TransientStoreError

from .proxy import Rule


@pytest.mark.parametrize("call", ["put", "upload"])
def test_missing_content_length_hints_at_the_checksum_setting(kit, call):
    """A server without S3 flexible checksums refuses botocore's aws-chunked upload (sent over
    https) with 411 MissingContentLength: not retried, and the hint names the setting."""
    rule, = kit.add(Rule("error", method="PUT", status=411, code="MissingContentLength"))
    store = kit.store()
    with pytest.raises(StoreError) as caught:
        if call == "put":
            store.put("ds/manifest.json", b"{}")
        else:
            store.upload("ds/g1/part-00000.tar", io.BytesIO(b"x" * 1024), 5 * 1024 * 1024)
    assert rule.applied == 1
    assert not isinstance(caught.value, TransientStoreError)
    assert "MissingContentLength" in str(caught.value)
    assert "AWS_REQUEST_CHECKSUM_CALCULATION=when_required" in caught.value.hint
