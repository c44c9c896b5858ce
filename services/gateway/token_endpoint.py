"""`POST /oauth/token`: the client-credentials grant (RFC 6749 §4.4), with
client authentication by HTTP Basic or form fields (§2.3.1) and errors in
the shape of §5.2.

Attempts are limited per client id and per address (a moving window): a
client guessing secrets, or one address trying many clients, gets 429 with
`Retry-After`. Tokens are short-lived (`BMC_GATEWAY_TOKEN_TTL_SECONDS`,
15 minutes by default): a removed client's tokens die with their expiry,
since services verify tokens offline."""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import time
from typing import Any

from aiohttp import web
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from services.gateway.oauth import ClientRegistry, secret_matches
from services.kit.settings import Settings
from services.kit.tokens import mint_token

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# A hash to compare against for unknown clients, so that timing does not tell which ids exist.
_DECOY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


class TokenLimits:
    """How often a client id, and an address, may ask for a token."""

    def __init__(self, per_client: str, per_address: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._rules: list[tuple[str, RateLimitItem]] = [("client", parse(per_client)), ("address", parse(per_address))]

    async def wait_for(self, client_id: str, address: str) -> int:
        """0 when the attempt may go on; else the seconds until it may."""
        for (scope, rule), key in zip(self._rules, (client_id, address), strict=True):
            if not await self._limiter.hit(rule, scope, key):
                window = await self._limiter.get_window_stats(rule, scope, key)
                return max(1, math.ceil(window.reset_time - time.time()))
        return 0


def _error(status: int, error: str, description: str) -> web.Response:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="bmc-registry"'
    return web.json_response({"error": error, "error_description": description}, status=status, headers=headers)


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def caller_address(request: web.Request, settings: Settings) -> str:
    """Who is asking. In the mesh the gateway is reached only through the
    edge, which appends the address it saw to X-Forwarded-For: that last
    entry, not the connection (always the edge's)."""
    if settings.mesh and (forwarded := request.headers.get("X-Forwarded-For", "")):
        return forwarded.rsplit(",", 1)[-1].strip()
    return request.remote or ""


async def token_endpoint(
    request: web.Request, settings: Settings, clients: ClientRegistry, limits: TokenLimits
) -> web.Response:
    if not settings.gateway_token_endpoint:
        return _error(404, "unsupported_grant_type", "this deployment's tokens come from its identity provider")
    if request.content_type != "application/x-www-form-urlencoded":
        return _error(400, "invalid_request", "send the form as application/x-www-form-urlencoded")
    form = await request.post()
    grant = form.get("grant_type")
    if grant != "client_credentials":
        return _error(400, "unsupported_grant_type", f"grant_type must be client_credentials, not {grant!r}")
    basic = _basic_credentials(request.headers.get("Authorization", ""))
    if basic is not None:
        client_id, secret = basic
    else:
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
    if not client_id or not secret:
        return _error(
            401, "invalid_client", "client authentication is required (HTTP Basic or client_id/client_secret)"
        )
    if wait := await limits.wait_for(client_id, caller_address(request, settings)):
        response = _error(429, "slow_down", f"too many token requests; retry in {wait} s")
        response.headers["Retry-After"] = str(wait)
        return response
    client = clients.get(client_id)
    matches = await asyncio.to_thread(secret_matches, secret, client.secret_hash if client else _DECOY)
    if client is None or not matches:
        return _error(401, "invalid_client", "unknown client or wrong secret")
    requested = str(form.get("scope", "")).split()
    roles = list(client.roles)
    if requested:
        refused = [r for r in requested if r not in client.roles]
        if refused:
            return _error(400, "invalid_scope", f"client {client_id!r} may not have {', '.join(refused)}")
        roles = requested
    ttl = settings.gateway_token_ttl_seconds
    token = mint_token(settings, subject=f"client:{client_id}", roles=roles, tenant=client.tenant, ttl_seconds=ttl)
    return web.json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": " ".join(roles)}, headers=_NO_STORE
    )


def token_paths() -> dict[str, Any]:
    """`/oauth/token` in the OpenAPI document."""
    form = {
        "type": "object",
        "properties": {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
            "scope": {"type": "string", "description": "Space-separated roles, a subset of the client's."},
        },
        "required": ["grant_type"],
    }
    token = {
        "type": "object",
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"type": "string"},
            "expires_in": {"type": "integer"},
            "scope": {"type": "string"},
        },
        "required": ["access_token", "token_type", "expires_in"],
    }
    oauth_error = {
        "type": "object",
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
        "required": ["error"],
    }
    return {
        "/oauth/token": {
            "post": {
                "operationId": "Gateway_Token",
                "tags": ["Platform"],
                "summary": "OAuth2 client-credentials token (RFC 6749 §4.4)",
                "security": [{}],
                "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": form}}},
                "responses": {
                    "200": {"description": "A bearer token.", "content": {"application/json": {"schema": token}}},
                    "default": {
                        "description": "RFC 6749 §5.2 error.",
                        "content": {"application/json": {"schema": oauth_error}},
                    },
                },
            }
        }
    }
