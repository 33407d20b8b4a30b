"""The one exception hierarchy of s3sync.

This module imports nothing. Every error a user can meet is an ``S3SyncError``;
library exceptions (botocore, OSError, tarfile) are translated at the edge of
the module that calls the library, with ``raise ... from err``.

::

    S3SyncError                      exit 1
    ├── UsageError                   exit 2   bad flag, size, URL, unknown name
    │   └── ConfigError              exit 2   unreadable or invalid config/catalog TOML
    ├── SourceError                           publish: unreadable SRC_DIR, unsupported file
    ├── SplitArchiveError                     the objects at a source are not one split archive
    ├── PublishConflictError                  another publish of the same prefix won the swap
    ├── DestinationError                      pull: destination exists, not writable
    │   ├── InsufficientSpaceError            preflight or ENOSPC: names path and bytes
    │   └── DestinationBusyError              another pull holds the staging directory's lock
    ├── StoreError                            object store failures
    │   ├── NotFoundError                     bucket, key or manifest missing
    │   ├── AccessDeniedError                 403 / bad signature
    │   ├── CredentialsError                  no or expired credentials
    │   ├── PartChangedError                  a part changed during the pull, or no longer matches
    │   ├── TLSError                          certificate not trusted, TLS handshake refused
    │   └── TransientStoreError  retriable    5xx, throttling, reset, timeout, bad status line
    ├── IntegrityError           retriable    short body or digest mismatch of a chunk
    │   └── PieceDigestError                  a whole piece's digest differs from its evidence
    ├── ManifestError                         manifest not JSON, unknown version, inconsistent
    │   ├── DamagedDatasetError               a part is missing, or the stream is not what the manifest promises
    │   └── MemberIndexError                  the member index is damaged, cut short, or disagrees with the manifest
    ├── UnsafeArchiveError                    tar member escapes or is a device
    ├── DamagedArchiveError                   a split archive's bytes are not a whole tar (or compressed tar)
    ├── CaptionsError                         a COCO-model captions file does not parse or does not hold together
    ├── BuildError                            build: a source is unusable (bad list, checksum mismatch after retries)
    ├── VerifyFailed                          verify found missing or changed files
    │   └── VerifyIncomplete                  nothing differs, but some files only root can read
    └── Interrupted              exit 130     Ctrl-C; resume state flushed

``retriable`` tells the transfer engine whether fetching the same chunk again may
succeed; ``exit_code`` is what the CLI returns; ``hint`` is a one-line
suggestion the CLI prints after the message.
"""

from __future__ import annotations


class S3SyncError(Exception):
    """Base class. ``str(err)`` is a one-line message naming the object, file or field."""

    exit_code: int = 1
    retriable: bool = False
    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class UsageError(S3SyncError):
    """The command line asks for something impossible (exit code 2)."""

    exit_code = 2
    hint = "run 's3sync --help' for usage"


class ConfigError(UsageError):
    """A config or catalog file cannot be read or has a bad field (exit code 2)."""

    hint = "fix the file named above"


class SourceError(S3SyncError):
    """The directory to publish cannot be read or holds a file s3sync cannot publish."""

    hint = "fix or remove the file named above, then publish again"


class SplitArchiveError(S3SyncError):
    """The objects at a source are not the pieces of one archive: several unrelated name
    families, a gap in a numbered run, no piece at all, or a format s3sync cannot read
    (zip, 7z). The message lists what was found."""

    hint = "point SOURCE at a prefix that holds only the pieces of one archive (and their checksum files)"


class PublishConflictError(S3SyncError):
    """Another publish of the same prefix committed its manifest first; this one committed nothing.

    Attributes:
        winner: the generation the manifest names now.
        generation: this publish's generation (its objects were removed).
    """

    hint = "pull the dataset to see the winner's data, or publish again to replace it"

    def __init__(self, message: str, *, winner: str, generation: str) -> None:
        super().__init__(message)
        self.winner = winner
        self.generation = generation


class DestinationError(S3SyncError):
    """The pull destination cannot be used."""

    # Not "remove the directory": most of these are a path that cannot be written (permissions,
    # a read-only file system); the few about an existing destination give their own hint.
    hint = "check that the path named above is writable (permissions, read-only file system), or choose another DEST_PARENT"


class DestinationBusyError(DestinationError):
    """Another pull is writing the same destination (it holds the lock of its staging directory).

    Attributes:
        staging: the staging directory whose lock is held.
        holder_pid: the process holding it as the kernel reports it, None if unknown.
    """

    hint = "wait for it to finish (or stop it), or run the command again with --wait"

    def __init__(self, message: str, *, staging: object, holder_pid: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.staging = staging
        self.holder_pid = holder_pid


class InsufficientSpaceError(DestinationError):
    """Not enough free bytes or inodes at the destination.

    Attributes:
        path: the directory checked.
        needed: bytes (or inodes) needed.
        available: bytes (or inodes) free.
    """

    hint = "free some space (or pick another DEST_PARENT) and run the same command again; it resumes"

    def __init__(self, message: str, *, path: str, needed: int, available: int) -> None:
        super().__init__(message)
        self.path = path
        self.needed = needed
        self.available = available


class StoreError(S3SyncError):
    """An object store request failed."""

    hint = "check the bucket, prefix and --endpoint-url"


class NotFoundError(StoreError):
    """The bucket, key or manifest does not exist; ``bucket_missing`` tells whether the
    bucket is, ``manifest_missing`` whether a dataset prefix has no ``manifest.json`` (it
    may hold the pieces of an archive instead)."""

    hint = "check the name with 's3sync ls' or the s3:// URL"

    def __init__(self, message: str, *, hint: str | None = None, bucket_missing: bool = False,
                 manifest_missing: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.bucket_missing = bucket_missing
        self.manifest_missing = manifest_missing


class AccessDeniedError(StoreError):
    """The store refused the request (HTTP 403)."""

    hint = "check the credentials/profile and the bucket policy"


class CredentialsError(StoreError):
    """No usable credentials were found, or they expired."""

    hint = "configure credentials (AWS_PROFILE, aws configure) or use --no-sign-request for public buckets"


class PartChangedError(StoreError):
    """A part changed on the server: its ETag changed during the pull (412, or another ETag
    than the one its first response carried), or it differs from the published one and its
    bytes no longer match the manifest's digests."""

    hint = "the dataset was republished while pulling; run the same command again to pull the new generation"


class TLSError(StoreError):
    """The TLS connection to the store could not be set up: its certificate is not trusted
    (self-signed, private CA) or the server does not speak TLS at all (``https://`` to a
    plain ``http`` port). Retrying cannot help."""

    hint = ("if the server uses a private or self-signed certificate, set AWS_CA_BUNDLE to its CA file (PEM); "
            "if it speaks plain http, write --endpoint-url http://...")


class TransientStoreError(StoreError):
    """A failure that may pass: 5xx, throttling, connection reset, read timeout."""

    retriable = True
    hint = "check --endpoint-url and the network; a pull run again resumes where it stopped"


class IntegrityError(S3SyncError):
    """A chunk came back short or with the wrong digest."""

    retriable = True
    hint = "the data was corrupted in transit or on the server; run again, or report the object named above"


class PieceDigestError(IntegrityError):
    """A whole piece of a split archive hashed to another digest than its evidence (a
    sidecar checksum file or its ETag) promises. Nothing was committed; a rerun fetches
    that piece again, not the whole archive."""

    retriable = False
    hint = ("run the same command again to fetch that piece again; if it fails the same way, the piece or its "
            "checksum file is damaged at the source")


class ManifestError(S3SyncError):
    """The manifest is not valid JSON, of an unknown version, or inconsistent."""

    hint = "the published dataset is damaged or from a newer s3sync; republish it or upgrade s3sync"


class DamagedDatasetError(ManifestError):
    """The published dataset does not hold what its manifest promises: a part object is
    missing, or the verified stream disagrees with the manifest's member, file or byte
    counts, its end-of-archive marker or its digests."""

    hint = "the published dataset is damaged: republish it (or pull an intact copy of it)"


class MemberIndexError(ManifestError):
    """A generation's member index (``<generation>/index.jsonl.zst``) is missing, does not
    match the digest its manifest gives, cannot be decompressed, or holds a bad line."""

    hint = "the published dataset's member index is damaged: republish the dataset"


class UnsafeArchiveError(S3SyncError):
    """A tar member would land outside the destination, or is a device or other special file."""

    hint = "the archive is hostile or damaged; nothing was written outside the staging directory"


class DamagedArchiveError(S3SyncError):
    """A split archive s3sync did not publish is not a whole tar stream: its compressed data
    is corrupt or cut short, a header is unreadable, or it ends without the tar
    end-of-archive marker (a missing last piece)."""

    hint = "the archive at the source is damaged or incomplete; nothing was committed"


class CaptionsError(S3SyncError):
    """A COCO-model captions file (``captions.json``) is not JSON, lacks a field, or does not
    hold together: an image without a caption, a caption pointing at no image, a duplicate id,
    a ``file_name`` that does not exist. The message names the file and the first problems."""

    hint = "fix or rebuild the captions file named above"


class BuildError(S3SyncError):
    """``s3sync build`` cannot use a source: a URL list or zip that is missing or malformed,
    a download whose checksum still differs after its retries, a destination it cannot write."""

    hint = "fix the source named above (or pass another with the options shown by 's3sync build --help')"


class VerifyFailed(S3SyncError):
    """``s3sync verify`` found files that are missing or differ (they are listed on stdout)."""

    hint = "pull the dataset again into a fresh directory to repair it"


class VerifyIncomplete(VerifyFailed):
    """``s3sync verify`` found no difference but could not read some files: they were
    published with no read permission for their owner (mode 0000, 0200...), so only root
    can read them back. Pulling again would not change that."""

    hint = "run 's3sync verify' as root to check them too"


class Interrupted(S3SyncError):
    """The user interrupted the job (Ctrl-C); resume state was flushed (exit code 130)."""

    exit_code = 130
    hint = "run the same command again: a pull resumes where it stopped, a publish starts over"
