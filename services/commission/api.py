"""The `CommissionService` servicer: maps protos to the domain and the store."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from google.api import httpbody_pb2
from google.longrunning import operations_pb2
from google.type import date_pb2

from bmc.commission.v1 import commission_pb2, commission_service_pb2, commission_service_pb2_grpc
from bmc.common.v1 import tax_pb2
from bmc.product.v1 import product_pb2, product_service_pb2, product_service_pb2_grpc
from services.commission.conversion import (
    breakdown_to_proto,
    date_from_proto,
    schedule_from_proto,
    schedule_to_proto,
    withholding_to_proto,
)
from services.commission.domain import OperationLine, TariffBook, TariffError, WithholdingRule, period_of
from services.commission.settlement import parse_settlement_id
from services.commission.settlements import OPERATIONS, SettlementRunner
from services.commission.store import CommissionStore
from services.dian import calendar
from services.kit.auth import acting_for, require_principal, tenant_scope
from services.kit.catchup import outbox_page
from services.kit.database import Database
from services.kit.dead_letters import DeadLetterRpcs
from services.kit.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.kit.events import OUTBOX_RELAY_QUERY
from services.kit.names import resource_id
from services.kit.operations import OperationRpcs, OperationStore
from services.kit.paging import DATE, INSTANT, INT32, TEXT, list_page
from services.kit.service_clients import ServiceClient

BOOK_TTL_SECONDS = 2.0  # how stale another worker's new tariff version may be for quotes


def _invalid(field: str, description: str, reason: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {description}", reason=reason, violations=[FieldViolation(field, description, reason)]
    )


def _date(value: date_pb2.Date, field: str) -> dt.date:
    try:
        return date_from_proto(value)
    except ValueError as exc:
        raise _invalid(field, f"not a calendar date ({exc})", "INVALID_DATE") from exc


class CommissionApi(OperationRpcs, DeadLetterRpcs, commission_service_pb2_grpc.CommissionServiceServicer):
    """RPCs of `bmc.commission.v1.CommissionService`."""

    def __init__(
        self,
        store: CommissionStore,
        products: ServiceClient,
        withholding: Sequence[WithholdingRule],
        database: Database,
    ) -> None:
        self._store, self._products, self._withholding = store, products, withholding
        self.operations = OperationStore(database.pool, OPERATIONS)
        self.settlements = SettlementRunner(store, database, self.operations)
        self._book: TariffBook | None = None
        self._book_time = 0.0

    async def book(self) -> TariffBook:
        """The tariff book for quotes, re-read at most every `BOOK_TTL_SECONDS`."""
        if self._book is None or time.monotonic() - self._book_time > BOOK_TTL_SECONDS:
            self._book = await self._store.book(self._withholding)
            self._book_time = time.monotonic()
        return self._book

    # ------------------------------------------------------------ quotes and commissions

    async def _catalog(self, codes: Sequence[str]) -> dict[str, product_pb2.Product]:
        if not codes:
            return {}
        stub: product_service_pb2_grpc.ProductServiceAsyncStub = self._products.stub
        response: product_service_pb2.BatchGetProductsResponse = await self._products.call(
            stub.BatchGetProducts, product_service_pb2.BatchGetProductsRequest(names=[f"products/{c}" for c in codes])
        )
        return {p.code: p for p in response.products}

    async def QuoteCommission(
        self, request: commission_service_pb2.QuoteCommissionRequest, context: Any
    ) -> commission_service_pb2.QuoteCommissionResponse:
        on = _date(request.date, "date") if request.HasField("date") else calendar.today()
        lookup = list(dict.fromkeys(line.product_code for line in request.lines if line.product_code))
        if len(lookup) > 1000:
            raise _invalid("lines", "at most 1,000 distinct product codes per quote", "TOO_MANY_PRODUCTS")
        catalog = await self._catalog(lookup)
        lines, violations = [], []
        for index, line in enumerate(request.lines):
            product = catalog.get(line.product_code)
            if line.product_code and product is None:
                violations.append(
                    FieldViolation(f"lines[{index}].product_code", "not in the catalog", "PRODUCT_NOT_FOUND")
                )
                continue
            category = line.product_category or (product_pb2.Category.Name(product.category) if product else "")
            withholding = line.withholding_class or (product.withholding_class if product else line.withholding_class)
            name = tax_pb2.WithholdingClass.Name(withholding) if withholding else ""
            lines.append(OperationLine(Decimal(line.amount or "0"), category, name))
        if violations:
            raise InvalidArgument("some lines cannot be quoted", reason="INVALID_QUOTE", violations=violations)
        try:
            breakdown, withholding_estimate = (await self.book()).price(lines, on, request.operation_type)
        except TariffError as exc:
            raise FailedPrecondition(str(exc), reason="TARIFF_NOT_APPLICABLE", metadata={"date": str(on)}) from exc
        return commission_service_pb2.QuoteCommissionResponse(
            breakdown=breakdown_to_proto(breakdown), withholding=withholding_to_proto(withholding_estimate)
        )

    async def GetCommission(
        self, request: commission_service_pb2.GetCommissionRequest, context: Any
    ) -> commission_pb2.Commission:
        invoice_id = resource_id(request.name, "commissions")
        found = await self._store.get_commission(invoice_id, tenant_scope(require_principal()))
        if found is None:
            raise NotFound(f"{request.name} not found", reason="COMMISSION_NOT_FOUND", metadata={"name": request.name})
        return found

    async def ListCommissions(
        self, request: commission_service_pb2.ListCommissionsRequest, context: Any
    ) -> commission_service_pb2.ListCommissionsResponse:
        broker = acting_for(require_principal(), request.broker, "lists commissions")
        invoice_id = resource_id(request.invoice, "invoices", "invoice") if request.invoice else ""
        commissions, token = await list_page(
            request, (INSTANT, TEXT), 50, self._store.list_commissions, broker, request.period, invoice_id
        )
        return commission_service_pb2.ListCommissionsResponse(commissions=commissions, next_page_token=token)

    # ------------------------------------------------------------ tariffs and UVT

    async def CreateTariffSchedule(
        self, request: commission_service_pb2.CreateTariffScheduleRequest, context: Any
    ) -> commission_pb2.TariffSchedule:
        message = request.tariff_schedule
        effective = _date(message.effective_date, "tariff_schedule.effective_date")
        if effective < calendar.today():
            raise FailedPrecondition(
                f"a tariff version cannot take effect in the past ({effective}): commissions already charged "
                "must stay reproducible; give today or a later date",
                reason="RETROACTIVE_TARIFF",
                metadata={"effective_date": str(effective)},
            )
        schedule_id = request.tariff_schedule_id or f"tariff-{effective.isoformat()}"
        try:
            schedule = schedule_from_proto(message, schedule_id)
        except TariffError as exc:
            raise _invalid("tariff_schedule.rules", str(exc), "INVALID_TARIFF") from exc
        normalised = schedule_to_proto(schedule, message.display_name or schedule_id, message.source)
        created = await self._store.create_schedule(schedule_id, effective, normalised, require_principal().subject)
        self._book = None
        return created

    async def GetTariffSchedule(
        self, request: commission_service_pb2.GetTariffScheduleRequest, context: Any
    ) -> commission_pb2.TariffSchedule:
        found = await self._store.get_schedule(resource_id(request.name, "tariffSchedules"))
        if found is None:
            raise NotFound(f"{request.name} not found", reason="TARIFF_SCHEDULE_NOT_FOUND")
        return found

    async def ListTariffSchedules(
        self, request: commission_service_pb2.ListTariffSchedulesRequest, context: Any
    ) -> commission_service_pb2.ListTariffSchedulesResponse:
        effective_on = _date(request.effective_on, "effective_on") if request.HasField("effective_on") else None
        schedules, token = await list_page(request, (DATE, TEXT), 20, self._store.list_schedules, effective_on)
        return commission_service_pb2.ListTariffSchedulesResponse(tariff_schedules=schedules, next_page_token=token)

    async def CreateUvtValue(
        self, request: commission_service_pb2.CreateUvtValueRequest, context: Any
    ) -> commission_pb2.UvtValue:
        if not request.uvt_value.value:
            raise _invalid("uvt_value.value", "required: pesos per UVT", "REQUIRED")
        await self._store.create_uvt(request.year, Decimal(request.uvt_value.value), request.uvt_value.source)
        self._book = None
        return commission_pb2.UvtValue(
            name=f"uvtValues/{request.year}", value=request.uvt_value.value, source=request.uvt_value.source
        )

    async def ListUvtValues(
        self, request: commission_service_pb2.ListUvtValuesRequest, context: Any
    ) -> commission_service_pb2.ListUvtValuesResponse:
        async def newest_first(size: int, after: list[Any] | None) -> list[tuple[tuple[int, Decimal, str], tuple[int]]]:
            values = [v for v in await self._store.uvt_values() if after is None or v[0] < after[0]]
            return [(v, (v[0],)) for v in values[:size]]

        values, token = await list_page(request, (INT32,), 100, newest_first)
        return commission_service_pb2.ListUvtValuesResponse(
            uvt_values=[
                commission_pb2.UvtValue(name=f"uvtValues/{year}", value=str(value), source=source)
                for year, value, source in values
            ],
            next_page_token=token,
        )

    # ------------------------------------------------------------ settlements

    async def RunSettlement(
        self, request: commission_service_pb2.RunSettlementRequest, context: Any
    ) -> operations_pb2.Operation:
        if request.period > period_of(calendar.today()):
            raise FailedPrecondition(
                f"period {request.period} has not started",
                reason="PERIOD_NOT_STARTED",
                metadata={"period": request.period},
            )
        return await self.settlements.start(request, require_principal().subject)

    async def _visible_settlement(self, name: str) -> tuple[commission_pb2.Settlement, int]:
        settlement_id = resource_id(name, "settlements")
        try:
            _, broker = parse_settlement_id(settlement_id)
        except ValueError as exc:
            raise _invalid("name", "must look like settlements/{YYYY-MM}~{broker id or all}", "INVALID_NAME") from exc
        own = tenant_scope(require_principal())
        found = await self._store.get_settlement(settlement_id)
        if found is None or (own and broker != own):
            raise NotFound(f"{name} not found", reason="SETTLEMENT_NOT_FOUND", metadata={"name": name})
        return found

    async def GetSettlement(
        self, request: commission_service_pb2.GetSettlementRequest, context: Any
    ) -> commission_pb2.Settlement:
        return (await self._visible_settlement(request.name))[0]

    async def ListSettlements(
        self, request: commission_service_pb2.ListSettlementsRequest, context: Any
    ) -> commission_service_pb2.ListSettlementsResponse:
        principal = require_principal()
        broker = acting_for(principal, request.broker, "lists settlements")
        every = not tenant_scope(principal)
        settlements, token = await list_page(
            request, (TEXT, TEXT), 20, self._store.list_settlements, request.period, broker, every
        )
        return commission_service_pb2.ListSettlementsResponse(settlements=settlements, next_page_token=token)

    async def ExportSettlement(
        self, request: commission_service_pb2.ExportSettlementRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        settlement, last_entry = await self._visible_settlement(request.name)
        if request.format == commission_service_pb2.EXPORT_FORMAT_JSON:
            content = self.settlements.canonical_json(settlement)
            return httpbody_pb2.HttpBody(content_type="application/json", data=content)
        content = await self.settlements.csv(settlement, last_entry)
        return httpbody_pb2.HttpBody(content_type="text/csv; charset=utf-8", data=content)

    async def ListCommissionEvents(
        self, request: commission_service_pb2.ListCommissionEventsRequest, context: Any
    ) -> commission_service_pb2.ListCommissionEventsResponse:
        response: commission_service_pb2.ListCommissionEventsResponse = await outbox_page(
            self._store.pool, OUTBOX_RELAY_QUERY, request, commission_service_pb2.ListCommissionEventsResponse
        )
        return response

    async def ClosePeriod(
        self, request: commission_service_pb2.ClosePeriodRequest, context: Any
    ) -> commission_service_pb2.ClosePeriodResponse:
        if request.period >= period_of(calendar.today()):
            raise FailedPrecondition(
                f"period {request.period} has not ended; a period can be closed from the first day of the next",
                reason="PERIOD_NOT_ENDED",
                metadata={"period": request.period},
            )
        names = await self.settlements.close_period(request.period, require_principal().subject)
        return commission_service_pb2.ClosePeriodResponse(period=request.period, settlements=names)
