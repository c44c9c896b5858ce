"""Talking to the REST edge in tests: a client with a bearer token, the
parts of a `google.rpc.Status` body tests look at, and an invoice taken
through to its certificate over REST."""

from __future__ import annotations

import uuid
from typing import Any

import requests
from google.protobuf import json_format

from services.cli.cluster import rest_url, rest_verify
from tests.conftest import Platform
from tests.integration.clients import wait_until
from tests.integration.invoice_helpers import invoice


class Rest:
    """A REST client of the platform (through the edge in the mesh), with a
    bearer token when given roles."""

    def __init__(self, platform: Platform, *roles: str, tenant: str = "") -> None:
        self.base = rest_url(platform.settings)
        self.session = requests.Session()
        # Per request: requests lets REQUESTS_CA_BUNDLE override a session's own `verify`.
        self.verify = rest_verify(platform.settings)
        if roles:
            self.session.headers["Authorization"] = f"Bearer {platform.token(*roles, tenant=tenant)}"

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=60, verify=self.verify, **kwargs)


def error_reason(response: requests.Response) -> str:
    for detail in response.json().get("details", []):
        if detail["@type"].endswith("ErrorInfo"):
            return str(detail["reason"])
    return ""


def violated_fields(response: requests.Response) -> list[str]:
    return [
        v["field"]
        for d in response.json().get("details", [])
        if d["@type"].endswith("BadRequest")
        for v in d.get("fieldViolations", [])
    ]


def certified_invoice(
    platform: Platform, tenant: str = "", traceparent: str = ""
) -> tuple[dict[str, Any], dict[str, Any], Rest]:
    """Registers an invoice over REST (catalog loaded; in the caller's trace
    when given one) and waits for its certificate: (the invoice as sent, the
    certificate, the broker's client)."""
    broker = Rest(platform, "broker", tenant=tenant or f"g{uuid.uuid4().hex[:8]}")
    body = json_format.MessageToDict(invoice())
    headers = {"X-Request-Id": f"rest-{uuid.uuid4().hex[:8]}"} | ({"traceparent": traceparent} if traceparent else {})
    registered = broker("POST", "/v1/invoices", json=body, headers=headers)
    assert registered.status_code == 200, registered.text
    body["name"] = registered.json()["name"]
    found: list[dict[str, Any]] = []

    def certified() -> bool:
        found[:] = broker("GET", "/v1/certificates", params={"invoice": body["name"]}).json().get("certificates", [])
        return bool(found)

    wait_until(certified, 60)
    return body, found[0], broker
