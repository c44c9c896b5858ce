"""BMC's commission, free of I/O: tariff schedules (versioned by effective
date), the commission of one operation with a breakdown a person can follow,
and the estimate of the withholding the buyer avoids by registering.

All money is Decimal; every rounding is explicit (mode and increment come
from the schedule)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal
from enum import StrEnum

ROUNDING = {"HALF_UP": ROUND_HALF_UP, "HALF_EVEN": ROUND_HALF_EVEN, "DOWN": ROUND_DOWN, "UP": ROUND_UP}


class TierMode(StrEnum):
    SINGLE = "SINGLE"  # one rate, no brackets
    MARGINAL = "MARGINAL"  # each bracket's rate on the part of the value inside it
    FLAT_BY_BRACKET = "FLAT_BY_BRACKET"  # the bracket the whole value falls in sets the rate for all of it


class TariffError(ValueError):
    """A schedule that cannot be applied as written."""


@dataclass(frozen=True)
class Bound:
    """A minimum or maximum in pesos or in UVT (converted with the year's UVT)."""

    cop: Decimal | None = None
    uvt: Decimal | None = None

    def pesos(self, uvt_value: Decimal) -> Decimal:
        if self.cop is not None:
            return self.cop
        if self.uvt is not None:
            return self.uvt * uvt_value
        raise TariffError("a bound needs pesos or UVT")

    def describe(self) -> str:
        return f"{self.cop} COP" if self.cop is not None else f"{self.uvt} UVT"


@dataclass(frozen=True)
class Bracket:
    from_amount: Decimal
    rate: Decimal


@dataclass(frozen=True)
class TariffRule:
    rate: Decimal = Decimal(0)
    brackets: tuple[Bracket, ...] = ()
    tier_mode: TierMode = TierMode.SINGLE
    minimum: Bound | None = None
    maximum: Bound | None = None
    product_category: str = ""
    operation_type: str = ""

    @property
    def label(self) -> str:
        if self.product_category:
            return f"product_category={self.product_category}"
        if self.operation_type:
            return f"operation_type={self.operation_type}"
        return "default"

    def validated(self) -> TariffRule:
        if self.tier_mode != TierMode.SINGLE:
            if not self.brackets or self.brackets[0].from_amount != 0:
                raise TariffError(f"{self.label}: brackets must start at 0")
            starts = [b.from_amount for b in self.brackets]
            if starts != sorted(set(starts)):
                raise TariffError(f"{self.label}: bracket starts must strictly increase")
        bounds = (self.minimum.cop if self.minimum else None, self.maximum.cop if self.maximum else None)
        if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
            raise TariffError(f"{self.label}: minimum above maximum")
        return self


@dataclass(frozen=True)
class TariffSchedule:
    """One immutable version of the tariff."""

    schedule_id: str
    effective_date: dt.date
    rules: tuple[TariffRule, ...]
    vat_rate: Decimal = Decimal("0.19")  # general IVA rate (domain.md: verify)
    rounding_mode: str = "HALF_UP"
    rounding_increment: Decimal = Decimal(1)
    example: bool = False

    def validated(self) -> TariffSchedule:
        """The schedule if it can be applied to any operation; TariffError otherwise."""
        for rule in self.rules:
            rule.validated()
        if not any(not r.product_category and not r.operation_type for r in self.rules):
            raise TariffError("a schedule needs a default rule (one with no category and no operation type)")
        labels = [r.label for r in self.rules]
        if len(labels) != len(set(labels)):
            raise TariffError("two rules apply to the same category, operation type or default")
        if self.rounding_mode not in ROUNDING:
            raise TariffError(f"unknown rounding mode {self.rounding_mode}")
        if self.rounding_increment <= 0:
            raise TariffError("the rounding increment must be positive")
        return self

    def rule_for(self, product_category: str = "", operation_type: str = "") -> TariffRule:
        """The most specific rule: product category, then operation type, then the default."""
        for rule in self.rules:
            if product_category and rule.product_category == product_category:
                return rule
        for rule in self.rules:
            if operation_type and rule.operation_type == operation_type:
                return rule
        for rule in self.rules:
            if not rule.product_category and not rule.operation_type:
                return rule
        raise TariffError(
            f"schedule {self.schedule_id} has no rule for {product_category or operation_type or 'default'}"
        )

    def round(self, amount: Decimal) -> Decimal:
        units = (amount / self.rounding_increment).quantize(Decimal(1), rounding=ROUNDING[self.rounding_mode])
        return units * self.rounding_increment


def in_force(schedules: Sequence[TariffSchedule], on: dt.date) -> TariffSchedule:
    """The version with the latest effective date on or before `on`."""
    candidates = [s for s in schedules if s.effective_date <= on]
    if not candidates:
        raise TariffError(f"no tariff schedule in force on {on}")
    return max(candidates, key=lambda s: s.effective_date)


@dataclass(frozen=True)
class Breakdown:
    base: Decimal
    rule: str
    bracket: str
    rate: Decimal  # effective rate of the raw amount on the base
    raw_amount: Decimal
    minimum: Decimal | None
    maximum: Decimal | None
    bound_applied: str
    commission: Decimal
    vat_rate: Decimal
    vat: Decimal
    total: Decimal
    schedule_id: str
    explanation: tuple[str, ...] = field(default=())


def _raw(rule: TariffRule, base: Decimal) -> tuple[Decimal, str, list[str]]:
    if rule.tier_mode == TierMode.SINGLE:
        return base * rule.rate, "", [f"{base} × {rule.rate} = {base * rule.rate}"]
    brackets = rule.brackets
    if rule.tier_mode == TierMode.FLAT_BY_BRACKET:
        bracket = max((b for b in brackets if b.from_amount <= base), key=lambda b: b.from_amount)
        raw = base * bracket.rate
        return (
            raw,
            f"from {bracket.from_amount}",
            [f"bracket from {bracket.from_amount}: {base} × {bracket.rate} = {raw}"],
        )
    raw, lines, last = Decimal(0), [], ""
    for index, bracket in enumerate(brackets):
        if base <= bracket.from_amount and index > 0:
            break
        upper = brackets[index + 1].from_amount if index + 1 < len(brackets) else None
        portion = (min(base, upper) if upper is not None else base) - bracket.from_amount
        part = portion * bracket.rate
        raw += part
        last = f"from {bracket.from_amount}"
        lines.append(f"{portion} in bracket from {bracket.from_amount} × {bracket.rate} = {part}")
    return raw, last, lines


def commission(
    schedule: TariffSchedule,
    base: Decimal,
    uvt_value: Decimal,
    product_category: str = "",
    operation_type: str = "",
) -> Breakdown:
    """The commission on an operation of value `base`, step by step."""
    if base < 0:
        raise TariffError("the operation value cannot be negative")
    rule = schedule.rule_for(product_category, operation_type)
    raw, bracket, lines = _raw(rule, base)
    minimum = rule.minimum.pesos(uvt_value) if rule.minimum else None
    maximum = rule.maximum.pesos(uvt_value) if rule.maximum else None
    bounded, applied = raw, ""
    if minimum is not None and raw < minimum:
        bounded, applied = minimum, "minimum"
        lines.append(f"below the minimum of {rule.minimum.describe()} = {minimum}: {minimum}")  # type: ignore[union-attr]
    if maximum is not None and bounded > maximum:
        bounded, applied = maximum, "maximum"
        lines.append(f"above the maximum of {rule.maximum.describe()} = {maximum}: {maximum}")  # type: ignore[union-attr]
    value = schedule.round(bounded)
    vat = schedule.round(value * schedule.vat_rate)
    lines.append(f"commission rounded {schedule.rounding_mode.lower()} to {schedule.rounding_increment}: {value}")
    lines.append(f"IVA {value} × {schedule.vat_rate} = {vat}; total {value + vat}")
    return Breakdown(
        base=base,
        rule=rule.label,
        bracket=bracket,
        rate=(raw / base) if base else Decimal(0),
        raw_amount=raw,
        minimum=minimum,
        maximum=maximum,
        bound_applied=applied,
        commission=value,
        vat_rate=schedule.vat_rate,
        vat=vat,
        total=value + vat,
        schedule_id=schedule.schedule_id,
        explanation=tuple(lines),
    )


@dataclass(frozen=True)
class OperationLine:
    """What the commission needs of one invoice line."""

    amount: Decimal  # value before taxes
    category: str = ""  # bmc.product.v1.Category name
    withholding_class: str = ""  # bmc.common.v1.WithholdingClass name


def dominant(lines: Sequence[OperationLine], key: str) -> str:
    """The value of `key` holding the largest share of the operation (the first such on a tie)."""
    shares: dict[str, Decimal] = {}
    for line in lines:
        shares[getattr(line, key)] = shares.get(getattr(line, key), Decimal(0)) + line.amount
    return max(shares, key=lambda k: shares[k]) if shares else ""


def operation_commission(
    schedule: TariffSchedule, lines: Sequence[OperationLine], uvt_value: Decimal, operation_type: str = ""
) -> Breakdown:
    """The commission of a whole operation. Minimum and maximum are per
    operation, so one rule applies to the whole value: that of the product
    category holding the largest share of it."""
    base = sum((line.amount for line in lines), Decimal(0))
    category = dominant(lines, "category")
    result = commission(schedule, base, uvt_value, category, operation_type)
    categories = {line.category for line in lines}
    if len(categories) > 1:
        share = sum((line.amount for line in lines if line.category == category), Decimal(0))
        label = category or "uncategorised"
        note = f"lines of {len(categories)} categories: {label} holds the largest share ({share} of {base})"
        result = replace(result, explanation=(note, *result.explanation))
    return result


# ---------------------------------------------------------------- withholding


@dataclass(frozen=True)
class WithholdingRule:
    """Purchase withholding (retención en la fuente) of one class of goods."""

    goods: str  # UNPROCESSED, PROCESSED, COFFEE
    rate: Decimal
    threshold_uvt: Decimal
    effective_date: dt.date


@dataclass(frozen=True)
class WithholdingEstimate:
    rule: str
    threshold: Decimal
    amount: Decimal


def withholding_avoided(
    rules: Sequence[WithholdingRule],
    uvt_by_year: Mapping[int, Decimal],
    goods: str,
    base: Decimal,
    on: dt.date,
    operation_value: Decimal | None = None,
) -> WithholdingEstimate | None:
    """What the buyer would withhold on `base` without registering (an
    estimate, not a tax determination): the rate in force on `on`, when the
    operation's value (`base` unless given) reaches its UVT threshold."""
    applicable = [r for r in rules if r.goods == goods and r.effective_date <= on]
    if not applicable or on.year not in uvt_by_year:
        return None
    rule = max(applicable, key=lambda r: r.effective_date)
    # Published peso thresholds are rounded to the nearest 1,000 (domain.md).
    threshold = (rule.threshold_uvt * uvt_by_year[on.year] / 1000).quantize(Decimal(1), ROUND_HALF_UP) * 1000
    reached = (base if operation_value is None else operation_value) >= threshold
    amount = (base * rule.rate).quantize(Decimal(1), ROUND_HALF_UP) if reached else Decimal(0)
    percent = format((rule.rate * 100).normalize(), "f")
    return WithholdingEstimate(f"{goods} {percent}% above {rule.threshold_uvt} UVT", threshold, amount)


def operation_withholding(
    rules: Sequence[WithholdingRule], uvt_by_year: Mapping[int, Decimal], lines: Sequence[OperationLine], on: dt.date
) -> WithholdingEstimate | None:
    """The estimate for a whole operation: each class of goods at its own
    rate, each threshold compared with the operation's value; None when no
    line is of a class that attracts withholding."""
    value = sum((line.amount for line in lines), Decimal(0))
    parts: dict[str, Decimal] = {}
    for line in lines:
        goods = line.withholding_class.removeprefix("WITHHOLDING_CLASS_")
        parts[goods] = parts.get(goods, Decimal(0)) + line.amount
    estimates = [
        e
        for goods, part in sorted(parts.items(), key=lambda kv: -kv[1])
        if (e := withholding_avoided(rules, uvt_by_year, goods, part, on, value)) is not None
    ]
    if not estimates:
        return None
    return WithholdingEstimate(
        "; ".join(e.rule for e in estimates), estimates[0].threshold, sum((e.amount for e in estimates), Decimal(0))
    )


# ---------------------------------------------------------------- periods


def period_of(day: dt.date) -> str:
    """The settlement period (month) of a date, `YYYY-MM`."""
    return f"{day.year:04d}-{day.month:02d}"


def next_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:7])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def period_end(period: str) -> dt.date:
    """The first day after the period."""
    following = next_period(period)
    return dt.date(int(following[:4]), int(following[5:7]), 1)


def booking_period(natural: str, closed: Collection[str]) -> str:
    """Where an entry belongs: its own period while that is open; once it is
    closed, the first open period after it (the entry is then an adjustment)."""
    period = natural
    while period in closed:
        period = next_period(period)
    return period


# ---------------------------------------------------------------- the book


@dataclass(frozen=True)
class TariffBook:
    """Everything a commission is computed from: the tariff versions, the
    UVT of each year and the withholding rules."""

    schedules: Sequence[TariffSchedule]
    uvt_by_year: Mapping[int, Decimal]
    withholding: Sequence[WithholdingRule] = ()

    def price(
        self, lines: Sequence[OperationLine], on: dt.date, operation_type: str = ""
    ) -> tuple[Breakdown, WithholdingEstimate | None]:
        """The commission of an operation registered on `on`, and the withholding estimate."""
        if not lines:
            raise TariffError("an operation needs at least one line")
        if any(line.amount < 0 for line in lines):
            raise TariffError("line values cannot be negative")
        schedule = in_force(self.schedules, on)
        uvt = self.uvt_by_year.get(on.year)
        if uvt is None:
            raise TariffError(f"the UVT of {on.year} is not recorded")
        breakdown = operation_commission(schedule, lines, uvt, operation_type)
        return breakdown, operation_withholding(self.withholding, self.uvt_by_year, lines, on)
