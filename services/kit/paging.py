"""Opaque keyset page tokens (AIP-158), and the one way List RPCs page.

A token carries the sort key of the last item returned and a fingerprint of
the request's filters, authenticated with the deployment's page-token
secret (`BMC_PAGE_TOKEN_SECRET`, or a key generated under the data
directory). A token reused with other filters, edited, minted without the
secret, or whose sort key does not have the types the RPC sorts by, is
refused with INVALID_ARGUMENT / INVALID_PAGE_TOKEN, never a wrong page or
an internal error.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from buf.validate import validate_pb2
from services.kit.errors import FieldViolation, InvalidArgument
from services.kit.files import exclusive_lock, write_private

T = TypeVar("T")
_PAGING_FIELDS = ("page_token", "page_size")
_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
_MAX_TEXT = 1024
_key: bytes | None = None


def use_key(key: bytes) -> None:
    """Sets the secret tokens are authenticated with (once, at start-up)."""
    global _key
    if len(key) < 16:
        raise ValueError("the page-token secret must be at least 16 bytes")
    _key = key


def key_from(secret: str, key_file: Path) -> bytes:
    """The configured secret, or the one in `key_file` (created on first use,
    readable by its owner only, shared by every process of the deployment:
    created under a lock, so that processes starting together agree on it
    and none reads it half written)."""
    if secret:
        return secret.encode()
    with exclusive_lock(key_file.with_name(f".{key_file.name}.lock")):
        if not key_file.exists() or key_file.stat().st_size < 16:  # none yet, or torn by a writer that died
            write_private(key_file, secrets.token_bytes(32))
        return key_file.read_bytes()


@dataclass(frozen=True)
class KeyPart:
    """One column of a sort key: how it is written into a token and read back."""

    name: str
    write: Callable[[Any], Any]
    read: Callable[[Any], Any]  # raises ValueError, TypeError or OverflowError for a value of the wrong type


def _read_text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise TypeError("not a text key")
    return value


def _integer(bounds: tuple[int, int]) -> Callable[[Any], int]:
    def read(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
            raise TypeError(f"not an integer key in [{bounds[0]}, {bounds[1]}]")
        return value

    return read


def _read_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError("not a finite number key")
    return float(value)


def _read_instant(value: Any) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(_read_text(value))
    if parsed.tzinfo is None:
        raise ValueError("an instant without a time zone")
    return parsed


def _read_date(value: Any) -> dt.date:
    return dt.date.fromisoformat(_read_text(value))


TEXT = KeyPart("text", str, _read_text)
INT = KeyPart("int", int, _integer(_INT64))  # a bigint column
INT32 = KeyPart("int32", int, _integer(_INT32))  # an integer column
SCORE = KeyPart("score", float, _read_float)
INSTANT = KeyPart("instant", lambda v: v.isoformat(), _read_instant)
DATE = KeyPart("date", lambda v: v.isoformat(), _read_date)


def request_fingerprint(request: Message) -> str:
    """Digest of the request's fields other than paging ones."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in _PAGING_FIELDS:
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def _mac(body: bytes) -> str:
    if _key is None:
        raise RuntimeError("paging.use_key() was not called at start-up")
    return hmac.new(_key, body, hashlib.sha256).hexdigest()[:32]


def encode_page_token(last_key: Sequence[Any], request: Message, keys: Sequence[KeyPart]) -> str:
    values = [part.write(value) for part, value in zip(keys, last_key, strict=True)]
    body = json.dumps({"k": values, "f": request_fingerprint(request)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body + b"." + _mac(body).encode()).decode().rstrip("=")


def _bad_token() -> InvalidArgument:
    return InvalidArgument(
        "page_token is not a token from a previous response to this same request",
        reason="INVALID_PAGE_TOKEN",
        violations=[
            FieldViolation("page_token", "unknown, tampered or reused with other filters", "INVALID_PAGE_TOKEN")
        ],
    )


def decode_page_token(token: str, request: Message, keys: Sequence[KeyPart]) -> list[Any] | None:
    """The sort key after which the page starts, its parts of the types
    `keys` says, or None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body, _, mac = raw.rpartition(b".")
        if not hmac.compare_digest(mac, _mac(body).encode()):
            raise _bad_token()
        decoded = json.loads(body)
    except (ValueError, binascii.Error) as exc:
        raise _bad_token() from exc
    if not isinstance(decoded, dict) or decoded.get("f") != request_fingerprint(request):
        raise _bad_token()
    values = decoded.get("k")
    if not isinstance(values, list) or len(values) != len(keys):
        raise _bad_token()
    try:
        return [part.read(value) for part, value in zip(keys, values, strict=True)]
    except (ValueError, TypeError, OverflowError) as exc:
        raise _bad_token() from exc


def page_size(requested: int, default: int, maximum: int) -> int:
    return default if requested <= 0 else min(requested, maximum)


# Fetches up to `limit` items after a sort key (None: from the start), each
# with its own sort key; then any arguments of the caller's (filters).
Fetch = Callable[..., Awaitable[Sequence[tuple[T, Sequence[Any]]]]]
_maxima: dict[str, int] = {}


def _contract_maximum(request: Message, fallback: int) -> int:
    """The largest page the request's contract allows (its protovalidate
    `page_size` rule), or `fallback` for a request without one."""
    name = request.DESCRIPTOR.full_name
    if name not in _maxima:
        options = request.DESCRIPTOR.fields_by_name["page_size"].GetOptions()
        rules = options.Extensions[validate_pb2.field] if options.HasExtension(validate_pb2.field) else None
        _maxima[name] = rules.int32.lte if rules is not None and rules.int32.HasField("lte") else fallback
    return _maxima[name]


async def list_page(
    request: Any, keys: Sequence[KeyPart], default: int, fetch: Fetch[T], *filters: Any
) -> tuple[list[T], str]:
    """One page of a List RPC (`request` has `page_size` and `page_token`)
    sorted by `keys`: its items and the next page's token ("" on the last
    page), from `fetch(limit, after, *filters)`. The page is `default` long,
    or as asked up to what the contract allows (100 where it says nothing).
    Fetches one item more than the page holds, to know whether another page
    follows."""
    size = page_size(request.page_size, default, _contract_maximum(request, 100))
    after = decode_page_token(request.page_token, request, keys)
    rows = await fetch(size + 1, after, *filters)
    token = encode_page_token(list(rows[size - 1][1]), request, keys) if len(rows) > size else ""
    return [item for item, _ in rows[:size]], token
