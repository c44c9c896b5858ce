"""Content-addressed object storage: an object's name is the SHA-256 of its
bytes, so what is read back is checked against its name.

A local directory by default; an S3 bucket, encrypted at rest, when
`BMC_OBJECT_STORE_S3_BUCKET` is set (in AWS: the bucket of infra/terraform)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from services.kit.settings import Settings

_DIGEST = re.compile("[0-9a-f]{64}")


class ObjectStore(Protocol):
    def put(self, content: bytes) -> str: ...

    def get(self, digest: str) -> bytes: ...

    def listing(self) -> Iterator[tuple[str, dt.datetime]]:
        """Every object: its digest and when it was written."""
        ...

    def delete(self, digest: str) -> None: ...


class CorruptObject(Exception):
    """The stored bytes no longer hash to their name."""


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, content: bytes) -> str:
        """Stores `content` (atomically, once) and returns its SHA-256."""
        digest = hashlib.sha256(content).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            tmp.write(content)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, target)
        return digest

    def get(self, digest: str) -> bytes:
        """The object; FileNotFoundError if absent, CorruptObject if altered."""
        content = self.path(digest).read_bytes()
        if hashlib.sha256(content).hexdigest() != digest:
            raise CorruptObject(f"object {digest} does not match its hash")
        return content

    def listing(self) -> Iterator[tuple[str, dt.datetime]]:
        for path in self.root.glob("??/??/*"):
            if _DIGEST.fullmatch(path.name):  # not a temporary file being written
                with contextlib.suppress(FileNotFoundError):
                    yield path.name, dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)


class S3ObjectStore:
    """Objects under `prefix` in an S3 bucket, each written with server-side
    encryption (SSE-KMS with `kms_key`, else SSE-S3) and S3's own SHA-256
    checksum, so a corrupted upload is refused by S3 itself."""

    def __init__(
        self, bucket: str, prefix: str = "", kms_key: str = "", endpoint_url: str | None = None, client: Any = None
    ) -> None:
        import boto3  # only deployments that use S3 pay for importing it

        self.bucket, self.prefix, self._kms_key = bucket, prefix, kms_key
        self._client = client or boto3.client("s3", endpoint_url=endpoint_url)

    def key(self, digest: str) -> str:
        return f"{self.prefix}{digest}"

    def put(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        encryption: dict[str, str] = {"ServerSideEncryption": "AES256"}
        if self._kms_key:
            encryption = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._kms_key}
        self._client.put_object(
            Bucket=self.bucket,
            Key=self.key(digest),
            Body=content,
            ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
            **encryption,
        )
        return digest

    def get(self, digest: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.key(digest))
        except self._client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(f"object {digest} is not in s3://{self.bucket}/{self.prefix}") from exc
        content: bytes = response["Body"].read()
        if hashlib.sha256(content).hexdigest() != digest:
            raise CorruptObject(f"object {digest} does not match its hash")
        return content

    def listing(self) -> Iterator[tuple[str, dt.datetime]]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for item in page.get("Contents", []):
                digest = item["Key"].removeprefix(self.prefix)
                if _DIGEST.fullmatch(digest):
                    yield digest, item["LastModified"]

    def delete(self, digest: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self.key(digest))


def object_store(settings: Settings, prefix: str) -> ObjectStore:
    """The configured store for a kind of object (`prefix`, e.g. `certificates/`)."""
    if settings.object_store_s3_bucket:
        return S3ObjectStore(
            settings.object_store_s3_bucket,
            prefix,
            settings.object_store_s3_kms_key,
            settings.object_store_s3_endpoint or None,
        )
    return LocalObjectStore(settings.object_store_dir or settings.data_dir / "objects")
