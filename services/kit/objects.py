"""Content-addressed object storage: an object's name is the SHA-256 of its
bytes, so what is read back is checked against its name.

The local directory is the default; in AWS the same interface sits on S3
with server-side encryption (infra/terraform)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


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
