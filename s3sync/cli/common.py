"""What the command modules share: the exit code of success, the S3 store, plurals."""

from __future__ import annotations

from typing import Any

from ..config import Settings

EXIT_OK = 0


def store_for(settings: Settings, bucket: str) -> Any:
    from ..stores.s3 import S3Store, make_client

    client = make_client(settings.s3, max_connections=settings.transfer.concurrency + 4)
    return S3Store(client, bucket, concurrency=settings.transfer.concurrency)


def plural(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


