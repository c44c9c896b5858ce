"""Between the contract's messages and the commission domain."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from google.type import date_pb2

from bmc.commission.v1 import commission_pb2
from services.commission.domain import (
    Bound,
    Bracket,
    Breakdown,
    TariffRule,
    TariffSchedule,
    TierMode,
    WithholdingEstimate,
)
from services.commission.settlement import Settlement, Totals

TIER_MODES = {
    commission_pb2.TIER_MODE_UNSPECIFIED: TierMode.SINGLE,
    commission_pb2.TIER_MODE_MARGINAL: TierMode.MARGINAL,
    commission_pb2.TIER_MODE_FLAT_BY_BRACKET: TierMode.FLAT_BY_BRACKET,
}
ROUNDING_MODES = {
    commission_pb2.ROUNDING_MODE_UNSPECIFIED: "HALF_UP",
    commission_pb2.ROUNDING_MODE_HALF_UP: "HALF_UP",
    commission_pb2.ROUNDING_MODE_HALF_EVEN: "HALF_EVEN",
    commission_pb2.ROUNDING_MODE_DOWN: "DOWN",
    commission_pb2.ROUNDING_MODE_UP: "UP",
}


def date_from_proto(value: date_pb2.Date) -> dt.date:
    return dt.date(value.year, value.month, value.day)


def date_to_proto(value: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def _bound(message: commission_pb2.AmountBound, present: bool) -> Bound | None:
    if not present:
        return None
    which = message.WhichOneof("bound")
    if which == "cop":
        return Bound(cop=Decimal(message.cop))
    if which == "uvt":
        return Bound(uvt=Decimal(message.uvt))
    return None


def _bound_to_proto(bound: Bound | None) -> commission_pb2.AmountBound | None:
    if bound is None:
        return None
    return (
        commission_pb2.AmountBound(cop=str(bound.cop))
        if bound.cop is not None
        else commission_pb2.AmountBound(uvt=str(bound.uvt))
    )


def schedule_from_proto(message: commission_pb2.TariffSchedule, schedule_id: str) -> TariffSchedule:
    """The domain schedule; `TariffError` (from `validated`) when it cannot be applied."""
    rules = tuple(
        TariffRule(
            rate=Decimal(rule.rate or "0"),
            brackets=tuple(Bracket(Decimal(b.from_amount or "0"), Decimal(b.rate or "0")) for b in rule.brackets),
            tier_mode=TIER_MODES[rule.tier_mode],
            minimum=_bound(rule.minimum, rule.HasField("minimum")),
            maximum=_bound(rule.maximum, rule.HasField("maximum")),
            product_category=rule.product_category,
            operation_type=rule.operation_type,
        )
        for rule in message.rules
    )
    return TariffSchedule(
        schedule_id=schedule_id,
        effective_date=date_from_proto(message.effective_date),
        rules=rules,
        vat_rate=Decimal(message.vat_rate or "0.19"),
        rounding_mode=ROUNDING_MODES[message.rounding_mode],
        rounding_increment=Decimal(message.rounding_increment or "1"),
        example=message.example,
    ).validated()


def schedule_to_proto(schedule: TariffSchedule, display_name: str, source: str) -> commission_pb2.TariffSchedule:
    """The contract's message of a domain schedule (name, rules, rounding);
    the store adds when and by whom it was recorded."""
    message = commission_pb2.TariffSchedule(
        name=f"tariffSchedules/{schedule.schedule_id}",
        display_name=display_name,
        effective_date=date_to_proto(schedule.effective_date),
        vat_rate=str(schedule.vat_rate),
        rounding_mode=commission_pb2.RoundingMode.Value(f"ROUNDING_MODE_{schedule.rounding_mode}"),
        rounding_increment=str(schedule.rounding_increment),
        example=schedule.example,
        source=source,
    )
    modes = {mode: number for number, mode in TIER_MODES.items()}
    for rule in schedule.rules:
        out = message.rules.add(
            rate=str(rule.rate) if rule.tier_mode == TierMode.SINGLE else "",
            brackets=[commission_pb2.Bracket(from_amount=str(b.from_amount), rate=str(b.rate)) for b in rule.brackets],
            tier_mode=modes[rule.tier_mode],
            minimum=_bound_to_proto(rule.minimum),
            maximum=_bound_to_proto(rule.maximum),
        )
        if rule.product_category:
            out.product_category = rule.product_category
        elif rule.operation_type:
            out.operation_type = rule.operation_type
    return message


def _amount(value: Decimal | None) -> str:
    return "" if value is None else str(value)


def breakdown_to_proto(b: Breakdown) -> commission_pb2.CommissionBreakdown:
    return commission_pb2.CommissionBreakdown(
        base=str(b.base),
        rule=b.rule,
        bracket=b.bracket,
        rate=str(b.rate.normalize()) if b.rate else "0",
        raw_amount=str(b.raw_amount),
        minimum=_amount(b.minimum),
        maximum=_amount(b.maximum),
        bound_applied=b.bound_applied,
        commission=str(b.commission),
        vat_rate=str(b.vat_rate),
        vat=str(b.vat),
        total=str(b.total),
        tariff_schedule=f"tariffSchedules/{b.schedule_id}",
        explanation=list(b.explanation),
    )


def withholding_to_proto(w: WithholdingEstimate | None) -> commission_pb2.WithholdingEstimate | None:
    if w is None:
        return None
    return commission_pb2.WithholdingEstimate(
        rule=w.rule, threshold=str(w.threshold), amount=str(w.amount), estimate=True
    )


def _line(t: Totals) -> commission_pb2.SettlementLine:
    return commission_pb2.SettlementLine(
        key=t.key,
        invoice_count=t.invoice_count,
        base=str(t.base),
        commission=str(t.commission),
        vat=str(t.vat),
        total=str(t.total),
    )


def settlement_to_proto(s: Settlement, name: str, closed: bool) -> commission_pb2.Settlement:
    """Without `create_time`: the store sets it."""
    return commission_pb2.Settlement(
        name=name,
        period=s.period,
        broker=s.broker,
        state=commission_pb2.SETTLEMENT_STATE_CLOSED if closed else commission_pb2.SETTLEMENT_STATE_DRAFT,
        by_broker=[_line(t) for t in sorted(s.by_broker, key=lambda t: t.key)],
        by_buyer=[_line(t) for t in sorted(s.by_buyer, key=lambda t: t.key)],
        by_category=[_line(t) for t in sorted(s.by_category, key=lambda t: t.key)],
        reversals=_line(s.reversals),
        adjustments=_line(s.adjustments),
        total=_line(s.total),
        tariff_schedules=[f"tariffSchedules/{t}" for t in sorted(s.tariff_schedules)],
        content_hash=s.content_hash(),
    )


def _totals(line: commission_pb2.SettlementLine) -> Totals:
    return Totals(
        line.key, line.invoice_count, Decimal(line.base or "0"), Decimal(line.commission or "0"),
        Decimal(line.vat or "0"), Decimal(line.total or "0"),
    )  # fmt: skip


def settlement_from_proto(message: commission_pb2.Settlement) -> Settlement:
    return Settlement(
        period=message.period,
        broker=message.broker,
        by_broker=[_totals(t) for t in message.by_broker],
        by_buyer=[_totals(t) for t in message.by_buyer],
        by_category=[_totals(t) for t in message.by_category],
        reversals=_totals(message.reversals),
        adjustments=_totals(message.adjustments),
        total=_totals(message.total),
        tariff_schedules=[t.removeprefix("tariffSchedules/") for t in message.tariff_schedules],
    )
