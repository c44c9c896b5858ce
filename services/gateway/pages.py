"""Server-rendered pages: the public certificate verification page (in
Spanish, the QR code's target) and the API docs page."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import grpc
import jinja2

from bmc.certificate.v1 import certificate_pb2, certificate_service_pb2
from services.dian import calendar
from services.dian.money import pesos
from services.gateway.routes import RouteTable
from services.gateway.status import status_of
from services.gateway.upstream import Upstream, call_metadata

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("services.gateway", "html"), autoescape=True, undefined=jinja2.StrictUndefined
)


def _style_hash() -> str:
    """CSP's hash of the pages' one stylesheet (inline in base.html, no template code in it)."""
    source, _, _ = _ENV.loader.get_source(_ENV, "base.html")  # type: ignore[union-attr]
    style = source.split("<style>", 1)[1].split("</style>", 1)[0]
    return base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()


# The pages load nothing but that stylesheet and their own images; they may
# not be framed (clickjacking), and they tell other sites nothing of the code looked up.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_style_hash()}'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
STATES = {
    certificate_pb2.CERTIFICATE_STATE_VALID: "valido",
    certificate_pb2.CERTIFICATE_STATE_REVOKED: "revocado",
    certificate_pb2.CERTIFICATE_STATE_SUPERSEDED: "reemplazado",
}


@dataclass
class Verification:
    """What the page shows for a code."""

    outcome: str  # valido, revocado, reemplazado, desconocido, invalido, no_disponible
    message: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    revoke_reason: str = ""
    change_time: str = ""
    superseded_by: str = ""


def _pesos(text: str) -> str:
    try:
        return pesos(Decimal(text))
    except (InvalidOperation, ValueError):
        return text


def _when(timestamp: Any) -> str:
    moment: dt.datetime = timestamp.ToDatetime(tzinfo=dt.UTC).astimezone(calendar.COLOMBIA)
    return moment.strftime("%d/%m/%Y %H:%M (hora de Colombia)")


def _party(party: Any) -> str:
    number = party.id.number + (f"-{party.id.check_digit}" if party.id.check_digit else "")
    return f"{party.legal_name} — {number}" if party.legal_name else number


def _facts(facts: certificate_pb2.CertifiedFacts) -> list[tuple[str, str]]:
    kind = "Factura registrada" if facts.kind == certificate_pb2.CERTIFICATE_KIND_INVOICE else "Operaciones del período"
    rows = [("Certificado", facts.number), ("Tipo", kind), ("Expedido", _when(facts.issue_time))]
    if facts.invoice_number:
        rows.append(("Factura", facts.invoice_number))
    if facts.registration_number:
        rows.append(("Registro BMC", facts.registration_number))
    if facts.HasField("seller"):
        rows.append(("Vendedor", _party(facts.seller)))
    if facts.HasField("buyer"):
        rows.append(("Comprador", _party(facts.buyer)))
    if facts.total_amount:
        rows.append(("Valor total", _pesos(facts.total_amount)))
    if facts.cufe:
        rows.append(("CUFE", facts.cufe))
    rows.append(("SHA-256 del PDF", facts.sha256))
    return rows


async def verification(upstream: Upstream, routes: RouteTable, code: str) -> Verification:
    """Asks the certificate service, anonymously, what the code stands for."""
    route, _ = routes.match("GET", "/v1/certificates:verify")
    assert route is not None
    request = certificate_service_pb2.VerifyCertificateRequest(code=code)
    try:
        response: certificate_service_pb2.VerifyCertificateResponse = await upstream.callable(route)(
            request, metadata=call_metadata({}, None), timeout=5.0
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return Verification("invalido", "El código debe tener 12 letras o números, como ABCD-EFGH-JKMN.")
        return Verification(
            "no_disponible", f"El servicio de verificación no respondió ({status_of(exc).code}). Intente más tarde."
        )
    if response.unknown:
        return Verification("desconocido", "No existe un certificado con ese código.")
    result = Verification(STATES.get(response.state, "desconocido"), facts=_facts(response.facts))
    result.revoke_reason = response.revoke_reason
    result.superseded_by = response.superseded_by_number
    if response.HasField("change_time"):
        result.change_time = _when(response.change_time)
    return result


def verify_page(code: str, result: Verification | None) -> str:
    return _ENV.get_template("verify.html").render(code=code, result=result)


def docs_page(document: dict[str, Any]) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for tag in operation.get("tags", ["Platform"]):
                groups.setdefault(tag, []).append({"method": method.upper(), "path": path, **operation})
    tags = {t["name"]: t.get("description", "") for t in document.get("tags", [])}
    return _ENV.get_template("docs.html").render(info=document["info"], groups=groups, tags=tags)


def extra_paths() -> dict[str, Any]:
    """The gateway's own routes in the OpenAPI document."""
    html = {"text/html": {"schema": {"type": "string"}}}
    plain = {"application/json": {"schema": {"type": "object"}}}
    return {
        "/verify": {
            "get": {
                "operationId": "Gateway_VerifyPage",
                "tags": ["Platform"],
                "summary": "Public certificate verification page (HTML, Spanish)",
                "security": [{}],
                "parameters": [{"name": "codigo", "in": "query", "schema": {"type": "string", "maxLength": 64}}],
                "responses": {"200": {"description": "The page.", "content": html}},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "Gateway_Healthz",
                "tags": ["Platform"],
                "summary": "Liveness",
                "security": [{}],
                "responses": {"200": {"description": "Alive.", "content": plain}},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "Gateway_Readyz",
                "tags": ["Platform"],
                "summary": "Readiness: every service SERVING",
                "security": [{}],
                "responses": {
                    "200": {"description": "Ready.", "content": plain},
                    "503": {"description": "Some service is not serving.", "content": plain},
                },
            }
        },
    }
