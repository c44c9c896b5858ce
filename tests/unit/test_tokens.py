"""Token verification in-process: the rules behind the e2e security tests."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bmc.auth.v1 import policy_pb2
from services.kit.settings import Settings
from services.kit.tokens import KeySet, TokenError, TokenVerifier, ensure_dev_signing_key, mint_token


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.fixture
def verifier(settings: Settings) -> TokenVerifier:
    ensure_dev_signing_key(settings)
    return TokenVerifier.from_settings(settings)


def test_minted_token_round_trips_to_a_principal(settings: Settings, verifier: TokenVerifier) -> None:
    token = mint_token(settings, subject="ana", roles=["broker", "auditor"], tenant="acme")
    principal = verifier.verify(token)
    assert principal.subject == "ana"
    assert principal.roles == {policy_pb2.ROLE_BROKER, policy_pb2.ROLE_AUDITOR}
    assert principal.broker == "brokers/acme"
    assert principal.role_names == ["auditor", "broker"]


def test_leeway_tolerates_small_clock_skew(settings: Settings, verifier: TokenVerifier) -> None:
    key = ensure_dev_signing_key(settings)
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "x",
        "iat": now,
        "nbf": now + 10,
        "exp": now + 60,
    }
    token = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})
    assert verifier.verify(token).subject == "x"
    claims["nbf"] = now + settings.jwt_leeway_seconds + 30
    late = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})
    with pytest.raises(TokenError) as caught:
        verifier.verify(late)
    assert caught.value.reason == "TOKEN_NOT_YET_VALID"


def test_broker_token_without_tenant_is_refused(settings: Settings, verifier: TokenVerifier) -> None:
    with pytest.raises(TokenError) as caught:
        verifier.verify(mint_token(settings, subject="b", roles=["broker"]))
    assert caught.value.reason == "MISSING_TENANT"


def test_unknown_roles_are_refused_at_minting(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        mint_token(settings, subject="x", roles=["superuser"])


def test_required_claims(settings: Settings, verifier: TokenVerifier) -> None:
    key = ensure_dev_signing_key(settings)
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "exp": int(time.time()) + 60,
        "iat": int(time.time()),
    }
    token = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    assert caught.value.reason == "MISSING_CLAIM"


def test_key_rotation_is_picked_up_from_the_jwks_file(tmp_path: Path) -> None:
    """A verifier re-reads its JWKS file when it changes: an RS256 key added later verifies."""
    settings = Settings(data_dir=tmp_path)
    ensure_dev_signing_key(settings)
    verifier = TokenVerifier.from_settings(settings)
    verifier.verify(mint_token(settings, subject="a", roles=["operator"]))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwks_path = settings.auth_dir / "jwks.json"
    jwks = json.loads(jwks_path.read_text())
    jwks["keys"].append({**jwk, "kid": "rotated", "alg": "RS256", "use": "sig"})
    time.sleep(0.01)
    jwks_path.write_text(json.dumps(jwks))
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "r",
        "iat": now,
        "exp": now + 60,
        "roles": ["auditor"],
    }
    token = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rotated"})
    assert verifier.verify(token).subject == "r"


def test_missing_jwks_file_is_a_clear_refusal(tmp_path: Path) -> None:
    verifier = TokenVerifier(KeySet(str(tmp_path / "none.json")), "iss", "aud", 0)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"sub": "x"}, other, algorithm="RS256", headers={"kid": "k"})
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    assert caught.value.reason == "NO_KEYS"


# Amazon Cognito's client-credentials access tokens, shaped as the user pool
# issues them (no `aud`, no `roles`, the roles as scopes, `client_id` = `sub`).
COGNITO_PREFIX = "https://api.bmc-registry.co/"


def _cognito_token(settings: Settings, client: str, scope: str, **changes: object) -> str:
    key = ensure_dev_signing_key(settings)
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": settings.jwt_issuer,
        "sub": client,
        "client_id": client,
        "token_use": "access",
        "scope": scope,
        "iat": now,
        "exp": now + 900,
        "jti": "cognito-1",
        **changes,
    }
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})


@pytest.fixture
def cognito(tmp_path: Path) -> tuple[Settings, TokenVerifier]:
    settings = Settings(
        data_dir=tmp_path, jwt_scope_prefix=COGNITO_PREFIX, jwt_client_tenants='{"erp-agrocampo": "B0042"}'
    )
    ensure_dev_signing_key(settings)
    return settings, TokenVerifier.from_settings(settings)


def test_cognito_scopes_are_roles_and_the_app_client_fixes_the_tenant(cognito: tuple[Settings, TokenVerifier]) -> None:
    settings, verifier = cognito
    broker = verifier.verify(_cognito_token(settings, "erp-agrocampo", f"{COGNITO_PREFIX}broker"))
    assert broker.roles == {policy_pb2.ROLE_BROKER}
    assert broker.broker == "brokers/B0042"
    office = verifier.verify(
        _cognito_token(settings, "backoffice", f"{COGNITO_PREFIX}operator {COGNITO_PREFIX}auditor other/admin")
    )
    assert office.roles == {policy_pb2.ROLE_OPERATOR, policy_pb2.ROLE_AUDITOR}, "scopes of other servers give nothing"
    assert office.subject == "backoffice"


@pytest.mark.parametrize(
    ("client", "scope", "changes", "reason"),
    [
        ("erp-unknown", f"{COGNITO_PREFIX}broker", {}, "MISSING_TENANT"),  # broker scope, no broker assigned
        ("erp-agrocampo", f"{COGNITO_PREFIX}broker", {"token_use": "id"}, "NOT_AN_ACCESS_TOKEN"),
        ("erp-agrocampo", f"{COGNITO_PREFIX}broker", {"client_id": None}, "MISSING_CLAIM"),
        ("erp-agrocampo", f"{COGNITO_PREFIX}broker", {"iss": "https://elsewhere"}, "WRONG_ISSUER"),
    ],
)
def test_cognito_tokens_that_do_not_qualify_are_refused(
    cognito: tuple[Settings, TokenVerifier], client: str, scope: str, changes: dict[str, object], reason: str
) -> None:
    settings, verifier = cognito
    token = _cognito_token(settings, client, scope, **changes)
    if changes.get("client_id", "") is None:  # the claim absent, not null
        key = ensure_dev_signing_key(settings)
        claims = jwt.decode(token, options={"verify_signature": False})
        del claims["client_id"]
        token = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    assert caught.value.reason == reason


def test_a_tenant_map_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        Settings(data_dir=tmp_path, jwt_client_tenants='["B0042"]')
