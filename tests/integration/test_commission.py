"""The commission service over gRPC with real PostgreSQL, Redis and the
invoice service: commissions follow registrations and annulments through
the stream, quotes, tariff and UVT administration, settlements (run, re-run,
close, adjustments, exports) and tenant isolation."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import grpc
import pytest
import redis

from bmc.commission.v1 import commission_pb2, commission_service_pb2, commission_service_pb2_grpc
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.commission.domain import next_period, period_of
from services.dian import calendar
from services.kit.envelopes import Event
from services.kit.events import stream_name
from services.kit.protojson import to_dict
from services.kit.settings import Settings
from tests.conftest import Platform
from tests.integration.clients import Client, wait_until
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry
from tests.integration.product_helpers import reason, violations

D = Decimal
TODAY = calendar.today()
PERIOD = period_of(TODAY)
PREVIOUS = period_of(TODAY.replace(day=1) - dt.timedelta(days=1))


class Commissions(Client):
    def __init__(self, settings: Settings, role: str = "operator", tenant: str = "") -> None:
        super().__init__(settings, "commission", commission_service_pb2_grpc.CommissionServiceStub, role, tenant)

    def settle(self, period: str, broker: str = "") -> commission_pb2.Settlement:
        operation = self.RunSettlement(commission_service_pb2.RunSettlementRequest(period=period, broker=broker))
        done = self.wait(operation.name)
        assert not done.HasField("error"), done.error
        settlement = commission_pb2.Settlement()
        assert done.response.Unpack(settlement)
        return settlement

    def commission_of(self, invoice_name: str, timeout: float = 20) -> commission_pb2.Commission:
        """The commission of an invoice once the stream delivered it."""
        name = invoice_name.replace("invoices/", "commissions/")
        deadline = time.monotonic() + timeout
        while True:
            try:
                found: commission_pb2.Commission = self.GetCommission(
                    commission_service_pb2.GetCommissionRequest(name=name)
                )
                return found
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            assert time.monotonic() < deadline, f"no commission for {invoice_name} after {timeout}s"
            time.sleep(0.1)


def _wait(condition: Callable[[], object], timeout: float = 20.0) -> None:
    wait_until(condition, timeout)


def _redis(platform: Platform) -> redis.Redis:
    assert platform.cluster.infrastructure is not None
    return redis.Redis.from_url(platform.cluster.infrastructure.redis_url)


def _stream(platform: Platform, service: str) -> list[Event]:
    entries = _redis(platform).xrange(stream_name(platform.settings.redis_prefix, service))
    return [Event.from_fields(fields) for _, fields in entries]


def _inject(platform: Platform, event: Event) -> None:
    """Puts an event on the invoice stream as the invoice relay would."""
    _redis(platform).xadd(stream_name(platform.settings.redis_prefix, "invoice"), event.fields())  # type: ignore[arg-type]


def _registered(broker: str, at: dt.datetime, amount: str = "10000000.00", invoice_id: str = "") -> Event:
    """An `InvoiceRegistered` event as the invoice service writes it, at a chosen time."""
    document = invoice(price=amount, quantity="1")
    return Event(
        event_id=str(uuid.uuid4()),
        type="InvoiceRegistered",
        stream_id=invoice_id or uuid.uuid4().hex,
        version=1,
        position=0,
        tenant=broker,
        trace_id="",
        data={
            "document": to_dict(document),
            "broker": broker,
            "registration_number": "2026-99999999",
            "products": {
                "MAIZ-AMARILLO": {
                    "category": "CATEGORY_AGRICULTURAL",
                    "withholding_class": "WITHHOLDING_CLASS_UNPROCESSED",
                }
            },
        },
        time=at.isoformat(),
    )


def _annulled(invoice_id: str, broker: str, at: dt.datetime) -> Event:
    return Event(str(uuid.uuid4()), "InvoiceAnnulled", invoice_id, 2, 0, broker, "", {"reason": "test"}, at.isoformat())


def _tenant() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def priced(platform: Platform) -> Platform:
    load_sample_catalog(platform.settings)
    return platform


def test_a_registered_invoice_is_charged_its_commission_and_moves_on(priced: Platform) -> None:
    tenant = _tenant()
    with registry(priced.settings, tenant=tenant) as reg, Commissions(priced.settings) as com:
        registered = reg.register(invoice(quantity="10", price="1250000"))
        charged = com.commission_of(registered.name)
        # Moved on: COMMISSIONED, or already CERTIFIED (the certificate may come at once, even first).
        _wait(
            lambda: (
                reg.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=registered.name)).state
                in (invoice_pb2.INVOICE_STATE_COMMISSIONED, invoice_pb2.INVOICE_STATE_CERTIFIED)
            )
        )
    # Example tariff 2026, default rule: 12,500,000 × 0.0009 = 11,250, below the minimum of
    # 0.5 UVT × 52,374 = 26,187 → 26,187; IVA 19% = 4,975.53 → 4,976; total 31,163.
    b = charged.breakdown
    assert (charged.broker, charged.buyer_id, charged.state) == (
        f"brokers/{tenant}",
        "860034313",
        commission_pb2.COMMISSION_STATE_CHARGED,
    )
    assert (D(b.base), D(b.raw_amount), b.bound_applied) == (D(12_500_000), D(11_250), "minimum")
    assert (b.commission, b.vat, b.total, b.tariff_schedule) == (
        "26187",
        "4976",
        "31163",
        "tariffSchedules/example-2026",
    )
    assert b.explanation, "a person can follow the arithmetic"
    # Withholding avoided: 70 UVT × 52,374 → 3,666,000 threshold; 12,500,000 × 1.5% = 187,500.
    assert (charged.withholding.amount, charged.withholding.threshold, charged.withholding.estimate) == (
        "187500",
        "3666000",
        True,
    )
    published = [e for e in _stream(priced, "commission") if e.stream_id == registered.name.removeprefix("invoices/")]
    assert [e.type for e in published] == ["CommissionCalculated"]
    assert published[0].data["total"] == "31163"


def test_an_annulled_invoice_has_its_commission_reversed(priced: Platform) -> None:
    tenant = _tenant()
    with registry(priced.settings, tenant=tenant) as reg, Commissions(priced.settings) as com:
        registered = reg.register(invoice())
        com.commission_of(registered.name)
        reg.AnnulInvoice(invoice_service_pb2.AnnulInvoiceRequest(name=registered.name, reason="sold twice"))
        _wait(lambda: com.commission_of(registered.name).state == commission_pb2.COMMISSION_STATE_REVERSED)
        settlement = com.settle(PERIOD, f"brokers/{tenant}")
    invoice_id = registered.name.removeprefix("invoices/")

    def published() -> list[str]:
        return [e.type for e in _stream(priced, "commission") if e.stream_id == invoice_id]

    _wait(lambda: len(published()) >= 2)  # the relay publishes after the commit
    assert published() == ["CommissionCalculated", "CommissionReversed"]
    # Charged and reversed in the same open period: the reversal nets it out.
    assert (settlement.reversals.invoice_count, settlement.reversals.total) == (-1, "-31163.00")
    assert (settlement.total.invoice_count, D(settlement.total.total)) == (0, 0)


def test_an_event_delivered_twice_is_charged_once(priced: Platform) -> None:
    broker = f"brokers/{_tenant()}"
    event = _registered(broker, dt.datetime.now(dt.UTC))
    _inject(priced, event)
    _inject(priced, event)  # redelivery: same event id
    with Commissions(priced.settings) as com:
        com.commission_of(f"invoices/{event.stream_id}")
        time.sleep(1.0)
        page = com.ListCommissions(commission_service_pb2.ListCommissionsRequest(broker=broker))
        settlement = com.settle(PERIOD, broker)
    assert len(page.commissions) == 1
    assert settlement.total.invoice_count == 1

    def published() -> list[str]:
        return [e.type for e in _stream(priced, "commission") if e.stream_id == event.stream_id]

    _wait(lambda: bool(published()))
    assert published() == ["CommissionCalculated"]


def test_quotes_show_the_arithmetic_and_refuse_what_they_cannot_price(priced: Platform) -> None:
    with Commissions(priced.settings, "broker", "acme") as com:
        quote = com.QuoteCommission(
            commission_service_pb2.QuoteCommissionRequest(
                lines=[
                    commission_pb2.QuoteLine(product_code="MAIZ-AMARILLO", amount="150000000"),
                    commission_pb2.QuoteLine(product_category="CATEGORY_AGRICULTURAL", amount="50000000"),
                ],
                date={"year": 2026, "month": 3, "day": 2},
            )
        )
        # 200,000,000 marginal: 100,000,000 × 0.0009 = 90,000 + 100,000,000 × 0.0005 = 50,000 → 140,000;
        # IVA 26,600; total 166,600. Withholding: 150,000,000 × 1.5% = 2,250,000 (the category line has no class).
        assert (quote.breakdown.commission, quote.breakdown.vat, quote.breakdown.total) == ("140000", "26600", "166600")
        assert quote.breakdown.bracket == "from 100000000"
        assert quote.withholding.amount == "2250000"
        with pytest.raises(grpc.RpcError) as unknown:
            com.QuoteCommission(
                commission_service_pb2.QuoteCommissionRequest(
                    lines=[commission_pb2.QuoteLine(product_code="NO-SUCH-THING", amount="1")]
                )
            )
        with pytest.raises(grpc.RpcError) as no_tariff:
            com.QuoteCommission(
                commission_service_pb2.QuoteCommissionRequest(
                    lines=[commission_pb2.QuoteLine(amount="1")], date={"year": 2019, "month": 1, "day": 1}
                )
            )
        with pytest.raises(grpc.RpcError) as malformed:
            com.QuoteCommission(
                commission_service_pb2.QuoteCommissionRequest(lines=[commission_pb2.QuoteLine(amount="1,5")])
            )
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(unknown.value) == [("lines[0].product_code", "PRODUCT_NOT_FOUND")]
    assert (no_tariff.value.code(), reason(no_tariff.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TARIFF_NOT_APPLICABLE",
    )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in violations(malformed.value)] == ["lines[0].amount"]


def _schedule(effective: dt.date, **rule: Any) -> commission_pb2.TariffSchedule:
    return commission_pb2.TariffSchedule(
        display_name="BMC tariff (test)",
        effective_date={"year": effective.year, "month": effective.month, "day": effective.day},
        rules=[commission_pb2.TariffRule(**(rule or {"rate": "0.0011"}))],
        source="test",
    )


def test_tariff_versions_are_added_never_edited(priced: Platform) -> None:
    future = TODAY + dt.timedelta(days=400 + uuid.uuid4().int % 3000)
    version = f"t-{uuid.uuid4().hex[:8]}"
    with Commissions(priced.settings, "admin") as admin:
        created = admin.CreateTariffSchedule(
            commission_service_pb2.CreateTariffScheduleRequest(
                tariff_schedule=_schedule(future), tariff_schedule_id=version
            )
        )
        fetched = admin.GetTariffSchedule(commission_service_pb2.GetTariffScheduleRequest(name=created.name))
        in_force = admin.ListTariffSchedules(
            commission_service_pb2.ListTariffSchedulesRequest(
                effective_on={"year": future.year, "month": future.month, "day": future.day + 0}
            )
        )
        errors = {}
        for label, request in {
            "again": commission_service_pb2.CreateTariffScheduleRequest(
                tariff_schedule=_schedule(future + dt.timedelta(days=1)), tariff_schedule_id=version
            ),
            "same date": commission_service_pb2.CreateTariffScheduleRequest(tariff_schedule=_schedule(future)),
            "retroactive": commission_service_pb2.CreateTariffScheduleRequest(
                tariff_schedule=_schedule(TODAY - dt.timedelta(days=1))
            ),
            "no default": commission_service_pb2.CreateTariffScheduleRequest(
                tariff_schedule=_schedule(
                    future + dt.timedelta(days=2), rate="0.001", product_category="CATEGORY_FISHING"
                )
            ),
            "bad rate": commission_service_pb2.CreateTariffScheduleRequest(
                tariff_schedule=_schedule(future + dt.timedelta(days=3), rate="1.5")
            ),
        }.items():
            with pytest.raises(grpc.RpcError) as caught:
                admin.CreateTariffSchedule(request)
            errors[label] = (caught.value.code(), reason(caught.value))
    with Commissions(priced.settings, "broker", "acme") as broker, pytest.raises(grpc.RpcError) as denied:
        broker.CreateTariffSchedule(
            commission_service_pb2.CreateTariffScheduleRequest(tariff_schedule=_schedule(future + dt.timedelta(days=4)))
        )
    assert created.name == f"tariffSchedules/{version}"
    assert created.creator == "admin-bmc"
    assert fetched == created
    assert [s.name for s in in_force.tariff_schedules] == [created.name]
    assert errors["again"] == (grpc.StatusCode.ALREADY_EXISTS, "TARIFF_SCHEDULE_EXISTS")
    assert errors["same date"] == (grpc.StatusCode.ALREADY_EXISTS, "EFFECTIVE_DATE_TAKEN")
    assert errors["retroactive"] == (grpc.StatusCode.FAILED_PRECONDITION, "RETROACTIVE_TARIFF")
    assert errors["no default"] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TARIFF")
    assert errors["bad rate"][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_uvt_values_are_recorded_once_per_year(priced: Platform) -> None:
    year = 2060 + uuid.uuid4().int % 40
    with Commissions(priced.settings, "admin") as admin:
        created = admin.CreateUvtValue(
            commission_service_pb2.CreateUvtValueRequest(
                year=year, uvt_value=commission_pb2.UvtValue(value="99999", source="test")
            )
        )
        listed = admin.ListUvtValues(commission_service_pb2.ListUvtValuesRequest())
        with pytest.raises(grpc.RpcError) as again:
            admin.CreateUvtValue(
                commission_service_pb2.CreateUvtValueRequest(year=year, uvt_value=commission_pb2.UvtValue(value="1"))
            )
    assert created.name == f"uvtValues/{year}"
    assert {"uvtValues/2026", created.name} <= {u.name for u in listed.uvt_values}
    assert next(u.value for u in listed.uvt_values if u.name == "uvtValues/2026") == "52374.00"
    assert (again.value.code(), reason(again.value)) == (grpc.StatusCode.ALREADY_EXISTS, "UVT_EXISTS")


def test_settlements_rerun_identically_and_export(priced: Platform) -> None:
    tenant, other = _tenant(), _tenant()
    with registry(priced.settings, tenant=tenant) as reg, registry(priced.settings, tenant=other) as reg2:
        mine = [reg.register(invoice(price=str(1_000_000 * (i + 1)), quantity="100")) for i in range(3)]
        theirs = reg2.register(invoice())
    with Commissions(priced.settings) as com:
        for registered in [*mine, theirs]:
            com.commission_of(registered.name)
        first = com.settle(PERIOD, f"brokers/{tenant}")
        again = com.settle(PERIOD, f"brokers/{tenant}")
        exported = com.ExportSettlement(commission_service_pb2.ExportSettlementRequest(name=first.name))
        as_json = com.ExportSettlement(
            commission_service_pb2.ExportSettlementRequest(
                name=first.name, format=commission_service_pb2.EXPORT_FORMAT_JSON
            )
        )
        charged = [com.commission_of(r.name) for r in mine]
    rows = list(csv.DictReader(io.StringIO(exported.data.decode())))
    assert first.name == f"settlements/{PERIOD}~{tenant}"
    assert first.state == commission_pb2.SETTLEMENT_STATE_DRAFT
    assert first.content_hash == again.content_hash
    assert [line.key for line in first.by_broker] == [f"brokers/{tenant}"]
    assert first.total.invoice_count == 3
    assert D(first.total.total) == sum(D(c.breakdown.total) for c in charged)
    assert D(first.total.base) == sum(D(c.breakdown.base) for c in charged)
    assert sorted(r["invoice"] for r in rows) == sorted(r.name for r in mine)
    assert sum(D(r["total"]) for r in rows) == D(first.total.total)
    assert exported.content_type.startswith("text/csv")
    assert hashlib.sha256(as_json.data).hexdigest() == first.content_hash


def test_brokers_see_only_their_own_commissions_and_settlements(priced: Platform) -> None:
    tenant, other = _tenant(), _tenant()
    with registry(priced.settings, tenant=other) as reg2:
        theirs = reg2.register(invoice())
    with Commissions(priced.settings) as operator:
        operator.commission_of(theirs.name)
        operator.settle(PERIOD, f"brokers/{other}")
        everyone = operator.settle(PERIOD)
    with Commissions(priced.settings, "broker", tenant) as broker:
        errors = []
        for call in (
            lambda: broker.GetCommission(
                commission_service_pb2.GetCommissionRequest(name=theirs.name.replace("invoices", "commissions"))
            ),
            lambda: broker.GetSettlement(
                commission_service_pb2.GetSettlementRequest(name=f"settlements/{PERIOD}~{other}")
            ),
            lambda: broker.GetSettlement(commission_service_pb2.GetSettlementRequest(name=everyone.name)),
            lambda: broker.ListCommissions(commission_service_pb2.ListCommissionsRequest(broker=f"brokers/{other}")),
            lambda: broker.RunSettlement(commission_service_pb2.RunSettlementRequest(period=PERIOD)),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            errors.append(caught.value.code())
        own = broker.ListCommissions(commission_service_pb2.ListCommissionsRequest())
        listed = broker.ListSettlements(commission_service_pb2.ListSettlementsRequest())
    assert errors == [grpc.StatusCode.NOT_FOUND] * 3 + [grpc.StatusCode.PERMISSION_DENIED] * 2
    assert list(own.commissions) == []
    assert list(listed.settlements) == []


def test_a_closed_period_is_immutable_and_late_corrections_become_adjustments(priced: Platform) -> None:
    broker = f"brokers/{_tenant()}"
    last_month = dt.datetime.combine(TODAY.replace(day=1) - dt.timedelta(days=3), dt.time(15), calendar.COLOMBIA)
    early, annulled_later = _registered(broker, last_month), _registered(broker, last_month, "20000000.00")
    for event in (early, annulled_later):
        _inject(priced, event)
    with Commissions(priced.settings) as com, Commissions(priced.settings, "admin") as admin:
        for event in (early, annulled_later):
            assert com.commission_of(f"invoices/{event.stream_id}").registration_date.month == last_month.month
        draft = com.settle(PREVIOUS, broker)
        closed = admin.ClosePeriod(commission_service_pb2.ClosePeriodRequest(period=PREVIOUS))
        with pytest.raises(grpc.RpcError) as still_open:
            admin.ClosePeriod(commission_service_pb2.ClosePeriodRequest(period=PERIOD))
        # After the close: an annulment of last month's invoice and a registration that arrives late.
        late = _registered(broker, last_month, "5000000.00")
        _inject(priced, _annulled(annulled_later.stream_id, broker, dt.datetime.now(dt.UTC)))
        _inject(priced, late)
        com.commission_of(f"invoices/{late.stream_id}")
        _wait(
            lambda: (
                com.commission_of(f"invoices/{annulled_later.stream_id}").state
                == commission_pb2.COMMISSION_STATE_REVERSED
            )
        )
        rerun = com.settle(PREVIOUS, broker)
        stored = com.GetSettlement(commission_service_pb2.GetSettlementRequest(name=draft.name))
        current = com.settle(PERIOD, broker)
    assert draft.state == commission_pb2.SETTLEMENT_STATE_DRAFT
    assert set(closed.settlements) == {draft.name, f"settlements/{PREVIOUS}~all"}
    assert (still_open.value.code(), reason(still_open.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PERIOD_NOT_ENDED",
    )
    assert rerun.state == commission_pb2.SETTLEMENT_STATE_CLOSED
    assert rerun.content_hash == stored.content_hash == draft.content_hash
    assert rerun.total.invoice_count == 2
    # This month: the late charge (+1) and the reversal of last month's invoice (−1), both as adjustments.
    assert current.adjustments.invoice_count == 0
    assert D(current.adjustments.base) == D("5000000.00") - D("20000000.00")
    assert current.total.invoice_count == 0
    assert next_period(PREVIOUS) == PERIOD
