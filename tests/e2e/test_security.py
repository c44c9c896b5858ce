"""Authentication and authorisation over real gRPC: one test per bad token."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bmc.product.v1 import product_service_pb2, product_service_pb2_grpc
from services.kit.clients import sync_channel
from services.kit.tokens import ensure_dev_signing_key
from tests.conftest import Platform, grpcurl

pytestmark = pytest.mark.e2e


def _claims(platform: Platform, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": platform.settings.jwt_issuer,
        "aud": platform.settings.jwt_audience,
        "sub": "attacker",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "roles": ["operator"],
    }
    claims.update(overrides)
    return claims


def _signed(platform: Platform, **overrides: object) -> str:
    key = ensure_dev_signing_key(platform.settings)
    return jwt.encode(_claims(platform, **overrides), key.private_key, algorithm="ES256", headers={"kid": key.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def alg_none(platform: Platform) -> str:
    key = ensure_dev_signing_key(platform.settings)
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": key.kid}).encode())
    return f"{header}.{_b64(json.dumps(_claims(platform)).encode())}."


def hs256_with_public_key(platform: Platform) -> str:
    """The classic RS/HS confusion: HMAC keyed with the issuer's public key."""
    import hashlib
    import hmac

    jwks = json.loads((platform.settings.auth_dir / "jwks.json").read_text())
    public = json.dumps(jwks["keys"][0]).encode()
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": jwks["keys"][0]["kid"]}).encode())
    payload = _b64(json.dumps(_claims(platform)).encode())
    signature = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def expired(platform: Platform) -> str:
    now = int(time.time())
    return _signed(platform, iat=now - 7200, nbf=now - 7200, exp=now - 3600)


def not_yet_valid(platform: Platform) -> str:
    now = int(time.time())
    return _signed(platform, nbf=now + 3600, exp=now + 7200)


def wrong_audience(platform: Platform) -> str:
    return _signed(platform, aud="some-other-api")


def wrong_issuer(platform: Platform) -> str:
    return _signed(platform, iss="https://evil.example")


def tampered(platform: Platform) -> str:
    """A valid broker token whose payload was edited to grant admin."""
    token = _signed(platform, roles=["broker"], tenant="acme")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin"]
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def foreign_key(platform: Platform) -> str:
    """Signed by a key the issuer never published, reusing its kid."""
    key = ensure_dev_signing_key(platform.settings)
    other = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(_claims(platform), other, algorithm="ES256", headers={"kid": key.kid})


def rs256_unknown_kid(platform: Platform) -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(_claims(platform), other, algorithm="RS256", headers={"kid": "not-published"})


def garbage(platform: Platform) -> str:
    return "this.is-not-a.jwt"


BAD_TOKENS: dict[str, tuple[Callable[[Platform], str], str]] = {
    "alg_none": (alg_none, "ALGORITHM_NOT_ALLOWED"),
    "hs256_signed_with_public_key": (hs256_with_public_key, "ALGORITHM_NOT_ALLOWED"),
    "expired": (expired, "TOKEN_EXPIRED"),
    "not_yet_valid": (not_yet_valid, "TOKEN_NOT_YET_VALID"),
    "wrong_audience": (wrong_audience, "WRONG_AUDIENCE"),
    "wrong_issuer": (wrong_issuer, "WRONG_ISSUER"),
    "tampered": (tampered, "BAD_SIGNATURE"),
    "signed_by_foreign_key": (foreign_key, "BAD_SIGNATURE"),
    "unknown_kid": (rs256_unknown_kid, "UNKNOWN_KEY"),
    "not_a_jwt": (garbage, "MALFORMED_TOKEN"),
}


def _call_get_product(platform: Platform, metadata: tuple[tuple[str, str], ...]) -> grpc.RpcError:
    with sync_channel(platform.settings, "product") as channel:
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetProduct(product_service_pb2.GetProductRequest(name="products/MAIZ"), metadata=metadata, timeout=10)
    return caught.value


def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_token_is_unauthenticated(platform: Platform, case: str) -> None:
    make, reason = BAD_TOKENS[case]
    error = _call_get_product(platform, (("authorization", f"Bearer {make(platform)}"),))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _reason(error) == reason


def test_missing_token_is_unauthenticated(platform: Platform) -> None:
    error = _call_get_product(platform, ())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _reason(error) == "MISSING_TOKEN"


def test_non_bearer_scheme_is_unauthenticated(platform: Platform) -> None:
    error = _call_get_product(platform, (("authorization", "Basic dXNlcjpwYXNz"),))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_valid_token_without_the_role_is_permission_denied(platform: Platform) -> None:
    token = platform.token("broker", tenant="acme")
    with sync_channel(platform.settings, "product") as channel:
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ImportProducts(
                product_service_pb2.ImportProductsRequest(uris=["/tmp/x.csv"]),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(caught.value) == "MISSING_ROLE"


def test_public_verification_needs_no_token(platform: Platform) -> None:
    """VerifyCertificate allows anonymous callers; it then reaches its handler."""
    result = grpcurl(
        "-plaintext",
        "-d",
        '{"code": "7K3M-Q9XD-2WPA"}',
        platform.target("certificate"),
        "bmc.certificate.v1.CertificateService/VerifyCertificate",
    )
    assert "Unauthenticated" not in result.stderr
    assert "PermissionDenied" not in result.stderr
    assert "Unimplemented" in result.stderr or result.returncode == 0


def test_health_and_reflection_need_no_token(platform: Platform) -> None:
    assert grpcurl("-plaintext", platform.target("invoice"), "list").returncode == 0
    assert grpcurl("-plaintext", platform.target("invoice"), "grpc.health.v1.Health/Check").returncode == 0
