"""Registering invoices against real PostgreSQL, Redis and the product service."""

from __future__ import annotations

import datetime as dt
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2

from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.cli.cluster import Cluster
from services.invoice.domain import REPORTED_STEPS
from services.invoice.store import DUPLICATES_QUERY
from tests.conftest import Platform, make_settings
from tests.integration.database import plan, rows
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry
from tests.integration.product_helpers import reason, violations


@pytest.fixture(scope="session")
def registration(platform: Platform) -> Platform:
    load_sample_catalog(platform.settings)
    return platform


def test_register_then_get_and_history(registration: Platform) -> None:
    with registry(registration.settings) as reg:
        registered = reg.register(invoice())
        got = reg.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=registered.name))
        history = reg.ListInvoiceEvents(invoice_service_pb2.ListInvoiceEventsRequest(parent=registered.name))
    assert re.fullmatch(r"\d{4}-\d{8}", registered.registration_number)
    assert registered.state == invoice_pb2.INVOICE_STATE_REGISTERED
    assert registered.broker == "brokers/acme"
    assert got == registered
    assert [e.type for e in history.events] == ["InvoiceRegistered"]
    assert len(history.events[0].hash) == 64
    assert history.events[0].tenant == "brokers/acme"


def test_registration_numbers_are_sequential(registration: Platform) -> None:
    with registry(registration.settings) as reg:
        numbers = [int(reg.register(invoice()).registration_number.split("-")[1]) for _ in range(3)]
    assert numbers == [numbers[0], numbers[0] + 1, numbers[0] + 2]


def _wrong_dv(i: invoice_pb2.Invoice) -> None:
    i.seller.id.check_digit = str((int(i.seller.id.check_digit) + 1) % 10)


def _set(path: str, value: str) -> object:
    def change(i: invoice_pb2.Invoice) -> None:
        *parents, leaf = path.split(".")
        target: object = i
        for part in parents:
            target = target.lines[0] if part == "lines[0]" else getattr(target, part)  # type: ignore[attr-defined]
        setattr(target, leaf, value)

    return change


@pytest.mark.parametrize(
    ("change", "field", "why"),
    [
        (_wrong_dv, "invoice.seller.id.check_digit", "NIT_CHECK_DIGIT_MISMATCH"),
        (_set("cufe", "a" * 96), "invoice.cufe", "CUFE_MISMATCH"),
        (_set("totals.payable_amount", "1.00"), "invoice.totals.payable_amount", "PAYABLE_MISMATCH"),
        (_set("currency_code", "USD"), "invoice.currency_code", "CURRENCY_NOT_ACCEPTED"),
        (_set("lines[0].product_code", "NO-EXISTE"), "invoice.lines[0].product_code", "UNKNOWN_PRODUCT"),
        (_set("lines[0].product_code", "AZUCAR-REFINADA"), "invoice.lines[0].product_code", "PRODUCT_NOT_ELIGIBLE"),
    ],
)
def test_each_rejection_names_field_and_reason(registration: Platform, change: object, field: str, why: str) -> None:
    proto = invoice()
    change(proto)  # type: ignore[operator]
    with registry(registration.settings) as reg, pytest.raises(grpc.RpcError) as caught:
        reg.register(proto)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (field, why) in violations(caught.value)


def test_dates_in_the_future_or_too_old_are_refused(registration: Platform) -> None:
    with registry(registration.settings) as reg:
        for day, why in [
            (dt.date.today() + dt.timedelta(days=3), "ISSUE_DATE_IN_FUTURE"),
            (dt.date(2020, 1, 1), "OUTSIDE_REGISTRATION_WINDOW"),
        ]:
            with pytest.raises(grpc.RpcError) as caught:
                reg.register(invoice(issue_date=day))
            assert ("invoice.issue_date", why) in violations(caught.value)


def test_duplicates_by_cufe_and_by_issuer_number(registration: Platform) -> None:
    with registry(registration.settings) as reg:
        first = invoice()
        reg.register(first)
        with pytest.raises(grpc.RpcError) as same:
            reg.register(first)
        twin = invoice(number=first.number, price="1300000")
        with pytest.raises(grpc.RpcError) as number:
            reg.register(twin)
    assert same.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason(same.value) == "DUPLICATE_CUFE"
    assert reason(number.value) == "DUPLICATE_NUMBER"


def test_repeated_request_id_returns_the_original(registration: Platform) -> None:
    with registry(registration.settings) as reg:
        proto = invoice()
        first = reg.register(proto, request_id="req-" + proto.number)
        again = reg.register(proto, request_id="req-" + proto.number)
    assert again.name == first.name
    assert again.registration_number == first.registration_number


def test_a_request_id_repeated_within_a_batch_or_a_race_gets_the_original(registration: Platform) -> None:
    """A client's retry can land in the same batch (or the same group commit)
    as its original: it gets the original's answer and spoils no other item."""
    repeated, other, raced = invoice(), invoice(), invoice()
    rid = f"req-{uuid.uuid4()}"
    with registry(registration.settings) as reg:
        response = reg.BatchRegisterInvoices(
            invoice_service_pb2.BatchRegisterInvoicesRequest(
                requests=[
                    invoice_service_pb2.RegisterInvoiceRequest(invoice=repeated, request_id=rid),
                    invoice_service_pb2.RegisterInvoiceRequest(invoice=other),
                    invoice_service_pb2.RegisterInvoiceRequest(invoice=repeated, request_id=rid),
                ]
            )
        )
        later = reg.register(repeated, request_id=rid)
    first, second, third = response.results
    assert [r.HasField("error") for r in response.results] == [False] * 3
    assert third.invoice.name == first.invoice.name == later.name
    assert third.invoice.registration_number == first.invoice.registration_number
    assert second.invoice.name != first.invoice.name

    answers: list[str] = []
    race_id = f"req-{uuid.uuid4()}"

    def attempt() -> None:
        with registry(registration.settings) as client:
            answers.append(client.register(raced, request_id=race_id).name)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 6
    assert len(set(answers)) == 1


def test_concurrent_registration_of_the_same_invoice_exactly_one_wins(registration: Platform) -> None:
    proto = invoice()
    outcomes: list[str] = []

    def attempt() -> None:
        with registry(registration.settings) as reg:
            try:
                reg.register(proto)
                outcomes.append("OK")
            except grpc.RpcError as exc:
                outcomes.append(exc.code().name)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ALREADY_EXISTS"] * 3 + ["OK"]


def test_tenants_see_only_their_own_invoices(registration: Platform) -> None:
    with registry(registration.settings, tenant="acme") as acme, registry(registration.settings, tenant="beta") as beta:
        mine = acme.register(invoice())
        with pytest.raises(grpc.RpcError) as hidden:
            beta.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=mine.name))
        listed = beta.ListInvoices(invoice_service_pb2.ListInvoicesRequest(page_size=1000))
        with pytest.raises(grpc.RpcError) as other:
            beta.register(invoice(broker="brokers/acme"))
    with registry(registration.settings, role="operator") as operator:
        seen = operator.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=mine.name))
        with pytest.raises(grpc.RpcError) as needs_broker:
            operator.register(invoice())
        on_behalf = operator.register(invoice(broker="brokers/beta"))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    assert all(i.broker == "brokers/beta" for i in listed.invoices)
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert seen.name == mine.name
    assert ("invoice.broker", "BROKER_REQUIRED") in violations(needs_broker.value)
    assert on_behalf.broker == "brokers/beta"


def test_annul_records_the_reason_and_refuses_twice(registration: Platform) -> None:
    with registry(registration.settings) as reg:
        registered = reg.register(invoice())
        annulled = reg.AnnulInvoice(
            invoice_service_pb2.AnnulInvoiceRequest(
                name=registered.name, reason="factura duplicada", etag=registered.etag
            )
        )
        with pytest.raises(grpc.RpcError) as again:
            reg.AnnulInvoice(invoice_service_pb2.AnnulInvoiceRequest(name=registered.name, reason="otra vez"))
        history = reg.ListInvoiceEvents(invoice_service_pb2.ListInvoiceEventsRequest(parent=registered.name))
    assert annulled.state == invoice_pb2.INVOICE_STATE_ANNULLED
    assert annulled.annulment_reason == "factura duplicada"
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The commission and certificate services may have reported their steps in between: the invoice's own are these.
    own = [e for e in history.events if e.type not in REPORTED_STEPS]
    assert [e.type for e in own] == ["InvoiceRegistered", "InvoiceAnnulled"]
    assert own[1].position > own[0].position


def test_batch_reports_each_item(registration: Platform) -> None:
    good, bad = invoice(), invoice(product="NO-EXISTE")
    with registry(registration.settings) as reg:
        response = reg.BatchRegisterInvoices(
            invoice_service_pb2.BatchRegisterInvoicesRequest(
                requests=[invoice_service_pb2.RegisterInvoiceRequest(invoice=p) for p in (good, bad)]
            )
        )
    assert response.results[0].invoice.registration_number
    assert response.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "UNKNOWN_PRODUCT" in response.results[1].error.message or response.results[1].error.details


def test_a_duplicate_within_a_batch_names_the_invoice_it_repeats(registration: Platform) -> None:
    original = invoice()
    renumbered = invoice(number=original.number, price="1300000")  # same issuer and number, other CUFE
    with registry(registration.settings) as reg:
        response = reg.BatchRegisterInvoices(
            invoice_service_pb2.BatchRegisterInvoicesRequest(
                requests=[
                    invoice_service_pb2.RegisterInvoiceRequest(invoice=p) for p in (original, original, renumbered)
                ]
            )
        )
    first, again, twin = response.results
    infos = []
    for result in (again, twin):
        assert result.error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
        assert first.invoice.registration_number in result.error.message
        info = error_details_pb2.ErrorInfo()
        assert any(d.Unpack(info) for d in result.error.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR))
        infos.append((info.reason, info.metadata["invoice"]))
    assert infos == [("DUPLICATE_CUFE", first.invoice.name), ("DUPLICATE_NUMBER", first.invoice.name)]


def test_list_filters_and_pages(registration: Platform) -> None:
    seller = "901234567"
    with registry(registration.settings, tenant="gamma") as reg:
        names = [reg.register(invoice(seller=seller)).name for _ in range(3)]
        first = reg.ListInvoices(invoice_service_pb2.ListInvoicesRequest(seller_nit=seller, page_size=2))
        second = reg.ListInvoices(
            invoice_service_pb2.ListInvoicesRequest(seller_nit=seller, page_size=2, page_token=first.next_page_token)
        )
    listed = [i.name for i in first.invoices] + [i.name for i in second.invoices]
    assert listed == names[::-1]


def test_validate_only_registers_nothing(registration: Platform) -> None:
    proto = invoice()
    with registry(registration.settings) as reg:
        checked = reg.RegisterInvoice(invoice_service_pb2.RegisterInvoiceRequest(invoice=proto, validate_only=True))
        real = reg.register(proto)
    assert not checked.registration_number
    assert real.registration_number


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[Cluster]:
    settings = make_settings(tmp_path, "embedded")
    with Cluster(settings, services=["product", "invoice"]) as cluster:
        load_sample_catalog(cluster.settings)
        yield cluster


def test_chain_verifies_and_an_altered_event_is_found(own_registry: Cluster) -> None:
    settings = own_registry.settings
    with registry(settings, role="operator") as reg:
        for _ in range(5):
            reg.register(invoice(broker="brokers/acme"))
        intact = reg.VerifyEventChain(invoice_service_pb2.VerifyEventChainRequest())
        rows(
            own_registry,
            "invoice",
            "UPDATE events SET data = jsonb_set(data::jsonb, '{broker}', '\"brokers/mallory\"')::json "
            "WHERE position = 3",
        )
        broken = reg.VerifyEventChain(invoice_service_pb2.VerifyEventChainRequest())
    assert intact.intact
    assert intact.events_checked == 5
    assert not broken.intact
    assert broken.first_broken_position == 3


def test_the_audit_never_cries_wolf_while_registrations_commit(own_registry: Cluster) -> None:
    """`VerifyEventChain` 50 times while batches of registrations commit: it
    reads one snapshot, so an append in flight is never taken for tampering."""
    settings = own_registry.settings
    done = threading.Event()

    def register_batches() -> None:
        with registry(settings, role="operator") as reg:
            while not done.is_set():
                batch = [
                    invoice_service_pb2.RegisterInvoiceRequest(invoice=invoice(broker="brokers/acme"))
                    for _ in range(50)
                ]
                reg.BatchRegisterInvoices(invoice_service_pb2.BatchRegisterInvoicesRequest(requests=batch))

    writer = threading.Thread(target=register_batches)
    writer.start()
    reports = []
    try:
        with registry(settings, role="auditor") as auditor:
            for _ in range(50):
                reports.append(auditor.VerifyEventChain(invoice_service_pb2.VerifyEventChainRequest()))
    finally:
        done.set()
        writer.join()
    assert [r.detail for r in reports if not r.intact] == []
    assert reports[-1].events_checked > reports[0].events_checked, "registrations committed during the audits"


def test_the_duplicate_check_looks_invoices_up_by_index(registration: Platform) -> None:
    """It runs under the chain head's lock for every batch: a plan that reads
    the whole table slows every registration as the registry grows."""
    explained = plan(
        registration.cluster, "invoice", DUPLICATES_QUERY, ["a" * 96, "b" * 96], ["900508908", "1"], ["SETP1", "SETP2"]
    )
    assert "invoices_cufe_key" in explained
    assert "invoices_seller_nit_number_key" in explained
    assert "Seq Scan on invoices" not in explained


def test_catalog_down_means_unavailable_and_nothing_registered(own_registry: Cluster) -> None:
    own_registry.kill("product")
    with registry(own_registry.settings) as reg:
        with pytest.raises(grpc.RpcError) as caught:
            reg.register(invoice())
        listed = reg.ListInvoices(invoice_service_pb2.ListInvoicesRequest())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert list(listed.invoices) == []


def _line_total(i: invoice_pb2.Invoice) -> None:
    i.lines[0].line_extension_amount = "1.00"


def _tax_amount(i: invoice_pb2.Invoice) -> None:
    i.taxes[0].tax_amount = "1.00"


def _subtotal(i: invoice_pb2.Invoice) -> None:
    i.totals.line_extension_amount = "2.00"


def _tax_inclusive(i: invoice_pb2.Invoice) -> None:
    i.totals.tax_inclusive_amount = "3.00"


@pytest.mark.parametrize(
    ("change", "field", "why"),
    [
        (_line_total, "invoice.lines[0].line_extension_amount", "LINE_TOTAL_MISMATCH"),
        (_tax_amount, "invoice.taxes[0].tax_amount", "TAX_AMOUNT_MISMATCH"),
        (_subtotal, "invoice.totals.line_extension_amount", "SUBTOTAL_MISMATCH"),
        (_tax_inclusive, "invoice.totals.tax_inclusive_amount", "TAX_INCLUSIVE_MISMATCH"),
    ],
)
def test_arithmetic_rejections(registration: Platform, change: object, field: str, why: str) -> None:
    proto = invoice()
    change(proto)  # type: ignore[operator]
    with registry(registration.settings) as reg, pytest.raises(grpc.RpcError) as caught:
        reg.register(proto)
    assert (field, why) in violations(caught.value)


def test_withdrawn_products_are_refused(registration: Platform) -> None:
    from bmc.product.v1 import product_pb2, product_service_pb2
    from tests.integration.product_helpers import catalog

    code = f"RETIRADO-{uuid.uuid4().hex[:6].upper()}"
    with catalog(registration.settings) as cat:
        cat.create(code, "Sorgo retirado", product_pb2.CATEGORY_AGRICULTURAL)
        cat.DeactivateProduct(product_service_pb2.DeactivateProductRequest(name=f"products/{code}", reason="fin"))
    with registry(registration.settings) as reg, pytest.raises(grpc.RpcError) as caught:
        reg.register(invoice(product=code))
    assert ("invoice.lines[0].product_code", "PRODUCT_INACTIVE") in violations(caught.value)


def test_a_malformed_cufe_in_an_import_is_reported(registration: Platform) -> None:
    from services.invoice.synth import invoices, to_csv

    proto = next(iter(invoices(1, dt.date.today(), seed=61, prefix="MALF")))
    proto.cufe = "604128a1" * 5  # 40 hex characters: a SHA-1, not a CUFE
    with registry(registration.settings) as reg:
        operation = reg.ImportInvoices(
            invoice_service_pb2.ImportInvoicesRequest(content=to_csv([proto]), filename="x.csv")
        )
        while not operation.done:
            operation = reg.GetOperation(operations_pb2.GetOperationRequest(name=operation.name))
    result = invoice_pb2.ImportInvoicesResponse()
    operation.response.Unpack(result)
    assert [(i.field, i.reason) for i in result.documents[0].issues] == [("cufe", "CUFE_MALFORMED")]
