"""Authentication and authorisation interceptors, and the caller's identity.

Authentication verifies the bearer token (health and reflection need none;
methods whose policy allows anonymous callers accept no token). Authorisation
reads the method's `bmc.auth.v1.policy` option from the contract and fails
closed: a method without a policy is refused to everyone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from bmc.auth.v1 import policy_pb2
from services.kit.errors import PermissionDenied, Unauthenticated, abort, to_status
from services.kit.interception import Context, MethodInfo, ScopedInterceptor, metadata_value
from services.kit.pki import peer_problem
from services.kit.tokens import ANONYMOUS, Principal, TokenError, TokenVerifier

_principal: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current_principal() -> Principal | None:
    """The verified caller of the RPC being handled."""
    return _principal.get()


def require_principal() -> Principal:
    principal = _principal.get()
    if principal is None:  # pragma: no cover - the interceptors guarantee one
        raise Unauthenticated("no authenticated caller", reason="UNAUTHENTICATED")
    return principal


def tenant_scope(principal: Principal) -> str:
    """The broker whose data the caller may see; empty for cross-tenant roles."""
    cross = {policy_pb2.ROLE_ADMIN, policy_pb2.ROLE_OPERATOR, policy_pb2.ROLE_AUDITOR, policy_pb2.ROLE_SERVICE}
    return "" if principal.roles & cross else principal.broker


def acting_for(principal: Principal, requested: str, action: str) -> str:
    """The broker a call acts for: a broker's own (naming another is refused),
    otherwise whatever broker the caller names, possibly none."""
    own = tenant_scope(principal)
    if own and requested and requested != own:
        raise PermissionDenied(f"a broker {action} only for itself ({own})", reason="OTHER_TENANT")
    return own or requested


def bearer_token(context: Context) -> str | None:
    header = metadata_value(context, "authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


class PeerInterceptor(ScopedInterceptor):
    """With mutual TLS: the client's certificate must be one made for client
    authentication and name a known identity (the CA alone is not enough:
    it may have issued certificates for other purposes or to others)."""

    def __init__(self, known: frozenset[str]) -> None:
        super().__init__()
        self._known = known
        self._verdicts: dict[bytes, str] = {}

    @asynccontextmanager
    async def scope(self, method: MethodInfo, request: Any, context: Context) -> AsyncIterator[Any]:
        pem = next(iter(context.auth_context().get("x509_pem_cert") or ()), b"")
        problem = self._verdicts.get(pem)
        if problem is None:
            problem = peer_problem(pem, self._known) if pem else "no client certificate"
            self._verdicts[pem] = problem
        if problem:
            await abort(context, to_status(PermissionDenied(f"TLS client refused: {problem}", reason="UNKNOWN_PEER")))
        yield request


class AuthenticationInterceptor(ScopedInterceptor):
    """Turns the `authorization: Bearer <jwt>` metadata into a principal."""

    def __init__(self, verifier: TokenVerifier) -> None:
        super().__init__()
        self._verifier = verifier

    def applies_to(self, method: MethodInfo) -> bool:
        return not method.infrastructure

    @asynccontextmanager
    async def scope(self, method: MethodInfo, request: Any, context: Context) -> AsyncIterator[Any]:
        token = bearer_token(context)
        if token is None:
            if method.policy is not None and method.policy.allow_anonymous:
                principal = ANONYMOUS
            else:
                await abort(context, to_status(Unauthenticated("missing bearer token", reason="MISSING_TOKEN")))
        elif token == "":
            await abort(
                context, to_status(Unauthenticated("authorization must be `Bearer <token>`", reason="MALFORMED_TOKEN"))
            )
        else:
            try:
                # A first sight may fetch a JWKS URL: keep that off the event loop.
                cached = self._verifier.cached(token)
                if cached is None:
                    cached = await asyncio.to_thread(self._verifier.verify, token)
                principal = cached
            except TokenError as exc:
                await abort(context, to_status(Unauthenticated(exc.message, reason=exc.reason)))
        # Not reset on exit: each RPC runs in its own task (its own context),
        # and the RPC stats interceptor outside this one logs the caller.
        _principal.set(principal)
        yield request


class AuthorizationInterceptor(ScopedInterceptor):
    """Enforces the roles the contract declares for each method."""

    def applies_to(self, method: MethodInfo) -> bool:
        return not method.infrastructure

    @asynccontextmanager
    async def scope(self, method: MethodInfo, request: Any, context: Context) -> AsyncIterator[Any]:
        principal = require_principal()
        policy = method.policy
        if policy is None:
            await abort(
                context,
                to_status(PermissionDenied(f"{method.full_method} declares no access policy", reason="NO_POLICY")),
            )
        allowed = set(policy.roles)
        if not principal.roles & allowed:
            needed = ", ".join(sorted(policy_pb2.Role.Name(r).removeprefix("ROLE_").lower() for r in allowed))
            await abort(
                context,
                to_status(
                    PermissionDenied(
                        f"{method.name} needs one of the roles: {needed}",
                        reason="MISSING_ROLE",
                        metadata={"required_roles": needed, "method": method.full_method},
                    )
                ),
            )
        yield request
