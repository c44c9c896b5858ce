"""Regressions of the security review (issue #15), over real gRPC against
the whole platform: idempotency keys scoped to (method, tenant, caller),
no other tenant's identifiers in errors, output-only fields kept out of the
hash chain, forged page tokens refused on every List RPC, and imports that
read only from their configured roots."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmc.certificate.v1 import certificate_service_pb2, certificate_service_pb2_grpc
from bmc.commission.v1 import commission_service_pb2, commission_service_pb2_grpc
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2, invoice_service_pb2_grpc
from bmc.ocr.v1 import ocr_service_pb2, ocr_service_pb2_grpc
from bmc.product.v1 import product_pb2, product_service_pb2, product_service_pb2_grpc
from services.commission.domain import period_of
from services.dian import calendar
from services.invoice.synth import invoices, to_csv
from services.kit import paging
from tests.conftest import Platform
from tests.integration.clients import Client, wait_until
from tests.integration.invoice_helpers import Registry, invoice, load_sample_catalog
from tests.integration.product_helpers import Catalog, reason, violations

PERIOD = period_of(calendar.today())
# Service logic, the same on either backend: the embedded one is enough.
pytestmark = pytest.mark.parametrize("platform", ["embedded"], indirect=True)


@pytest.fixture(scope="module")
def hardened(platform: Platform) -> Platform:
    load_sample_catalog(platform.settings)
    return platform


def _tenant() -> str:
    return f"h{uuid.uuid4().hex[:10]}"


def _csv(count: int, prefix: str) -> bytes:
    seed = sum(map(ord, prefix))
    return to_csv(list(invoices(count, calendar.today() - dt.timedelta(days=3), seed=seed, prefix=prefix)))


def _refused_as_reused(caught: pytest.ExceptionInfo[grpc.RpcError]) -> None:
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason(caught.value) == "REQUEST_ID_REUSED"
    assert "request_id" in (caught.value.details() or "")


# ---------------------------------------------------------------- 1. idempotency keys


def test_an_import_key_of_another_broker_is_simply_another_key(hardened: Platform) -> None:
    key, a, b = uuid.uuid4().hex, _tenant(), _tenant()
    with Registry(hardened.settings, "broker", a) as alice, Registry(hardened.settings, "broker", b) as bob:
        theirs = alice.ImportInvoices(
            invoice_service_pb2.ImportInvoicesRequest(
                content=_csv(3, "ALI"), filename="alice-secret.csv", request_id=key
            )
        )
        mine = bob.ImportInvoices(
            invoice_service_pb2.ImportInvoicesRequest(content=_csv(2, "BOB"), filename="bob.csv", request_id=key)
        )
        done = bob.wait(mine.name)
        with pytest.raises(grpc.RpcError) as caught:
            bob.GetOperation(operations_pb2.GetOperationRequest(name=theirs.name))
        listed = bob.ListInvoices(invoice_service_pb2.ListInvoicesRequest(page_size=100))
        alice.wait(theirs.name)
    assert mine.name != theirs.name
    meta = invoice_pb2.ImportInvoicesMetadata()
    mine.metadata.Unpack(meta)
    assert meta.filename == "bob.csv"
    result = invoice_pb2.ImportInvoicesResponse()
    assert done.response.Unpack(result)
    assert (result.registered, result.rejected) == (2, 0), "bob's own import is performed"
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert {i.number[:3] for i in listed.invoices} == {"BOB"}


def test_an_import_key_answers_the_same_request_and_refuses_another(hardened: Platform) -> None:
    key, content = uuid.uuid4().hex, _csv(2, "RPT")
    with Registry(hardened.settings, "broker", _tenant()) as reg:
        first = reg.ImportInvoices(invoice_service_pb2.ImportInvoicesRequest(content=content, request_id=key))
        again = reg.ImportInvoices(invoice_service_pb2.ImportInvoicesRequest(content=content, request_id=key))
        with pytest.raises(grpc.RpcError) as caught:
            reg.ImportInvoices(invoice_service_pb2.ImportInvoicesRequest(content=_csv(2, "OTH"), request_id=key))
        reg.wait(first.name)
    assert again.name == first.name
    _refused_as_reused(caught)


def test_a_settlement_key_is_scoped_to_its_caller_and_its_parameters(hardened: Platform) -> None:
    key = uuid.uuid4().hex
    stub = commission_service_pb2_grpc.CommissionServiceStub
    with (
        Client(hardened.settings, "commission", stub, "operator", subject="ops-ana") as ana,
        Client(hardened.settings, "commission", stub, "operator", subject="ops-luis") as luis,
    ):
        first = ana.RunSettlement(commission_service_pb2.RunSettlementRequest(period=PERIOD, request_id=key))
        with pytest.raises(grpc.RpcError) as caught:
            ana.RunSettlement(
                commission_service_pb2.RunSettlementRequest(period=PERIOD, broker="brokers/other", request_id=key)
            )
        others = luis.RunSettlement(
            commission_service_pb2.RunSettlementRequest(period=PERIOD, broker="brokers/other", request_id=key)
        )
        done = luis.wait(others.name)
        ana.wait(first.name)
    _refused_as_reused(caught)
    assert others.name != first.name
    assert not done.HasField("error"), done.error


def test_a_catalog_import_key_of_another_operator_imports_their_own_file(hardened: Platform, tmp_path: Path) -> None:
    key = uuid.uuid4().hex
    header = "code,display_name,category,processing_level\n"
    mine, theirs = tmp_path / "mine.csv", tmp_path / "theirs.csv"
    mine.write_text(header + f"K{key[:8]}-A,Maiz,AGRICULTURAL,NONE\n")
    theirs.write_text(header + f"K{key[:8]}-B,Arroz,AGRICULTURAL,NONE\n")
    with (
        Client(
            hardened.settings, "product", product_service_pb2_grpc.ProductServiceStub, "operator", subject="ops-a"
        ) as a,
        Client(
            hardened.settings, "product", product_service_pb2_grpc.ProductServiceStub, "operator", subject="ops-b"
        ) as b,
    ):
        first = a.ImportProducts(product_service_pb2.ImportProductsRequest(uris=[str(mine)], request_id=key))
        second = b.ImportProducts(product_service_pb2.ImportProductsRequest(uris=[str(theirs)], request_id=key))
        b.wait(second.name)
        a.wait(first.name)
        found = b.BatchGetProducts(product_service_pb2.BatchGetProductsRequest(names=[f"products/K{key[:8]}-B"]))
    assert second.name != first.name
    assert [p.code for p in found.products] == [f"K{key[:8]}-B"]


def test_create_product_honours_its_request_id(hardened: Platform) -> None:
    code, key = f"IDEM-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex

    def request(name: str) -> product_service_pb2.CreateProductRequest:
        product = product_pb2.Product(
            display_name=name,
            category=product_pb2.CATEGORY_AGRICULTURAL,
            processing_level=product_pb2.PROCESSING_LEVEL_NONE,
        )
        return product_service_pb2.CreateProductRequest(product=product, product_id=code, request_id=key)

    with Catalog(hardened.settings) as cat:
        first = cat.CreateProduct(request("Panela"))
        retry = cat.CreateProduct(request("Panela"))
        with pytest.raises(grpc.RpcError) as caught:
            cat.CreateProduct(request("Panela de otra"))
    assert retry == first, "a retry gets the first answer, not ALREADY_EXISTS"
    _refused_as_reused(caught)


def test_reissuing_twice_with_one_key_makes_one_certificate(hardened: Platform) -> None:
    stub = certificate_service_pb2_grpc.CertificateServiceStub
    with (
        Registry(hardened.settings, "broker", _tenant()) as reg,
        Client(hardened.settings, "certificate", stub, "operator") as cert,
    ):
        registered = reg.register(invoice())

        def issued() -> list[Any]:
            return list(
                cert.ListCertificates(
                    certificate_service_pb2.ListCertificatesRequest(invoice=registered.name)
                ).certificates
            )

        wait_until(issued, 60)
        key = uuid.uuid4().hex
        reissue = certificate_service_pb2.IssueCertificateRequest(invoice=registered.name, reissue=True, request_id=key)
        first = cert.IssueCertificate(reissue)
        second = cert.IssueCertificate(reissue)
        total = len(issued())
    assert second.name == first.name
    assert total == 2, "the original and one re-issue"


def test_annulment_honours_its_request_id(hardened: Platform) -> None:
    with Registry(hardened.settings, "broker", _tenant()) as reg:
        registered = reg.register(invoice())
        annul = invoice_service_pb2.AnnulInvoiceRequest(
            name=registered.name, reason="registered in error", request_id=uuid.uuid4().hex
        )
        first = reg.AnnulInvoice(annul)
        retry = reg.AnnulInvoice(annul)
    assert first.state == invoice_pb2.INVOICE_STATE_ANNULLED
    assert retry == first


def test_a_registration_key_reused_for_another_invoice_is_refused(hardened: Platform) -> None:
    key, document = uuid.uuid4().hex, invoice()
    with Registry(hardened.settings, "broker", _tenant()) as reg:
        first = reg.register(document, request_id=key)
        again = reg.register(document, request_id=key)
        with pytest.raises(grpc.RpcError) as caught:
            reg.register(invoice(), request_id=key)
        batch = reg.BatchRegisterInvoices(
            invoice_service_pb2.BatchRegisterInvoicesRequest(
                requests=[invoice_service_pb2.RegisterInvoiceRequest(invoice=invoice(), request_id=key)]
            )
        )
    assert again.name == first.name
    _refused_as_reused(caught)
    assert batch.results[0].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert "request_id" in batch.results[0].error.message


# ---------------------------------------------------------------- 2. other tenants' identifiers


def test_a_duplicate_of_another_brokers_invoice_names_nothing_of_theirs(hardened: Platform) -> None:
    document = invoice()
    with (
        Registry(hardened.settings, "broker", _tenant()) as alice,
        Registry(hardened.settings, "broker", _tenant()) as bob,
    ):
        theirs = alice.register(document)
        with pytest.raises(grpc.RpcError) as single:
            bob.register(document)
        batch = bob.BatchRegisterInvoices(
            invoice_service_pb2.BatchRegisterInvoicesRequest(
                requests=[invoice_service_pb2.RegisterInvoiceRequest(invoice=document)]
            )
        )
        with pytest.raises(grpc.RpcError) as own:
            alice.register(document)
    assert single.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason(single.value) == "DUPLICATE_CUFE"
    leaked = [theirs.name, theirs.name.removeprefix("invoices/"), theirs.registration_number]
    trailers = b"".join(v for _, v in single.value.trailing_metadata() or () if isinstance(v, bytes))  # type: ignore[attr-defined]
    for secret in leaked:
        assert secret not in (single.value.details() or "")
        assert secret.encode() not in trailers
        assert secret not in batch.results[0].error.SerializeToString().decode("latin-1")
    assert theirs.registration_number in (own.value.details() or ""), "the same broker is told which invoice"


# ---------------------------------------------------------------- 3. output-only fields


def test_output_only_fields_never_reach_the_hash_chain(hardened: Platform) -> None:
    forged = invoice()
    forged.state = invoice_pb2.INVOICE_STATE_CERTIFIED
    forged.registration_number = "FORGED-0001"
    forged.register_time.FromDatetime(dt.datetime(2001, 1, 1, tzinfo=dt.UTC))
    forged.certificate = "certificates/forged"
    forged.version = 99
    forged.etag = 'W/"99"'
    forged.source_format = invoice_pb2.SOURCE_FORMAT_UBL_INVOICE
    forged.annulment_reason = "forged"
    forged.name = "invoices/forged"
    with Registry(hardened.settings, "broker", _tenant()) as reg:
        registered = reg.register(forged)
        events = reg.ListInvoiceEvents(invoice_service_pb2.ListInvoiceEventsRequest(parent=registered.name))
    stored = json_format.MessageToDict(events.events[0].data)["document"]
    assert registered.registration_number != "FORGED-0001"
    assert registered.state == invoice_pb2.INVOICE_STATE_REGISTERED
    assert registered.source_format == invoice_pb2.SOURCE_FORMAT_API
    assert registered.name != "invoices/forged"
    assert stored["number"] == forged.number, "the document as stored, in proto field names"
    for field in (
        "state",
        "registration_number",
        "register_time",
        "certificate",
        "version",
        "etag",
        "annulment_reason",
    ):
        assert field not in stored, field
    assert stored["source_format"] == "SOURCE_FORMAT_API"
    assert "name" not in stored


# ---------------------------------------------------------------- 5. page tokens


def _token(key: bytes, sort_key: Any, request: Message) -> str:
    body = json.dumps({"k": sort_key, "f": paging.request_fingerprint(request)}, separators=(",", ":")).encode()
    mac = hmac.new(key, body, hashlib.sha256).hexdigest()[:32].encode()
    return base64.urlsafe_b64encode(body + b"." + mac).decode().rstrip("=")


def _list_rpcs(platform: Platform, parent: str) -> list[tuple[str, Callable[[], Client], Message, str]]:
    """(label, client, request, method) of every List RPC."""
    s = platform.settings

    def client(service: str, stub: Any, role: str = "operator") -> Callable[[], Client]:
        return lambda: Client(s, service, stub, role)

    invoices_ = client("invoice", invoice_service_pb2_grpc.InvoiceServiceStub)
    products = client("product", product_service_pb2_grpc.ProductServiceStub)
    commissions = client("commission", commission_service_pb2_grpc.CommissionServiceStub)
    return [
        ("invoices", invoices_, invoice_service_pb2.ListInvoicesRequest(), "ListInvoices"),
        ("events", invoices_, invoice_service_pb2.ListInvoiceEventsRequest(parent=parent), "ListInvoiceEvents"),
        ("invoice ops", invoices_, operations_pb2.ListOperationsRequest(), "ListOperations"),
        ("products", products, product_service_pb2.ListProductsRequest(), "ListProducts"),
        ("by name", products, product_service_pb2.ListProductsRequest(name_query="maiz"), "ListProducts"),
        (
            "revisions",
            products,
            product_service_pb2.ListProductRevisionsRequest(name="products/MAIZ-AMARILLO"),
            "ListProductRevisions",
        ),
        ("product ops", products, operations_pb2.ListOperationsRequest(), "ListOperations"),
        ("commissions", commissions, commission_service_pb2.ListCommissionsRequest(), "ListCommissions"),
        ("tariffs", commissions, commission_service_pb2.ListTariffSchedulesRequest(), "ListTariffSchedules"),
        ("uvt", commissions, commission_service_pb2.ListUvtValuesRequest(), "ListUvtValues"),
        ("settlements", commissions, commission_service_pb2.ListSettlementsRequest(), "ListSettlements"),
        ("commission ops", commissions, operations_pb2.ListOperationsRequest(), "ListOperations"),
        (
            "certificates",
            client("certificate", certificate_service_pb2_grpc.CertificateServiceStub),
            certificate_service_pb2.ListCertificatesRequest(),
            "ListCertificates",
        ),
        (
            "extractions",
            client("ocr", ocr_service_pb2_grpc.OcrServiceStub),
            ocr_service_pb2.ListExtractionsRequest(),
            "ListExtractions",
        ),
    ]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
SORT_KEYS = st.one_of(
    st.lists(JSON, max_size=3),
    st.tuples(st.text(max_size=30), st.text(max_size=30)).map(list),
    st.tuples(st.integers(min_value=-(2**70), max_value=2**70)).map(list),
    st.tuples(st.floats(), st.text(max_size=10)).map(list),
    JSON,
)


def _answer(client: Client, method: str, request: Message, token: str) -> str:
    """ "OK", or the code and reason of the refusal, of `request` with `token`."""
    forged = type(request)()
    forged.CopyFrom(request)
    forged.page_token = token  # type: ignore[attr-defined]
    try:
        getattr(client, method)(forged)
    except grpc.RpcError as exc:
        return f"{exc.code().name} {reason(exc)}"
    return "OK"


REFUSED = "INVALID_ARGUMENT INVALID_PAGE_TOKEN"


def _probe(client: Client, method: str, request: Message, key: bytes) -> set[str]:
    """The answers of `method` to 25 tokens with arbitrary sort keys, each
    checked to be a page or a refusal."""
    seen: set[str] = set()

    @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(sort_key=SORT_KEYS)
    def probe(sort_key: Any) -> None:
        answer = _answer(client, method, request, _token(key, sort_key, request))
        assert answer in ("OK", REFUSED), (sort_key, answer)
        seen.add(answer)

    probe()
    return seen


def test_forged_page_tokens_are_refused_by_every_list_rpc(hardened: Platform) -> None:
    """Tokens signed with the deployment's real key but carrying arbitrary
    sort keys: every List RPC answers a page or INVALID_PAGE_TOKEN, never
    INTERNAL. A token minted with the old built-in constant is refused."""
    key = hardened.settings.page_token_key_file.read_bytes()
    with Registry(hardened.settings, "broker", _tenant()) as reg:
        parent = reg.register(invoice()).name
    for label, make, request, method in _list_rpcs(hardened, parent):
        with make() as client:
            seen = _probe(client, method, request, key)
            old_key = _answer(client, method, request, _token(b"bmc-page-token-v1", ["x"], request))
        assert REFUSED in seen, label
        assert old_key == REFUSED, label


# ---------------------------------------------------------------- 6. files outside the import roots


def test_imports_read_only_their_roots_and_echo_no_file(hardened: Platform, tmp_path: Path) -> None:
    secret = "root:$6$not-a-catalog$SECRETHASH:19000:0:99999:7:::"
    inside = tmp_path / "server-file.csv"
    inside.write_text(secret + "\n" + "daemon:*:19000:0:99999:7:::\n")
    link = tmp_path / "shadow.csv"
    link.symlink_to("/etc/passwd")
    with Catalog(hardened.settings) as cat:
        with pytest.raises(grpc.RpcError) as outside:
            cat.ImportProducts(product_service_pb2.ImportProductsRequest(uris=["/etc/shadow", "/etc/*", "../../x"]))
        with pytest.raises(grpc.RpcError) as linked:
            cat.ImportProducts(product_service_pb2.ImportProductsRequest(uris=[str(link)]))
        done = cat.import_and_wait([str(inside)])
        listed = cat.ListOperations(operations_pb2.ListOperationsRequest(page_size=100))
    assert outside.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(outside.value) == [
        ("uris[0]", "OUTSIDE_IMPORT_ROOTS"),
        ("uris[1]", "OUTSIDE_IMPORT_ROOTS"),
        ("uris[2]", "OUTSIDE_IMPORT_ROOTS"),
    ]
    assert violations(linked.value) == [("uris[0]", "FILE_NOT_FOUND")], "a link out of the root is not followed"
    assert done.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    everything = done.SerializeToString() + listed.SerializeToString()
    for part in ("root:", "SECRETHASH", "daemon", "19000"):
        assert part.encode() not in everything, part
