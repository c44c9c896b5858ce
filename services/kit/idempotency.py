"""Idempotency keys (AIP-155): a `request_id` names one request of one
caller to one method.

A key is scoped to (method, tenant, caller): another tenant's or another
caller's key is simply another key, never a way to read their answer. The
same request sent again gets the first answer; the key sent with a
different request is refused (ALREADY_EXISTS, reason REQUEST_ID_REUSED)
rather than silently answered with the first request's result.

`RequestKeys` keeps the answers of plain RPCs (`CreateProduct`,
`IssueCertificate`, `AnnulInvoice`) in the service's `request_keys` table;
long-running operations keep their keys on the operation itself
(`services.kit.operations`) and registrations on their invoices.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import asyncpg
from google.protobuf.message import Message

from services.kit.auth import require_principal
from services.kit.errors import Aborted, AlreadyExists
from services.kit.tokens import Principal

R = TypeVar("R", bound=Message)
Q = TypeVar("Q", bound=Message)

# A reservation older than this is taken to belong to a caller that died
# before answering, and may be taken over by a retry.
STALE_SECONDS = 60


def request_fingerprint(request: Message) -> str:
    """What makes two requests with one key the same request: every field
    but the key. (The key is cleared and put back rather than the request
    copied: uploads carry files of tens of megabytes.)"""
    key = getattr(request, "request_id", "")
    if key:
        request.ClearField("request_id")
    try:
        serialized = request.SerializeToString(deterministic=True)
    finally:
        if key:
            request.request_id = key  # type: ignore[attr-defined]
    return hashlib.sha256(serialized).hexdigest()


def reused(request_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id!r} was already used for a different request; send a new request_id for a new request",
        reason="REQUEST_ID_REUSED",
        metadata={"field": "request_id", "request_id": request_id},
    )


class RequestKeys:
    """Answers of keyed requests, in the service's own database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def once(
        self,
        method: str,
        request: Message,
        principal: Principal,
        answer_type: type[R],
        produce: Callable[[], Awaitable[R]],
    ) -> R:
        """`produce()`'s answer, computed once per key: a repeat of the same
        request gets the stored answer. A failure frees the key, so that a
        retry runs again."""
        request_id = getattr(request, "request_id", "")
        if not request_id:
            return await produce()
        key = (method, principal.broker, principal.subject, request_id)
        fingerprint = request_fingerprint(request)
        async with self._pool.acquire() as conn:
            reserved = await conn.fetchval(
                "INSERT INTO request_keys (method, tenant, subject, request_id, fingerprint) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
                *key, fingerprint,
            )  # fmt: skip
            if not reserved:
                row = await conn.fetchrow(
                    "SELECT fingerprint, response, create_time < now() - make_interval(secs => $5) AS stale "
                    "FROM request_keys WHERE method = $1 AND tenant = $2 AND subject = $3 AND request_id = $4",
                    *key, STALE_SECONDS,
                )  # fmt: skip
                if row is None:  # freed by a failed first attempt meanwhile: this one is a first attempt
                    return await self.once(method, request, principal, answer_type, produce)
                if row["fingerprint"] != fingerprint:
                    raise reused(request_id)
                if row["response"] is not None:
                    return answer_type.FromString(row["response"])
                # A reservation whose caller died before answering is taken over, by one retry only.
                taken = row["stale"] and await conn.fetchval(
                    "UPDATE request_keys SET create_time = now() "
                    "WHERE method = $1 AND tenant = $2 AND subject = $3 AND request_id = $4 AND response IS NULL "
                    "AND create_time < now() - make_interval(secs => $5) RETURNING true",
                    *key, STALE_SECONDS,
                )  # fmt: skip
                if not taken:
                    raise Aborted(
                        f"the request with request_id {request_id!r} is still being answered; retry shortly",
                        reason="REQUEST_IN_PROGRESS",
                        metadata={"request_id": request_id},
                    )
        try:
            answer = await produce()
        except BaseException:
            async with self._pool.acquire() as conn:
                await conn.execute(
                    "DELETE FROM request_keys WHERE method = $1 AND tenant = $2 AND subject = $3 AND request_id = $4 "
                    "AND response IS NULL",
                    *key,
                )  # fmt: skip
            raise
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE request_keys SET response = $5 "
                "WHERE method = $1 AND tenant = $2 AND subject = $3 AND request_id = $4",
                *key, answer.SerializeToString(),
            )  # fmt: skip
        return answer


class Keyed(Protocol):
    """A servicer whose keyed RPCs keep their answers in `request_keys`."""

    request_keys: RequestKeys


# An RPC method of a servicer: (servicer, request, context) to its answer.
Rpc = Callable[[Any, Q, Any], Awaitable[R]]


def keyed(answer_type: type[R]) -> Callable[[Rpc[Q, R]], Rpc[Q, R]]:
    """Makes an RPC honour its request's `request_id`: answered once per key
    of (RPC, tenant, caller), a repeat gets the stored answer."""

    def wrap(rpc: Rpc[Q, R]) -> Rpc[Q, R]:
        @functools.wraps(rpc)
        async def once(servicer: Keyed, request: Q, context: Any) -> R:
            return await servicer.request_keys.once(
                rpc.__name__, request, require_principal(), answer_type, lambda: rpc(servicer, request, context)
            )

        return once

    return wrap
