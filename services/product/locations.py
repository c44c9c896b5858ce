"""Where catalog imports read: directories of the service's host and cloud
buckets (`gs://` for Google Cloud Storage, where BigQuery exports land,
through Google's client; `s3://` through Arrow's S3 file system), so a
remote export is streamed and never staged whole.

Only what the import roots name is readable (`BMC_IMPORT_ROOTS`): local
directories, followed through symbolic links, and bucket prefixes. Globs
expand over shards with shell rules (`*` stops at `/`), in a stable order.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

import pyarrow.fs as pafs

from services.kit.errors import FieldViolation, InvalidArgument
from services.kit.settings import BUCKET_SCHEMES

REMOTE_SCHEMES = BUCKET_SCHEMES
_MAGIC = re.compile(r"[*?\[]")
_GCS_CHUNK = 8 << 20


@dataclass(frozen=True)
class Buckets:
    """How to reach cloud storage. Empty endpoints mean the real services
    with their default credentials: S3 through Arrow with the task role (or
    the standard AWS chain); Cloud Storage through Google's client with
    Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`: a
    workload identity federation configuration or a service-account key).
    Tests point them at emulators (moto's S3 server, gcp-storage-emulator)."""

    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    gcs_endpoint: str = ""

    def __reduce__(self) -> tuple[type[Buckets], tuple[str, str, str]]:
        # To the reader process as settings: its clients are its own.
        return Buckets, (self.s3_endpoint, self.s3_region, self.gcs_endpoint)

    def size(self, uri: str) -> int | None:
        """The object's size, None when there is none at `uri`."""
        bucket, key = _split(uri)
        if uri.startswith("gs://"):
            blob = self._gcs.bucket(bucket).get_blob(key)
            return None if blob is None else int(blob.size or 0)
        info = self._s3.get_file_info(f"{bucket}/{key}")
        return info.size if info.type == pafs.FileType.File else None

    def listing(self, uri: str) -> list[tuple[str, int]]:
        """Every object under the prefix `uri` (a directory-like prefix), with sizes."""
        bucket, key = _split(uri)
        scheme = uri[:5]
        prefix = key.rstrip("/") + "/" if key else ""
        if uri.startswith("gs://"):
            blobs = self._gcs.list_blobs(bucket, prefix=prefix)
            return [(f"{scheme}{bucket}/{b.name}", int(b.size or 0)) for b in blobs if not b.name.endswith("/")]
        selector = pafs.FileSelector(f"{bucket}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True)
        infos = self._s3.get_file_info(selector)
        return [(f"{scheme}{i.path}", i.size) for i in infos if i.type == pafs.FileType.File]

    def open_stream(self, uri: str) -> IO[bytes]:
        """The object's bytes from the start, read as they are consumed."""
        bucket, key = _split(uri)
        if uri.startswith("gs://"):
            return cast(IO[bytes], self._gcs.bucket(bucket).blob(key).open("rb", chunk_size=_GCS_CHUNK))
        return cast(IO[bytes], self._s3.open_input_stream(f"{bucket}/{key}", compression=None))

    def open_random_access(self, uri: str) -> IO[bytes]:
        """The object for reads at any offset, each a ranged request."""
        bucket, key = _split(uri)
        if uri.startswith("gs://"):
            return cast(IO[bytes], self._gcs.bucket(bucket).blob(key).open("rb", chunk_size=_GCS_CHUNK))
        return cast(IO[bytes], self._s3.open_input_file(f"{bucket}/{key}"))

    @cached_property
    def _s3(self) -> pafs.FileSystem:
        if not self.s3_endpoint:
            return pafs.S3FileSystem(region=self.s3_region)
        scheme, _, host = self.s3_endpoint.rpartition("://")
        return pafs.S3FileSystem(
            endpoint_override=host,
            scheme=scheme or "https",
            region=self.s3_region,
            # A test server takes any key; real endpoints use the task role.
            access_key=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        )

    @cached_property
    def _gcs(self) -> Any:
        # Google's client, not Arrow's GcsFileSystem: Arrow's ranged reads
        # (Parquet's footer) never return against the emulator.
        from google.cloud import storage

        if not self.gcs_endpoint:
            return storage.Client()
        from google.auth.credentials import AnonymousCredentials

        endpoint = self.gcs_endpoint if "://" in self.gcs_endpoint else f"http://{self.gcs_endpoint}"
        return storage.Client(
            project="emulator",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": endpoint},
        )


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


@dataclass(frozen=True)
class Found:
    """One file an import reads: its URI as the operation stores it, and its size."""

    uri: str
    size: int

    @property
    def name(self) -> str:
        return PurePosixPath(self.uri.split("://", 1)[-1]).name


def open_stream(buckets: Buckets, uri: str) -> IO[bytes]:
    """The file's bytes from the start, as a stream (never decompressed here)."""
    return buckets.open_stream(uri) if uri.startswith(REMOTE_SCHEMES) else Path(uri).open("rb")


def open_random_access(buckets: Buckets, uri: str) -> IO[bytes]:
    """The file for reads at any offset (Parquet's footer first, then its row groups)."""
    return buckets.open_random_access(uri) if uri.startswith(REMOTE_SCHEMES) else Path(uri).open("rb")


@dataclass
class ImportRoots:
    """The directories and bucket prefixes imports may read; a relative URI
    is taken in the first directory."""

    roots: list[str]
    buckets: Buckets = field(default_factory=Buckets)

    def __post_init__(self) -> None:
        self.local = [Path(r).resolve() for r in self.roots if not r.startswith(REMOTE_SCHEMES)]
        self.remote = [r.rstrip("/") + "/" for r in self.roots if r.startswith(REMOTE_SCHEMES)]

    @property
    def inbox(self) -> Path:
        return self.local[0]

    def _inside(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.local)

    def expand(self, uris: list[str]) -> list[Found]:
        """Files named by `uris` (globs expanded, in a stable order), or
        INVALID_ARGUMENT naming each URI that is outside the roots or matches nothing."""
        found: list[Found] = []
        violations: list[FieldViolation] = []
        for index, uri in enumerate(uris):
            try:
                files = self._remote(uri) if uri.startswith(REMOTE_SCHEMES) else self._local(uri)
            except _Refused as refused:
                violations.append(FieldViolation(f"uris[{index}]", refused.message, refused.reason))
                continue
            if not files:
                violations.append(FieldViolation(f"uris[{index}]", "no readable file there", "FILE_NOT_FOUND"))
            found.extend(files)
        if violations:
            raise InvalidArgument("some import files cannot be read", reason="BAD_IMPORT_SOURCE", violations=violations)
        return found

    def _local(self, uri: str) -> list[Found]:
        if not self.local:
            raise _Refused("OUTSIDE_IMPORT_ROOTS", "no local directory is an import root here")
        pattern = os.path.normpath(self.inbox / uri.removeprefix("file://"))  # an absolute uri stays itself
        if not self._inside(Path(pattern)):
            raise _Refused("OUTSIDE_IMPORT_ROOTS", "outside the import directories")
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        # Resolved again: a link inside a root may point anywhere.
        files = [f for f in (Path(m).resolve() for m in matches) if self._inside(f) and f.is_file()]
        return [Found(str(f), f.stat().st_size) for f in files]

    def _remote(self, uri: str) -> list[Found]:
        key = uri.split("://", 1)[1]
        if ".." in PurePosixPath(key).parts or "//" in key:
            raise _Refused("INVALID_URI", "a bucket path may not contain `..` or empty segments")
        if not any(uri.startswith(root) for root in self.remote):
            listed = ", ".join(self.remote) or "none"
            raise _Refused("OUTSIDE_IMPORT_ROOTS", f"outside the import buckets (configured: {listed})")
        try:
            magic = _MAGIC.search(uri)
            if magic is None:
                size = self.buckets.size(uri)
                return [] if size is None else [Found(uri, size)]
            listing = self.buckets.listing(uri[: magic.start()].rpartition("/")[0])
        except Exception as exc:  # each client's own errors: refused, not crashed
            raise _Refused("BUCKET_UNREADABLE", f"cannot list the bucket: {_first_line(exc)}") from exc
        return [
            Found(found, size)
            for found, size in sorted(listing)
            if _glob_match(found, uri) and any(found.startswith(root) for root in self.remote)
        ]


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _glob_match(path: str, pattern: str) -> bool:
    """Shell glob rules: each `/`-separated segment matched on its own."""
    parts, wanted = path.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True))


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
