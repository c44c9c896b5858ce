"""The REST edge against the running platform (`Cluster` starts the gateway
with the five services): every HTTP rule is served, errors map as
grpc-gateway maps them, the proto3 JSON mapping holds, files go both ways,
and tokens come from `/oauth/token`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from google.api import annotations_pb2
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.oauth import ClientRegistry
from services.gateway.routes import routes_of
from services.kit.topology import SERVICES
from services.ocr.samples import render_pdf, sample_invoices
from tests.conftest import Platform
from tests.e2e.rest import Rest, certified_invoice, error_reason, violated_fields
from tests.integration.clients import wait_until
from tests.integration.invoice_helpers import load_sample_catalog

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def loaded(platform: Platform) -> Iterator[Platform]:
    load_sample_catalog(platform.settings)
    return platform


# ------------------------------------------------------------ every rule


def _sample_path(route: Any) -> str:
    """The route's template with every variable filled in."""
    path = route.template.text
    for variable in route.template.variables:
        pattern = re.escape("{" + variable.field_path) + r"(=[^}]*)?\}"
        match = re.search(pattern, path)
        assert match is not None
        value = match.group(1)[1:].replace("**", "x").replace("*", "x0") if match.group(1) else "2026-01"
        path = path[: match.start()] + value + path[match.end() :]
    return path


ALL_ROUTES = [r for name, spec in SERVICES.items() for r in routes_of(spec.descriptor, name)]


def test_every_http_rule_of_every_service_reaches_its_rpc(platform: Platform) -> None:
    admin = Rest(platform, "admin")
    missed = []
    for route in ALL_ROUTES:
        body = None
        if route.body:
            body = b"[]" if route.streams_request else b"{}"
        response = admin(route.http_method, _sample_path(route), data=body)
        if response.headers.get("X-Bmc-Rpc") != route.grpc_path:
            missed.append(f"{route.http_method} {route.template.text}: {response.status_code} {response.text[:120]}")
        assert response.status_code < 500 or response.status_code == 501, (route.template.text, response.text)
    assert not missed, "\n".join(missed)
    rules = sum(
        1 + len(m.GetOptions().Extensions[annotations_pb2.http].additional_bindings)
        for s in SERVICES.values()
        for m in s.descriptor.methods
    )
    assert len(ALL_ROUTES) == rules


# ------------------------------------------------------------ errors


def test_status_codes_follow_the_grpc_gateway_table(loaded: Platform) -> None:
    admin, broker, anonymous = Rest(loaded, "admin"), Rest(loaded, "broker", tenant="acme"), Rest(loaded)
    code = f"GW-{uuid.uuid4().hex[:8]}"
    product = {
        "displayName": "Café pergamino",
        "category": "CATEGORY_AGRICULTURAL",
        "processingLevel": "PROCESSING_LEVEL_PRIMARY",
    }
    assert admin("POST", f"/v1/products?productId={code}", json=product).status_code == 200
    cases = [
        (anonymous("GET", "/v1/products"), 401, 16),
        (broker("POST", f"/v1/products?productId={code}", json=product), 403, 7),
        (admin("GET", "/v1/products/NO-SUCH-PRODUCT"), 404, 5),
        (admin("POST", f"/v1/products?productId={code}", json=product), 409, 6),
        (admin("GET", "/v1/products?pageSize=-1"), 400, 3),
        (admin("POST", f"/v1/products/{code}:reactivate", json={}), 400, 9),  # FAILED_PRECONDITION → 400
        (admin("GET", "/v1/products", headers={"Grpc-Timeout": "1n"}), 504, 4),
        (admin("PUT", "/v1/products"), 405, 12),
        (admin("GET", "/v2/nowhere"), 404, 5),
    ]
    for response, http, grpc_code in cases:
        assert (response.status_code, response.json().get("code")) == (http, grpc_code), response.text
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["X-Request-Id"]
    assert cases[0][0].headers["WWW-Authenticate"].startswith("Bearer error=")
    assert cases[7][0].headers["Allow"] == "GET, POST"
    assert error_reason(cases[2][0]) == "PRODUCT_NOT_FOUND"


def test_bad_requests_name_the_field_and_never_reach_the_service(platform: Platform) -> None:
    admin = Rest(platform, "admin")
    malformed = admin("POST", "/v1/products", data=b'{"displayName": ', headers={"Content-Type": "application/json"})
    unknown = admin("POST", "/v1/products", json={"displayNam": "x"})
    wrong_type = admin("POST", "/v1/invoices:batchRegister", json={"requests": "not a list"})
    nested = admin("POST", "/v1/invoices", json={"lines": [{"bogus": 1}]})
    bad_enum = admin("GET", "/v1/invoices?state=NOT_A_STATE")
    unknown_param = admin("GET", "/v1/invoices?colour=red")
    body_on_get = admin("GET", "/v1/invoices", data=b'{"pageSize": 1}')
    query_on_star = admin("POST", "/v1/products:batchGet?names=x", json={})
    too_large = admin("POST", "/v1/products:batchGet", data=b"{" + b" " * (9 * 1024 * 1024) + b"}")
    bad_deadline = admin("GET", "/v1/invoices", headers={"Grpc-Timeout": "soon"})
    for response, reason in [
        (malformed, "MALFORMED_JSON"),
        (unknown, "UNKNOWN_FIELD"),
        (wrong_type, "INVALID_VALUE"),
        (nested, "UNKNOWN_FIELD"),
        (bad_enum, "INVALID_VALUE"),
        (unknown_param, "UNKNOWN_PARAMETER"),
        (body_on_get, "UNEXPECTED_BODY"),
        (query_on_star, "UNEXPECTED_PARAMETER"),
        (bad_deadline, "INVALID_TIMEOUT"),
    ]:
        assert (response.status_code, response.json()["code"], error_reason(response)) == (400, 3, reason), (
            response.text
        )
        assert "X-Bmc-Rpc" not in response.headers  # refused before any call
    assert violated_fields(unknown) == ["product.displayNam"]
    assert violated_fields(nested) == ["invoice.lines[0].bogus"]
    assert violated_fields(unknown_param) == ["colour"]
    assert (too_large.status_code, too_large.json()["code"], error_reason(too_large)) == (413, 8, "BODY_TOO_LARGE")


def test_inputs_schemathesis_found_are_refused_not_crashed(platform: Platform) -> None:
    """Regressions: each of these answered 500 before the services checked them."""
    admin = Rest(platform, "admin")
    year_zero = admin("GET", "/v1/commissions?period=0000-01")
    no_such_date = admin("GET", "/v1/invoices?issueDateFrom.year=2026&issueDateFrom.month=2&issueDateFrom.day=31")
    headerless = admin("POST", "/v1/extractions:upload", headers={"Content-Type": "multipart/form-data"})
    blank = admin("POST", "/v1/extractions:upload", data=_one_pixel_png(), headers={"Content-Type": "image/png"})
    assert (year_zero.status_code, violated_fields(year_zero)) == (400, ["period"])
    assert (no_such_date.status_code, error_reason(no_such_date), violated_fields(no_such_date)) == (
        400,
        "INVALID_DATE",
        ["issue_date_from"],
    )
    assert (headerless.status_code, error_reason(headerless)) == (400, "MALFORMED_MULTIPART")
    assert blank.status_code in (200, 400), blank.text


def _one_pixel_png() -> bytes:
    return base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
    )


# ------------------------------------------------------------ JSON mapping


def test_proto3_json_mapping_round_trips_through_rest(platform: Platform) -> None:
    admin = Rest(platform, "admin")
    code = f"GW-{uuid.uuid4().hex[:8]}"
    created = admin(
        "POST",
        f"/v1/products?product_id={code}",  # query parameters by proto name too
        json={"display_name": "Arroz paddy", "category": 1, "processing_level": "PROCESSING_LEVEL_NONE"},
    ).json()  # snake_case input and an enum by number
    assert created["name"] == f"products/{code}"
    assert created["displayName"] == "Arroz paddy"
    assert created["category"] == "CATEGORY_AGRICULTURAL"  # enums written by name
    assert created["revision"] == "1"  # int64 as a string
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", created["createTime"])  # RFC 3339
    assert created["description"] == ""
    assert created["unitCode"] == ""
    patched = admin(
        "PATCH",
        f"/v1/products/{code}?updateMask=displayName,description",  # a FieldMask from the query
        json={"displayName": "Arroz paddy verde", "description": "Tipo 1", "unitCode": "KGM"},
    ).json()
    assert (patched["displayName"], patched["description"], patched["unitCode"], patched["revision"]) == (
        "Arroz paddy verde",
        "Tipo 1",
        "",  # not in the mask
        "2",
    )
    batch = admin("POST", "/v1/products:batchGet", json={"names": [f"products/{code}", "products/NOPE"]}).json()
    assert [p["displayName"] for p in batch["products"]] == ["Arroz paddy verde"]
    assert batch["missing"] == ["products/NOPE"]
    repeated = admin("GET", f"/v1/products?codePrefix={code}&eligibleOnly=true").json()
    assert [p["code"] for p in repeated["products"]] == [code]
    assert admin("GET", f"/v1/products?codePrefix={code}&eligibleOnly=maybe").status_code == 400


# ------------------------------------------------------------ files and flows


def test_an_invoice_registered_over_rest_is_certified_downloadable_and_verifiable(loaded: Platform) -> None:
    body, certificate, broker = certified_invoice(loaded)
    name = body["name"]
    pdf = broker("GET", f"/v1/{certificate['name']}:download")
    assert pdf.status_code == 200
    assert pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    assert hashlib.sha256(pdf.content).hexdigest() == certificate["sha256"]
    anonymous = Rest(loaded)
    verified = anonymous("GET", f"/v1/verifications/{certificate['verificationCode']}").json()
    assert (verified["state"], verified["facts"]["invoiceNumber"]) == ("CERTIFICATE_STATE_VALID", body["number"])
    also = anonymous("GET", "/v1/certificates:verify", params={"sha256": certificate["sha256"]}).json()
    assert also["facts"]["number"] == certificate["number"]
    page = anonymous("GET", f"/verify/{certificate['verificationCode']}")
    assert "Certificado válido" in page.text
    assert body["number"] in page.text
    events = broker("GET", f"/v1/{name}/events").json()
    assert events["events"][0]["type"].endswith("InvoiceRegistered")
    wait_until(lambda: broker("GET", f"/v1/{name}").json()["state"] == "INVOICE_STATE_CERTIFIED", 30)
    listed = broker("GET", "/v1/invoices", params={"state": "INVOICE_STATE_CERTIFIED", "pageSize": 5}).json()
    assert name in [i["name"] for i in listed["invoices"]]


def test_settlement_export_is_served_as_a_file(loaded: Platform) -> None:
    operator = Rest(loaded, "operator")
    period = time.strftime("%Y-%m")
    operation = operator("POST", "/v1/settlements:run", json={"period": period}).json()
    wait_until(lambda: operator("GET", f"/v1/{operation['name']}").json().get("done"), 60)
    done = operator("GET", f"/v1/{operation['name']}").json()
    settlement = done["response"]["name"]
    exported = operator("GET", f"/v1/{settlement}:export", params={"format": "EXPORT_FORMAT_CSV"})
    assert exported.status_code == 200, exported.text
    assert exported.headers["Content-Type"].startswith("text/csv")
    assert exported.text.splitlines()[0].startswith("entry,invoice,")


def test_ocr_reads_a_file_posted_raw_or_as_a_form(platform: Platform) -> None:
    broker = Rest(platform, "broker", tenant="acme")
    sample = sample_invoices(1)[0]
    pdf = render_pdf(sample)
    raw = broker(
        "POST", "/v1/extractions:upload?filename=factura.pdf", data=pdf, headers={"Content-Type": "application/pdf"}
    )
    form = broker("POST", "/v1/extractions:upload", files={"file": ("factura.pdf", pdf, "application/pdf")})
    inline = broker("POST", "/v1/extractions", json={"content": base64.b64encode(pdf).decode(), "filename": "f.pdf"})
    for response in (raw, form, inline):
        assert response.status_code == 200, response.text
        assert response.json()["draft"]["number"] == sample.number
    assert raw.json()["filename"] == "factura.pdf"
    assert form.json()["filename"] == "factura.pdf"
    json_upload = broker("POST", "/v1/extractions:upload", json={"content": "x"})
    assert (json_upload.status_code, error_reason(json_upload)) == (400, "UNSUPPORTED_MEDIA_TYPE")


# ------------------------------------------------------------ edge concerns


def test_oauth_client_credentials_mint_tokens_the_services_accept(platform: Platform) -> None:
    client_id = f"erp-{uuid.uuid4().hex[:6]}"
    registry = ClientRegistry(platform.settings.auth_dir / "clients.json")
    secret = registry.add(client_id, ["broker"], tenant="acme")
    assert secret not in (platform.settings.auth_dir / "clients.json").read_text()
    anonymous = Rest(platform)
    token = anonymous("POST", "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert token.status_code == 200
    assert token.headers["Cache-Control"] == "no-store"
    assert token.json()["token_type"] == "Bearer"
    assert token.json()["scope"] == "broker"
    listed = anonymous("GET", "/v1/invoices", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert listed.status_code == 200
    form = anonymous(
        "POST",
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert form.status_code == 200
    wrong = anonymous("POST", "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, "nope"))
    unknown = anonymous("POST", "/oauth/token", data={"grant_type": "client_credentials"}, auth=("ghost", "nope"))
    grant = anonymous("POST", "/oauth/token", data={"grant_type": "password"}, auth=(client_id, secret))
    scope = anonymous(
        "POST", "/oauth/token", data={"grant_type": "client_credentials", "scope": "admin"}, auth=(client_id, secret)
    )
    assert [(r.status_code, r.json()["error"]) for r in (wrong, unknown, grant, scope)] == [
        (401, "invalid_client"),
        (401, "invalid_client"),
        (400, "unsupported_grant_type"),
        (400, "invalid_scope"),
    ]


def test_request_id_and_trace_context_reach_the_service(platform: Platform) -> None:
    admin = Rest(platform, "admin")
    trace_id, request_id = uuid.uuid4().hex, f"gw-{uuid.uuid4().hex[:12]}"
    headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01", "X-Request-Id": request_id}
    response = admin("GET", "/v1/products/NO-SUCH-PRODUCT", headers=headers)
    assert (response.status_code, response.headers["X-Request-Id"]) == (404, request_id)
    lines: list[dict[str, Any]] = []

    def logged() -> bool:
        lines[:] = [json.loads(line) for line in platform.logs("product").splitlines() if request_id in line]
        return bool(lines)

    wait_until(logged, 10)
    (line,) = [entry for entry in lines if entry.get("event") == "rpc"]
    assert (line["trace_id"], line["method"], line["code"]) == (
        trace_id,
        "/bmc.product.v1.ProductService/GetProduct",
        "NOT_FOUND",
    )

    # Its metrics name the transcoded route's template, never the path (which carries the product's code).
    metrics = dict(platform.cluster.scrape_targets()["services"])["gateway"]
    counted = [
        sample.labels
        for family in text_string_to_metric_families(requests.get(f"http://{metrics}/metrics", timeout=5).text)
        for sample in family.samples
        if sample.name == "bmc_http_requests_total" and sample.labels.get("status") == "404"
    ]
    assert {"route": "/v1/{name=products/*}", "method": "GET", "status": "404"} in counted, counted
    assert not any("NO-SUCH-PRODUCT" in labels["route"] for labels in counted)


def test_health_readiness_docs_and_cors(platform: Platform) -> None:
    anonymous = Rest(platform)
    assert anonymous("GET", "/healthz").json() == {"status": "ok"}
    ready = anonymous("GET", "/readyz").json()
    assert ready["status"] == "ready"
    assert set(ready["services"]) == set(SERVICES)
    document = anonymous("GET", "/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    operations = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert {r.operation_id for r in ALL_ROUTES} <= operations
    docs = anonymous("GET", "/docs")
    assert docs.status_code == 200
    assert "InvoiceService_RegisterInvoice" in docs.text
    # CORS is off unless configured: no grant to a foreign origin.
    preflight = anonymous(
        "OPTIONS", "/v1/invoices", headers={"Origin": "https://erp.example", "Access-Control-Request-Method": "GET"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
