"""Opaque keyset page tokens (AIP-158).

A token carries the sort key of the last item returned and a fingerprint of
the request's filters, so a token reused with other filters, or edited, is
refused with INVALID_ARGUMENT instead of returning a wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from services.kit.errors import FieldViolation, InvalidArgument

_PAGING_FIELDS = ("page_token", "page_size")
# Tokens are not secrets, the MAC only makes tampering evident.
_KEY = b"bmc-page-token-v1"


def request_fingerprint(request: Message) -> str:
    """Digest of the request's fields other than paging ones."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in _PAGING_FIELDS:
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def _mac(body: bytes) -> str:
    return hmac.new(_KEY, body, hashlib.sha256).hexdigest()[:16]


def encode_page_token(last_key: list[Any], request: Message) -> str:
    body = json.dumps({"k": last_key, "f": request_fingerprint(request)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body + b"." + _mac(body).encode()).decode().rstrip("=")


def decode_page_token(token: str, request: Message) -> list[Any] | None:
    """The sort key after which the page starts, or None for the first page."""
    if not token:
        return None
    bad = InvalidArgument(
        "page_token is not a token from a previous response to this same request",
        reason="INVALID_PAGE_TOKEN",
        violations=[
            FieldViolation("page_token", "unknown, tampered or reused with other filters", "INVALID_PAGE_TOKEN")
        ],
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body, _, mac = raw.rpartition(b".")
        if not hmac.compare_digest(mac.decode(), _mac(body)):
            raise bad
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad from exc
    if not isinstance(decoded, dict) or decoded.get("f") != request_fingerprint(request):
        raise bad
    key = decoded.get("k")
    if not isinstance(key, list):
        raise bad
    return key


def page_size(requested: int, default: int, maximum: int) -> int:
    return default if requested <= 0 else min(requested, maximum)


def next_token(page: Sequence[tuple[Any, Sequence[Any]]], size: int, request: Message) -> str:
    """For a page fetched with one row more than `size` (each row an item and
    its sort key): the token of the next page, or "" when this is the last."""
    return encode_page_token(list(page[size - 1][1]), request) if len(page) > size else ""
