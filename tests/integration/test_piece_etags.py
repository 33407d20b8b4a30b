"""pieces.py's reading of ETags against what real servers send for pieces uploaded whole or
in multipart upload parts (boto3 only for the uploads; no s3sync store involved)."""

from __future__ import annotations

import hashlib

from s3sync.pieces import (
    choose_evidence,
    describe,
    etag_md5,
    multipart_etag,
    multipart_etag_parts,
)

MiB = 1 << 20


def _bytes(size: int, salt: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += hashlib.sha256(f"{salt}:{len(out)}".encode()).digest()
    return bytes(out[:size])


def test_single_part_etag_is_the_pieces_md5(s3_server, s3_client, bucket):
    body = _bytes(4096, 1)
    s3_client.put_object(Bucket=bucket, Key="a.tar.001", Body=body)
    etag = s3_client.head_object(Bucket=bucket, Key="a.tar.001")["ETag"]
    assert etag_md5(etag) == hashlib.md5(body).hexdigest()
    assert describe(choose_evidence(None, etag, None)) == "S3 ETag (the object's MD5)"


def test_multipart_etag_is_recomputed_from_the_parts(s3_server, s3_client, bucket):
    parts = [_bytes(5 * MiB, 2), _bytes(5 * MiB, 3), _bytes(1234, 4)]
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key="a.tar.002")["UploadId"]
    etags = [s3_client.upload_part(Bucket=bucket, Key="a.tar.002", UploadId=upload, PartNumber=n, Body=body)["ETag"]
             for n, body in enumerate(parts, 1)]
    s3_client.complete_multipart_upload(
        Bucket=bucket, Key="a.tar.002", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    head = s3_client.head_object(Bucket=bucket, Key="a.tar.002")
    evidence = choose_evidence(None, head["ETag"], 5 * MiB, size=head["ContentLength"])
    if s3_server.name == "moto":
        # moto, like S3, serves md5(part MD5s)-N: recomputing it from the bytes matches.
        assert multipart_etag_parts(head["ETag"]) == 3
        assert evidence.kind == "etag-multipart"
        assert evidence.expected == multipart_etag(hashlib.md5(p).digest() for p in parts)
        assert describe(evidence) == "S3 ETag (multipart, 3 parts of 5 MiB, recomputed)"
        flipped = bytearray(parts[1])
        flipped[77] ^= 1
        assert multipart_etag(hashlib.md5(p).digest() for p in (parts[0], flipped, parts[2])) != evidence.expected
    else:
        # rclone serve s3 serves the whole object's MD5 once the upload completed
        # (tests/integration/test_servers.py), which is the stronger evidence anyway.
        assert evidence.kind == "etag-md5"
        assert evidence.expected == hashlib.md5(b"".join(parts)).hexdigest()
