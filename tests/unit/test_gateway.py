"""The REST edge's pure parts: path templates, routing, the proto3 JSON
mapping of requests, the status table, the OpenAPI document and client
secrets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from google.protobuf import json_format
from google.rpc import code_pb2

from bmc.invoice.v1 import invoice_service_pb2
from bmc.product.v1 import product_service_pb2
from services.gateway.oauth import ClientError, ClientRegistry, hash_secret, secret_matches
from services.gateway.openapi import Generator
from services.gateway.path_templates import TemplateError, parse_template
from services.gateway.routes import Route, RouteTable, routes_of
from services.gateway.status import HTTP_STATUS, http_status
from services.gateway.token_endpoint import caller_address
from services.gateway.transcoding import TranscodeError, build_request, field_path_of, to_json
from services.kit.settings import Settings
from services.kit.topology import SERVICES

ROUTES = [r for name, spec in SERVICES.items() for r in routes_of(spec.descriptor, name)]
TABLE = RouteTable(ROUTES)


def route(method: str, path: str) -> tuple[Route, dict[str, str]]:
    found, bound = TABLE.match(method, path)
    assert found is not None, (method, path, bound)
    assert isinstance(bound, dict)
    return found, bound


# ------------------------------------------------------------ templates


@pytest.mark.parametrize(
    ("template", "path", "bound"),
    [
        ("/v1/{name=invoices/*}", "/v1/invoices/abc", {"name": "invoices/abc"}),
        ("/v1/{name=invoices/*}:annul", "/v1/invoices/abc:annul", {"name": "invoices/abc"}),
        ("/v1/{name=invoices/*}:annul", "/v1/invoices/a%3Ab:annul", {"name": "invoices/a:b"}),  # encoded colon
        ("/v1/periods/{period}:close", "/v1/periods/2026-01:close", {"period": "2026-01"}),
        ("/v1/{product.name=products/*}", "/v1/products/P%20X", {"product.name": "products/P X"}),
        ("/v1/{x=a/**}", "/v1/a/b/c%2Fd", {"x": "a/b/c%2Fd"}),  # multi-segment keeps %2F
        ("/v1/{x=a/**}", "/v1/a", {"x": "a"}),  # `**` matches nothing too
        ("/v1/{code}", "/v1/a%2Fb", {"code": "a/b"}),  # single segment decodes it
        ("/v1/certificates:verify", "/v1/certificates:verify", {}),
    ],
)
def test_templates_bind_variables_as_grpc_gateway_does(template: str, path: str, bound: dict[str, str]) -> None:
    assert parse_template(template).match(path) == bound


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/{name=invoices/*}", "/v1/invoices"),
        ("/v1/{name=invoices/*}", "/v1/invoices/abc:annul"),  # a custom method, not a name
        ("/v1/{name=invoices/*}", "/v1/products/abc"),
        ("/v1/{name=invoices/*}:annul", "/v1/invoices/abc:cancel"),
        ("/v1/{name=invoices/*}", "/v1/invoices/"),  # `*` needs a segment
        ("/v1/invoices", "v1/invoices"),
    ],
)
def test_templates_refuse_paths_they_do_not_describe(template: str, path: str) -> None:
    assert parse_template(template).match(path) is None


@pytest.mark.parametrize("bad", ["v1/x", "/v1/{a=**}/b", "/v1/{a", "/v1/{a b}", "/v1//x", "/v1/{a={b}}", "/v1/x:"])
def test_malformed_templates_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(bad)


def test_the_route_table_prefers_custom_methods_and_reports_allowed_methods() -> None:
    annul, bound = route("POST", "/v1/invoices/abc:annul")
    assert annul.method.name == "AnnulInvoice"
    assert bound == {"name": "invoices/abc"}
    assert route("GET", "/v1/products/P1:listRevisions")[0].method.name == "ListProductRevisions"
    assert route("GET", "/v1/products/P1")[0].method.name == "GetProduct"
    assert route("GET", "/v1/verifications/ABCD")[0].method.name == "VerifyCertificate"  # additional binding
    assert route("GET", "/v1/certificates:verify")[0].method.name == "VerifyCertificate"
    assert TABLE.match("DELETE", "/v1/products") == (None, ["GET", "POST"])
    assert TABLE.match("GET", "/v2/products") == (None, [])


def test_every_rpc_has_at_least_one_route() -> None:
    served = {r.grpc_path for r in ROUTES}
    every = {f"/{spec.full_name}/{m.name}" for spec in SERVICES.values() for m in spec.descriptor.methods}
    assert served == every


# ------------------------------------------------------------ requests


def test_body_field_query_and_path_fill_one_request() -> None:
    update, bound = route("PATCH", "/v1/products/P1")
    request = build_request(
        update, bound, [("updateMask", "displayName,unitCode")], b'{"display_name": "Maiz", "unitCode": "KGM"}'
    )
    assert isinstance(request, product_service_pb2.UpdateProductRequest)
    assert request.product.name == "products/P1"  # the path wins
    assert (request.product.display_name, request.product.unit_code) == ("Maiz", "KGM")
    assert list(request.update_mask.paths) == ["display_name", "unit_code"]  # FieldMask from a query string


def test_query_parameters_cover_nested_repeated_enums_timestamps_and_bools() -> None:
    listing, bound = route("GET", "/v1/invoices")
    request = build_request(
        listing,
        bound,
        [
            ("pageSize", "25"),
            ("state", "INVOICE_STATE_REGISTERED"),
            ("issueDateFrom.year", "2026"),
            ("issue_date_from.month", "11"),
            ("registerTimeFrom", "2026-11-01T05:00:00Z"),
        ],
        b"",
    )
    assert isinstance(request, invoice_service_pb2.ListInvoicesRequest)
    assert (request.page_size, request.state) == (25, 1)
    assert (request.issue_date_from.year, request.issue_date_from.month) == (2026, 11)
    assert request.register_time_from.seconds == 1_793_509_200
    by_number = build_request(listing, bound, [("state", "1")], b"")
    assert by_number == build_request(listing, bound, [("state", "INVOICE_STATE_REGISTERED")], b"")
    products, none = route("GET", "/v1/products")
    assert build_request(products, none, [("eligibleOnly", "true")], b"").eligible_only is True  # type: ignore[attr-defined]
    batch, nothing = route("POST", "/v1/products:batchGet")
    names = build_request(batch, nothing, [], b'{"names": ["products/A", "products/B"]}')
    assert list(names.names) == ["products/A", "products/B"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "reason", "field"),
    [
        ("POST", "/v1/products", [], b"{", "MALFORMED_JSON", "body"),
        ("POST", "/v1/products", [], b"[1]", "WRONG_JSON_TYPE", "product"),
        ("POST", "/v1/products", [], b'{"colour": "red"}', "UNKNOWN_FIELD", "product.colour"),
        ("POST", "/v1/invoices:batchRegister", [], b'{"requests": 5}', "INVALID_VALUE", "requests"),
        ("GET", "/v1/invoices", [("pageSize", "ten")], b"", "INVALID_VALUE", "page_size"),
        ("GET", "/v1/invoices", [("state", "NOPE")], b"", "INVALID_VALUE", "state"),
        ("GET", "/v1/invoices", [("nope", "1")], b"", "UNKNOWN_PARAMETER", "nope"),
        ("GET", "/v1/invoices", [("issueDateFrom", "2026")], b"", "NOT_A_SCALAR", "issueDateFrom"),
        ("GET", "/v1/products", [("eligibleOnly", "yes")], b"", "INVALID_VALUE", "eligibleOnly"),
        ("GET", "/v1/invoices", [], b'{"pageSize": 1}', "UNEXPECTED_BODY", "body"),
        ("POST", "/v1/products:batchGet", [("names", "x")], b"{}", "UNEXPECTED_PARAMETER", "names"),
        ("PATCH", "/v1/products/P1", [("product.name", "products/Q")], b"{}", "FIELD_ALREADY_BOUND", "product.name"),
        ("GET", "/v1/invoices", [("registerTimeFrom", "yesterday")], b"", "INVALID_VALUE", "register_time_from"),
    ],
)
def test_bad_requests_are_refused_with_the_field_named(
    method: str, path: str, query: list[tuple[str, str]], body: bytes, reason: str, field: str
) -> None:
    found, bound = route(method, path)
    with pytest.raises(TranscodeError) as refused:
        build_request(found, bound, query, body)
    assert (refused.value.reason, refused.value.field) == (reason, field)


def test_field_paths_come_out_of_json_format_errors() -> None:
    assert field_path_of('Message type "x.Line" has no field named "bogus" at "Invoice.lines[0]".', "") == (
        "lines[0].bogus",
        "UNKNOWN_FIELD",
    )
    assert field_path_of("Failed to parse issueDate field: Failed to parse year field: bad", "invoice") == (
        "invoice.issueDate.year",
        "INVALID_VALUE",
    )


def test_responses_are_proto3_json_with_zero_values_and_int64_strings() -> None:
    response = product_service_pb2.BatchGetProductsResponse(missing=["products/X"])
    response.products.add(name="products/A", revision=9_007_199_254_740_993)
    written = json.loads(to_json(response))
    assert written["missing"] == ["products/X"]
    product = written["products"][0]
    assert product["revision"] == "9007199254740993"  # beyond 2^53: a string, exact
    assert product["displayName"] == ""
    assert product["category"] == "CATEGORY_UNSPECIFIED"
    back = json_format.Parse(json.dumps(written), product_service_pb2.BatchGetProductsResponse())
    assert back == response


# ------------------------------------------------------------ errors


def test_the_status_table_is_grpc_gateways_code_by_code() -> None:
    expected = {
        "OK": 200,
        "CANCELLED": 499,
        "UNKNOWN": 500,
        "INVALID_ARGUMENT": 400,
        "DEADLINE_EXCEEDED": 504,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "PERMISSION_DENIED": 403,
        "RESOURCE_EXHAUSTED": 429,
        "FAILED_PRECONDITION": 400,
        "ABORTED": 409,
        "OUT_OF_RANGE": 400,
        "UNIMPLEMENTED": 501,
        "INTERNAL": 500,
        "UNAVAILABLE": 503,
        "DATA_LOSS": 500,
        "UNAUTHENTICATED": 401,
    }
    assert {code_pb2.Code.Name(c): h for c, h in HTTP_STATUS.items()} == expected
    assert len(expected) == len(code_pb2.Code.keys())
    assert http_status(99) == 500  # a code from the future


# ------------------------------------------------------------ OpenAPI


@pytest.fixture(scope="module")
def document() -> dict[str, object]:
    return Generator(ROUTES, "BMC Registry API", "v1").document({}, [s.descriptor for s in SERVICES.values()])


def test_openapi_paths_keep_literals_and_name_the_ids(document: dict[str, object]) -> None:
    paths = document["paths"]
    assert isinstance(paths, dict)
    annul = paths["/v1/invoices/{invoiceId}:annul"]["post"]
    (parameter,) = annul["parameters"]
    assert parameter["schema"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"  # from invoices/[A-Za-z0-9_-]{1,64}
    assert annul["x-grpc-method"] == "/bmc.invoice.v1.InvoiceService/AnnulInvoice"
    assert "/v1/verifications/{code}" in paths
    verify = paths["/v1/certificates:verify"]["get"]
    assert {} in verify["security"]  # public


def test_openapi_carries_protovalidate_constraints(document: dict[str, object]) -> None:
    listing = document["paths"]["/v1/invoices"]["get"]  # type: ignore[index]
    by_name = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert (by_name["pageSize"]["minimum"], by_name["pageSize"]["maximum"]) == (0, 1000)
    assert by_name["sellerNit"]["pattern"] == "^[0-9]{0,15}$"
    assert "issueDateFrom.year" in by_name
    assert by_name["state"]["enum"][1] == "INVOICE_STATE_REGISTERED"
    schemas = document["components"]["schemas"]  # type: ignore[index]
    batch = schemas["bmc.product.v1.BatchGetProductsRequest.Input"]
    assert batch["properties"]["names"]["maxItems"] == 1000
    assert "required" not in schemas["bmc.product.v1.Product"]  # output schemas constrain nothing
    product = schemas["bmc.product.v1.Product"]["properties"]
    assert product["revision"]["type"] == "string"  # int64
    assert product["createTime"]["format"] == "date-time"


def test_every_reference_in_the_openapi_document_resolves(document: dict[str, object]) -> None:
    text = json.dumps(document)
    schemas = document["components"]["schemas"]  # type: ignore[index]
    references = set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    assert references
    assert references <= set(schemas)


# ------------------------------------------------------------ OAuth clients


def test_client_secrets_are_stored_hashed_and_checked_in_constant_time(tmp_path: Path) -> None:
    stored = hash_secret("s3cret")
    assert stored.startswith("scrypt$")
    assert "s3cret" not in stored
    assert secret_matches("s3cret", stored)
    assert not secret_matches("s3cret!", stored)
    assert hash_secret("s3cret") != stored  # salted
    assert not secret_matches("x", "md5$abc")
    assert not secret_matches("x", "garbage")
    registry = ClientRegistry(tmp_path / "clients.json")
    secret = registry.add("erp-acme", ["broker"], tenant="acme")
    assert secret not in (tmp_path / "clients.json").read_text()
    client = registry.get("erp-acme")
    assert client is not None
    assert secret_matches(secret, client.secret_hash)
    assert client.tenant == "acme"
    for bad in (
        ("erp-acme", ["broker"], "acme"),
        ("x", ["admin"], ""),
        ("erp-2", ["root"], ""),
        ("erp-3", ["broker"], ""),
    ):
        with pytest.raises(ClientError):
            registry.add(*bad)
    assert registry.remove("erp-acme")
    assert registry.get("erp-acme") is None
    assert not registry.remove("erp-acme")


# ------------------------------------------------------------ CORS, over real HTTP


async def test_cors_grants_only_the_configured_origins(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from services.gateway.app import build_app
    from services.gateway.upstream import Upstream
    from services.kit.settings import Settings

    settings = Settings(data_dir=tmp_path, gateway_cors_origins="https://erp.example, https://bo.example")
    upstream = Upstream(settings)
    async with TestClient(TestServer(build_app(settings, upstream))) as client:
        asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        allowed = await client.options("/v1/invoices", headers={"Origin": "https://erp.example", **asked})
        foreign = await client.options("/v1/invoices", headers={"Origin": "https://evil.example", **asked})
        simple = await client.get("/healthz", headers={"Origin": "https://bo.example"})
    await upstream.close()
    assert allowed.status == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://erp.example"
    assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Origin" not in foreign.headers
    assert simple.headers["Access-Control-Allow-Origin"] == "https://bo.example"
    assert "X-Request-Id" in simple.headers["Access-Control-Expose-Headers"]


def test_behind_the_edge_a_token_request_comes_from_the_address_the_edge_saw(tmp_path: Path) -> None:
    request = make_mocked_request("POST", "/oauth/token", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
    assert caller_address(request, Settings(data_dir=tmp_path, mesh=True)) == "198.51.100.7", "the edge's entry"
    assert caller_address(request, Settings(data_dir=tmp_path, mesh=False)) == "", "no edge: the header is anyone's"
