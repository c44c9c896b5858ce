"""OAuth2 access tokens: verification for every service, and minting with the
dev key for local use (`bmc token`, tests, the gateway's `/oauth/token`).

Verification accepts only asymmetric algorithms (RS256, ES256), picks the key
by `kid` from a JWKS (file or URL), requires the key's own algorithm (so an
HS256 token "signed" with a public key never passes), and checks `iss`,
`aud`, `exp`, `nbf` with a small leeway. In AWS the issuer is Cognito and
only `BMC_JWKS`, `BMC_JWT_ISSUER` and `BMC_JWT_AUDIENCE` change.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bmc.auth.v1 import policy_pb2
from services.kit.files import exclusive_lock, write_private
from services.kit.settings import Settings

ALLOWED_ALGORITHMS = frozenset({"RS256", "ES256"})
ROLE_NAMES: dict[str, int] = {
    name.removeprefix("ROLE_").lower(): number
    for name, number in policy_pb2.Role.items()
    if number != policy_pb2.ROLE_UNSPECIFIED
}


class TokenError(Exception):
    """A token that must be refused; `reason` is a stable code for ErrorInfo."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Principal:
    """The verified identity behind a call."""

    subject: str
    roles: frozenset[int]
    tenant: str = ""
    token_id: str = ""

    @property
    def role_names(self) -> list[str]:
        return sorted(policy_pb2.Role.Name(r).removeprefix("ROLE_").lower() for r in self.roles)  # type: ignore[arg-type]

    @property
    def broker(self) -> str:
        """The tenant as a resource name, `brokers/{id}`; empty for cross-tenant roles."""
        return f"brokers/{self.tenant}" if self.tenant else ""


ANONYMOUS = Principal(subject="anonymous", roles=frozenset({policy_pb2.ROLE_PUBLIC}))


class KeySet:
    """Public keys by `kid`, from a JWKS file (re-read when it changes) or URL."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._client = jwt.PyJWKClient(source, cache_keys=True) if source.startswith("https://") else None
        self._mtime = -1.0
        self._keys: dict[str, jwt.PyJWK] = {}

    def get(self, kid: str) -> jwt.PyJWK:
        if self._client is not None:
            try:
                return self._client.get_signing_key(kid)
            except jwt.PyJWKClientError as exc:
                raise TokenError("UNKNOWN_KEY", f"no key {kid!r} at the issuer: {exc}") from exc
        path = Path(self._source)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError as exc:
            raise TokenError("NO_KEYS", f"JWKS file {path} does not exist") from exc
        if mtime != self._mtime:
            keys = jwt.PyJWKSet.from_json(path.read_text()).keys
            self._keys = {k.key_id: k for k in keys if k.key_id}
            self._mtime = mtime
        try:
            return self._keys[kid]
        except KeyError as exc:
            raise TokenError("UNKNOWN_KEY", f"token signed with unknown key {kid!r}") from exc


class TokenVerifier:
    """Checks access tokens and turns them into principals.

    Clients reuse a token for many calls, so a verified token is remembered
    (by its exact text) until it expires or for at most `CACHE_SECONDS`,
    whichever comes first; the signature is checked once, `exp` every time.
    """

    CACHE_SECONDS = 300
    CACHE_SIZE = 10_000

    def __init__(
        self,
        keys: KeySet,
        issuer: str,
        audience: str,
        leeway_seconds: int,
        cognito: CognitoClaims | None = None,
    ) -> None:
        self._keys, self._issuer, self._audience, self._leeway = keys, issuer, audience, leeway_seconds
        self._cognito = cognito
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before and still valid, else None."""
        entry = self._verified.get(token)
        if entry is None:
            return None
        principal, valid_until = entry
        if time.time() >= valid_until:
            del self._verified[token]
            return None
        return principal

    def verify(self, token: str) -> Principal:
        principal = self.cached(token)
        if principal is not None:
            return principal
        principal, expires = self._verify(token)
        self._verified[token] = (principal, min(expires + self._leeway, time.time() + self.CACHE_SECONDS))
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        cognito = (
            CognitoClaims(settings.jwt_scope_prefix, settings.client_tenants) if settings.jwt_scope_prefix else None
        )
        return cls(
            KeySet(settings.jwks_source),
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.jwt_leeway_seconds,
            cognito,
        )

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise TokenError("MALFORMED_TOKEN", f"token is not a well-formed JWT: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise TokenError("ALGORITHM_NOT_ALLOWED", f"algorithm {algorithm!r} is not accepted; use RS256 or ES256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("MISSING_KEY_ID", "token header has no `kid`")
        key = self._keys.get(kid)
        if key.algorithm_name != algorithm:
            raise TokenError(
                "ALGORITHM_MISMATCH", f"key {kid!r} signs with {key.algorithm_name}, token says {algorithm}"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=None if self._cognito else self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={
                    "require": ["exp", "iat", "iss", "sub", *(("client_id",) if self._cognito else ("aud",))],
                    "verify_aud": not self._cognito,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("TOKEN_EXPIRED", "token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenError("TOKEN_NOT_YET_VALID", "token is not valid yet (nbf/iat in the future)") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("WRONG_AUDIENCE", f"token is not meant for {self._audience!r}") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError("WRONG_ISSUER", f"token was not issued by {self._issuer!r}") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("BAD_SIGNATURE", "token signature does not verify") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError("MISSING_CLAIM", str(exc)) from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError("INVALID_TOKEN", f"token refused: {exc}") from exc
        principal = self._cognito.principal(claims) if self._cognito else principal_from_claims(claims)
        return principal, float(claims["exp"])


@dataclass(frozen=True)
class CognitoClaims:
    """Access tokens of Amazon Cognito's client-credentials grant, as API
    Gateway's authorizer passes them on: an access token (`token_use`) of an
    app client (`client_id`, which API Gateway already matched against the
    registry's clients) whose scopes name its roles. A broker client's
    tenant is not in the token at all: it is fixed per app client, so no
    token can speak for another broker."""

    scope_prefix: str
    client_tenants: Mapping[str, str]

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        if claims.get("token_use") != "access":
            raise TokenError("NOT_AN_ACCESS_TOKEN", "only access tokens are accepted (token_use must be `access`)")
        client = str(claims["client_id"])
        scopes = str(claims.get("scope", "")).split()
        names = [s.removeprefix(self.scope_prefix) for s in scopes if s.startswith(self.scope_prefix)]
        roles = frozenset(ROLE_NAMES[n] for n in names if n in ROLE_NAMES and n not in ("service", "public"))
        tenant = self.client_tenants.get(client, "")
        if policy_pb2.ROLE_BROKER in roles and not tenant:
            raise TokenError("MISSING_TENANT", f"app client {client} has the broker scope but no broker assigned")
        return Principal(subject=client, roles=roles, tenant=tenant, token_id=str(claims.get("jti", "")))


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    raw_roles = claims.get("roles", [])
    if isinstance(raw_roles, str):
        raw_roles = raw_roles.split()
    roles = frozenset(ROLE_NAMES[r] for r in raw_roles if isinstance(r, str) and r in ROLE_NAMES)
    tenant = claims.get("tenant", "")
    if not isinstance(tenant, str):
        raise TokenError("INVALID_CLAIM", "`tenant` claim must be a string")
    if policy_pb2.ROLE_BROKER in roles and not tenant:
        raise TokenError("MISSING_TENANT", "a broker token must name its tenant")
    return Principal(subject=str(claims["sub"]), roles=roles, tenant=tenant, token_id=str(claims.get("jti", "")))


# ---------------------------------------------------------------- dev issuer


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    algorithm: str = "ES256"


def _jwk_of(private_key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    public = jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    thumbprint_input = json.dumps({k: public[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    kid = jwt.utils.base64url_encode(hashlib.sha256(thumbprint_input.encode()).digest()).decode()
    return {**public, "kid": kid, "alg": "ES256", "use": "sig"}


def ensure_dev_signing_key(settings: Settings) -> SigningKey:
    """The dev issuer's ES256 key under the data directory, created on first use,
    with the JWKS that verifiers read next to it."""
    directory = settings.auth_dir
    key_path, jwks_path = directory / "signing-key.pem", directory / "jwks.json"
    with exclusive_lock(directory / ".lock"):
        if not key_path.exists():
            private = ec.generate_private_key(ec.SECP256R1())
            write_private(
                key_path,
                private.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
            )
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
        jwk = _jwk_of(loaded)
        wanted = json.dumps({"keys": [jwk]}, indent=2)
        if not jwks_path.exists() or jwks_path.read_text() != wanted:
            tmp = jwks_path.with_suffix(".tmp")
            tmp.write_text(wanted)
            os.replace(tmp, jwks_path)
    return SigningKey(kid=jwk["kid"], private_key=loaded)


def mint_token(
    settings: Settings,
    *,
    subject: str,
    roles: Iterable[str],
    tenant: str = "",
    ttl_seconds: int = 3600,
    key: SigningKey | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """An access token from the dev issuer."""
    unknown = [r for r in roles if r not in ROLE_NAMES]
    if unknown:
        raise ValueError(f"unknown role(s) {unknown}; known: {sorted(ROLE_NAMES)}")
    key = key or ensure_dev_signing_key(settings)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
        "roles": list(roles),
    }
    if tenant:
        claims["tenant"] = tenant
    claims.update(extra_claims or {})
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
