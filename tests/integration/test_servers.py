"""Sanity checks of the S3 server fixtures, and a record of where the two servers differ.

Plain boto3 only (no s3sync). Every test runs on moto and on rclone serve s3. Where the servers
disagree, the test asserts what each one really does, with the reason it matters to s3sync, so
an upgrade that changes a behaviour shows up here first. AWS S3 itself behaves like moto in
every case below.
"""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, FlexibleChecksumError

MiB = 1024 * 1024


def _payload(size: int, salt: int = 0) -> bytes:
    """Deterministic, non-repeating test bytes (a repeating pattern hides offset bugs)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{salt}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def _status(response: dict) -> int:
    return response["ResponseMetadata"]["HTTPStatusCode"]


def _error_code(err: ClientError) -> str:
    return err.response["Error"]["Code"]


def test_put_then_get_round_trips(s3_client, bucket):
    data = _payload(100_000)

    put = s3_client.put_object(Bucket=bucket, Key="dir/object.bin", Body=data)
    got = s3_client.get_object(Bucket=bucket, Key="dir/object.bin")

    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)
    # A single-PUT ETag is the quoted MD5 of the body on both servers.
    assert put["ETag"] == got["ETag"] == _md5_etag(data)


@pytest.mark.parametrize(
    ("first", "last"),
    [(0, 0), (1000, 1999), (99_990, 99_999)],
    ids=["first-byte", "middle", "last-bytes"],
)
def test_ranged_get_returns_exactly_the_range(s3_server, s3_client, bucket, first, last):
    data = _payload(100_000)
    s3_client.put_object(Bucket=bucket, Key="part", Body=data)

    got = s3_client.get_object(Bucket=bucket, Key="part", Range=f"bytes={first}-{last}")

    assert got["Body"].read() == data[first : last + 1]
    assert got["ContentLength"] == last - first + 1
    assert got["ContentRange"] == f"bytes {first}-{last}/{len(data)}"
    # rclone serve s3 answers a satisfiable Range with "200 OK" (plus the correct Content-Range
    # and only the requested bytes) where S3 and moto say "206 Partial Content". A client must
    # therefore check Content-Range and the length it received, never the status code alone.
    assert _status(got) == {"moto": 206, "rclone": 200}[s3_server.name]


def test_ranged_get_is_clipped_at_the_end_and_416_past_it(s3_client, bucket):
    data = _payload(10_000)
    s3_client.put_object(Bucket=bucket, Key="part", Body=data)

    clipped = s3_client.get_object(Bucket=bucket, Key="part", Range="bytes=9990-20000")
    assert clipped["Body"].read() == data[9990:]
    assert clipped["ContentRange"] == "bytes 9990-9999/10000"

    with pytest.raises(ClientError) as excinfo:
        s3_client.get_object(Bucket=bucket, Key="part", Range="bytes=10000-10999")
    assert _error_code(excinfo.value) == "InvalidRange"
    assert _status(excinfo.value.response) == 416


def test_multipart_upload_of_two_parts(s3_server, s3_client, bucket):
    part_1, part_2 = _payload(5 * MiB, salt=1), _payload(1234, salt=2)
    upload_id = s3_client.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    etags = [
        s3_client.upload_part(
            Bucket=bucket, Key="big", UploadId=upload_id, PartNumber=number, Body=body
        )["ETag"]
        for number, body in ((1, part_1), (2, part_2))
    ]
    assert etags == [_md5_etag(part_1), _md5_etag(part_2)]

    done = s3_client.complete_multipart_upload(
        Bucket=bucket,
        Key="big",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]},
    )

    got = s3_client.get_object(Bucket=bucket, Key="big")
    assert got["Body"].read() == part_1 + part_2
    head = s3_client.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == len(part_1) + len(part_2)
    assert head["ETag"] == got["ETag"]

    # S3 and moto give a multipart object the ETag md5(concatenated part MD5s)-N, in the
    # CompleteMultipartUpload response and on every later GET/HEAD. rclone answers the
    # completion with that same S3-style ETag but serves the object with the MD5 of its whole
    # content afterwards. So an ETag is an opaque version token: never derive it from the
    # content, and take the one to pin from a HEAD after the upload, not from the completion.
    s3_style = hashlib.md5(hashlib.md5(part_1).digest() + hashlib.md5(part_2).digest())
    s3_style_etag = f'"{s3_style.hexdigest()}-2"'
    assert done["ETag"] == s3_style_etag
    served_etag = {"moto": s3_style_etag, "rclone": _md5_etag(part_1 + part_2)}[s3_server.name]
    assert got["ETag"] == served_etag


def test_multipart_part_below_5mib_that_is_not_last(s3_server, s3_client, bucket):
    upload_id = s3_client.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    parts = [
        {
            "PartNumber": number,
            "ETag": s3_client.upload_part(
                Bucket=bucket, Key="small", UploadId=upload_id, PartNumber=number, Body=b"x" * 100
            )["ETag"],
        }
        for number in (1, 2)
    ]

    def complete():
        return s3_client.complete_multipart_upload(
            Bucket=bucket, Key="small", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    # S3 and moto enforce the 5 MiB minimum for every part but the last on completion; rclone
    # accepts any part size. Tests of small uploads that pass on rclone can fail on real S3.
    if s3_server.name == "moto":
        with pytest.raises(ClientError) as excinfo:
            complete()
        assert _error_code(excinfo.value) == "EntityTooSmall"
    else:
        complete()
        assert s3_client.head_object(Bucket=bucket, Key="small")["ContentLength"] == 200


def test_listing_a_prefix(s3_server, s3_client, bucket):
    keys = [
        "sbu/manifest.json",
        "sbu/g1/part-00000.tar",
        "sbu/g1/part-00001.tar",
        "sbu-other/part-00000.tar",
        "zzz",
    ]
    for key in keys:
        s3_client.put_object(Bucket=bucket, Key=key, Body=key.encode())

    flat = s3_client.list_objects_v2(Bucket=bucket, Prefix="sbu/g1/")
    assert [obj["Key"] for obj in flat["Contents"]] == ["sbu/g1/part-00000.tar", "sbu/g1/part-00001.tar"]
    assert [obj["Size"] for obj in flat["Contents"]] == [21, 21]

    nested = s3_client.list_objects_v2(Bucket=bucket, Prefix="sbu/", Delimiter="/")
    assert [obj["Key"] for obj in nested["Contents"]] == ["sbu/manifest.json"]
    assert [p["Prefix"] for p in nested["CommonPrefixes"]] == ["sbu/g1/"]

    # rclone lists ETags without the surrounding double quotes that S3, moto, and rclone's own
    # HEAD/GET responses carry. Normalise (strip quotes) before comparing ETags across calls.
    listed_etag = flat["Contents"][0]["ETag"]
    md5 = hashlib.md5(b"sbu/g1/part-00000.tar").hexdigest()
    assert listed_etag == {"moto": f'"{md5}"', "rclone": md5}[s3_server.name]


def test_if_match_with_a_wrong_etag_on_get(s3_server, s3_client, bucket):
    data = _payload(4096)
    etag = s3_client.put_object(Bucket=bucket, Key="part", Body=data)["ETag"]

    # The right ETag is accepted by both.
    ok = s3_client.get_object(Bucket=bucket, Key="part", Range="bytes=0-99", IfMatch=etag)
    assert ok["Body"].read() == data[:100]

    wrong = '"00000000000000000000000000000000"'
    if s3_server.name == "moto":
        # Like S3: 412 PreconditionFailed, whether or not the GET has a Range.
        for extra in ({}, {"Range": "bytes=0-99"}):
            with pytest.raises(ClientError) as excinfo:
                s3_client.get_object(Bucket=bucket, Key="part", IfMatch=wrong, **extra)
            assert _error_code(excinfo.value) == "PreconditionFailed"
            assert _status(excinfo.value.response) == 412
    else:
        # rclone serve s3 ignores If-Match on GET and serves the current object. A pull that
        # pins the generation with If-Match is not protected against an overwrite there, so
        # s3sync must compare the ETag of every response with the pinned one itself.
        whole = s3_client.get_object(Bucket=bucket, Key="part", IfMatch=wrong)
        assert whole["Body"].read() == data
        ranged = s3_client.get_object(Bucket=bucket, Key="part", IfMatch=wrong, Range="bytes=0-99")
        assert ranged["Body"].read() == data[:100]
        assert ranged["ETag"] == etag != wrong


def test_if_none_match_star_on_put(s3_server, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="manifest.json", Body=b"first")

    if s3_server.name == "moto":
        # Like S3 (conditional writes): the existing object wins, 412.
        with pytest.raises(ClientError) as excinfo:
            s3_client.put_object(Bucket=bucket, Key="manifest.json", Body=b"second", IfNoneMatch="*")
        assert _error_code(excinfo.value) == "PreconditionFailed"
        expected = b"first"
    else:
        # rclone serve s3 ignores If-None-Match on PUT and overwrites: "create only if absent"
        # cannot be relied on to guard a manifest there.
        s3_client.put_object(Bucket=bucket, Key="manifest.json", Body=b"second", IfNoneMatch="*")
        expected = b"second"
    assert s3_client.get_object(Bucket=bucket, Key="manifest.json")["Body"].read() == expected


def test_ranged_get_and_stored_checksums(s3_server, s3_client, s3_client_factory, bucket):
    """Why ``s3_client`` sets checksum calculation and validation to "when_required"."""
    data = _payload(10_000)
    whole_crc32 = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    s3_client.put_object(Bucket=bucket, Key="part", Body=data, ChecksumAlgorithm="CRC32")

    ranged = s3_client.get_object(Bucket=bucket, Key="part", Range="bytes=0-99")
    assert ranged["Body"].read() == data[:100]
    # rclone stores the CRC32 sent with the PUT and returns it on every GET, ranged or not,
    # although it describes the whole object and not the bytes in the response. moto (like
    # S3) sends no object checksum with a ranged GET.
    headers = ranged["ResponseMetadata"]["HTTPHeaders"]
    expected_header = {"moto": None, "rclone": whole_crc32}[s3_server.name]
    assert headers.get("x-amz-checksum-crc32") == expected_header

    # With botocore's defaults (>= 1.36: checksums "when_supported") that header is validated
    # against the ranged body and the GET fails on rclone.
    default_client = s3_client_factory(s3_server, Config(s3={"addressing_style": "path"}))
    if s3_server.name == "rclone":
        with pytest.raises(FlexibleChecksumError):
            default_client.get_object(Bucket=bucket, Key="part", Range="bytes=0-99")["Body"].read()
    else:
        body = default_client.get_object(Bucket=bucket, Key="part", Range="bytes=0-99")["Body"]
        assert body.read() == data[:100]


def test_list_multipart_uploads_when_there_are_none(s3_server, s3_client, bucket):
    # A resume or cleanup pass that lists unfinished uploads must treat rclone's NoSuchUpload
    # on a bucket that has never had a multipart upload as "none" (S3 and moto: empty list).
    if s3_server.name == "moto":
        assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    else:
        with pytest.raises(ClientError) as excinfo:
            s3_client.list_multipart_uploads(Bucket=bucket)
        assert _error_code(excinfo.value) == "NoSuchUpload"

    upload_id = s3_client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    uploads = s3_client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("k", upload_id)]
