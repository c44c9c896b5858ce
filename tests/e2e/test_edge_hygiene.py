"""The REST edge against careless and hostile clients (issue #15, defect 7):
token requests throttled with Retry-After, slow clients cut off, oversized
chunked uploads answered 413, pages with their security headers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from services.cli.cluster import gateway_state, gateway_url
from services.gateway.oauth import ClientRegistry
from services.kit.settings import Settings
from services.kit.tokens import ensure_dev_signing_key
from tests.conftest import Platform, make_settings
from tests.e2e.rest import Rest, error_reason

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The gateway alone (no service behind it), with tight limits."""
    settings = make_settings(
        tmp_path_factory.mktemp("edge"),
        "embedded",
        gateway_token_limit_per_client="3/minute",
        gateway_token_limit_per_address="6/minute",
        gateway_read_timeout_seconds=1.0,
    )
    ensure_dev_signing_key(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMC_")} | settings.as_environment()
    env.update(BMC_DATABASE_URL="postgresql://unused@127.0.0.1:1/unused", BMC_REDIS_URL="redis://127.0.0.1:1/0")
    log = (settings.data_dir / "gateway.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "services.gateway.main"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while gateway_state(settings, "/healthz") != "SERVING":
            assert process.poll() is None, (settings.data_dir / "gateway.log").read_text()
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        yield settings
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _token(settings: Settings, client_id: str, secret: str) -> requests.Response:
    return requests.post(
        gateway_url(settings) + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=10,
    )


def test_token_requests_are_throttled_per_client_and_per_address(edge: Settings) -> None:
    registry = ClientRegistry(edge.auth_dir / "clients.json")
    guessed, other = f"erp-{uuid.uuid4().hex[:6]}", f"erp-{uuid.uuid4().hex[:6]}"
    secret = registry.add(guessed, ["broker"], tenant="acme")
    other_secret = registry.add(other, ["broker"], tenant="beta")
    guesses = [_token(edge, guessed, f"guess-{n}").status_code for n in range(3)]
    limited = _token(edge, guessed, secret)  # the right secret, but the client is being guessed at
    allowed = _token(edge, other, other_secret)  # another client from the same address still gets in
    while (last := _token(edge, f"ghost-{uuid.uuid4().hex[:6]}", "x")).status_code != 429:
        assert last.status_code == 401
    assert guesses == [401, 401, 401]
    assert limited.status_code == 429
    assert limited.json()["error"] == "slow_down"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert allowed.status_code == 200
    assert 1 <= int(last.headers["Retry-After"]) <= 60, "the address's own limit"
    assert allowed.json()["expires_in"] == 900, "short-lived tokens by default"


def test_a_client_dribbling_its_headers_is_cut_off(edge: Settings) -> None:
    host, port = "127.0.0.1", edge.gateway_port
    with socket.create_connection((host, port), timeout=10) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 8:
            try:
                slow.sendall(b"X-Slow: y\r\n")
            except OSError:
                closed = True
                break
            slow.settimeout(0.5)
            try:
                if slow.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
    assert closed, "the connection was still open after 8 s of trickled headers"
    assert time.monotonic() - started < 4


def test_a_body_that_stalls_gets_408(edge: Settings) -> None:
    with socket.create_connection(("127.0.0.1", edge.gateway_port), timeout=10) as slow:
        slow.sendall(
            b"POST /v1/invoices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"invoice"'
        )
        started = time.monotonic()
        answer = slow.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"SLOW_REQUEST_BODY" in answer
    assert time.monotonic() - started < 6


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_an_oversized_chunked_upload_is_413_every_time(platform: Platform) -> None:
    broker = Rest(platform, "broker", tenant="acme")
    limit = platform.settings.ocr_max_bytes

    def chunks() -> Iterator[bytes]:
        yield b"%PDF-1.7\n"
        for _ in range(limit // 2**20 + 2):
            yield b"%" * 2**20

    answers = [
        broker("POST", "/v1/extractions:upload", data=chunks(), headers={"Content-Type": "application/pdf"})
        for _ in range(3)
    ]
    assert [(a.status_code, error_reason(a)) for a in answers] == [(413, "FILE_TOO_LARGE")] * 3


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_pages_carry_their_security_headers(platform: Platform) -> None:
    anyone = Rest(platform)
    for path in ("/verify", "/verify/0000-0000-0000", "/docs"):
        page = anyone("GET", path)
        assert page.status_code == 200
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert anyone("GET", "/openapi.json").headers["X-Content-Type-Options"] == "nosniff"
