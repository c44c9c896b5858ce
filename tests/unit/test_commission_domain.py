"""Commission arithmetic from hand-worked examples, and its properties."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.commission.domain import (
    Bound,
    Bracket,
    OperationLine,
    TariffBook,
    TariffError,
    TariffRule,
    TariffSchedule,
    TierMode,
    WithholdingRule,
    booking_period,
    commission,
    in_force,
    next_period,
    operation_commission,
    operation_withholding,
    period_end,
    period_of,
    withholding_avoided,
)

UVT_2026 = Decimal(52374)
D = Decimal


def schedule(*rules: TariffRule, **kw: object) -> TariffSchedule:
    return TariffSchedule("example-2026", dt.date(2026, 1, 1), tuple(r.validated() for r in rules), **kw)  # type: ignore[arg-type]


def test_single_rate_with_minimum_in_uvt() -> None:
    # 10,000,000 × 0.001 = 10,000; the minimum is 0.5 UVT = 0.5 × 52,374 = 26,187 → 26,187;
    # IVA 26,187 × 0.19 = 4,975.53 → 4,976 (half-up to whole pesos); total 31,163.
    s = schedule(TariffRule(rate=D("0.001"), minimum=Bound(uvt=D("0.5"))))
    b = commission(s, D(10_000_000), UVT_2026)
    assert (b.raw_amount, b.minimum, b.bound_applied) == (D("10000.000"), D("26187.0"), "minimum")
    assert (b.commission, b.vat, b.total) == (D(26187), D(4976), D(31163))


def test_marginal_brackets_and_maximum() -> None:
    # 0–50M at 0.2%, 50M–200M at 0.1%, above at 0.05%. Base 120,000,000:
    # 50,000,000 × 0.002 = 100,000; 70,000,000 × 0.001 = 70,000; raw 170,000.
    # Maximum 150,000 COP applies → 150,000; IVA 28,500; total 178,500.
    rule = TariffRule(
        tier_mode=TierMode.MARGINAL,
        brackets=(Bracket(D(0), D("0.002")), Bracket(D(50_000_000), D("0.001")), Bracket(D(200_000_000), D("0.0005"))),
        maximum=Bound(cop=D(150_000)),
    )
    b = commission(schedule(rule), D(120_000_000), UVT_2026)
    assert b.raw_amount == D(170_000)
    assert (b.bound_applied, b.commission, b.vat, b.total) == ("maximum", D(150_000), D(28_500), D(178_500))
    assert b.bracket == "from 50000000"


def test_flat_by_bracket() -> None:
    # 80,000,000 falls in the bracket from 50M at 0.15%: 80,000,000 × 0.0015 = 120,000; IVA 22,800.
    rule = TariffRule(
        tier_mode=TierMode.FLAT_BY_BRACKET, brackets=(Bracket(D(0), D("0.002")), Bracket(D(50_000_000), D("0.0015")))
    )
    b = commission(schedule(rule), D(80_000_000), UVT_2026)
    assert (b.commission, b.vat, b.total) == (D(120_000), D(22_800), D(142_800))


def test_category_rule_beats_operation_type_beats_default() -> None:
    s = schedule(
        TariffRule(rate=D("0.001")),
        TariffRule(rate=D("0.002"), operation_type="OPERATION_TYPE_SALE"),
        TariffRule(rate=D("0.0005"), product_category="CATEGORY_LIVESTOCK"),
    )
    base = D(10_000_000)
    assert commission(s, base, UVT_2026).commission == D(10_000)
    assert commission(s, base, UVT_2026, operation_type="OPERATION_TYPE_SALE").commission == D(20_000)
    assert commission(s, base, UVT_2026, "CATEGORY_LIVESTOCK", "OPERATION_TYPE_SALE").commission == D(5_000)


def test_rounding_mode_and_increment_come_from_the_schedule() -> None:
    # 1,234,567 × 0.001 = 1,234.567: half-up to 100 → 1,200; down to 1 → 1,234; half-even to 1 → 1,235.
    rule = TariffRule(rate=D("0.001"))
    assert commission(schedule(rule, rounding_increment=D(100)), D(1_234_567), UVT_2026).commission == D(1_200)
    assert commission(schedule(rule, rounding_mode="DOWN"), D(1_234_567), UVT_2026).commission == D(1_234)
    assert commission(schedule(rule, rounding_mode="HALF_EVEN"), D(1_234_567), UVT_2026).commission == D(1_235)


def test_the_version_in_force_is_the_latest_effective_on_the_date() -> None:
    old = TariffSchedule("v1", dt.date(2025, 1, 1), (TariffRule(rate=D("0.001")),))
    new = TariffSchedule("v2", dt.date(2026, 7, 1), (TariffRule(rate=D("0.0012")),))
    assert in_force([old, new], dt.date(2026, 6, 30)).schedule_id == "v1"
    assert in_force([old, new], dt.date(2026, 7, 1)).schedule_id == "v2"
    with pytest.raises(TariffError):
        in_force([old, new], dt.date(2024, 12, 31))


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(TariffError, match="start at 0"):
        TariffRule(tier_mode=TierMode.MARGINAL, brackets=(Bracket(D(10), D("0.001")),)).validated()
    with pytest.raises(TariffError, match="minimum above maximum"):
        TariffRule(rate=D("0.001"), minimum=Bound(cop=D(10)), maximum=Bound(cop=D(5))).validated()
    with pytest.raises(TariffError, match="default rule"):
        TariffSchedule(
            "x", dt.date(2026, 1, 1), (TariffRule(rate=D("0.001"), product_category="CATEGORY_FISHING"),)
        ).validated()
    with pytest.raises(TariffError, match="same category"):
        TariffSchedule("x", dt.date(2026, 1, 1), (TariffRule(rate=D("0.001")), TariffRule(rate=D("0.002")))).validated()
    with pytest.raises(TariffError, match="rounding increment"):
        TariffSchedule("x", dt.date(2026, 1, 1), (TariffRule(),), rounding_increment=D(0)).validated()


def test_an_operation_of_several_categories_takes_the_rule_of_the_largest_share() -> None:
    # 6,000,000 of livestock (rate 0.0005) and 4,000,000 of grains: livestock holds the largest share, so
    # 10,000,000 × 0.0005 = 5,000; IVA 950; the explanation says why that rule applied.
    s = schedule(TariffRule(rate=D("0.001")), TariffRule(rate=D("0.0005"), product_category="CATEGORY_LIVESTOCK"))
    lines = [
        OperationLine(D(4_000_000), "CATEGORY_AGRICULTURAL"),
        OperationLine(D(6_000_000), "CATEGORY_LIVESTOCK"),
    ]
    b = operation_commission(s, lines, UVT_2026)
    assert (b.base, b.rule, b.commission, b.vat) == (
        D(10_000_000),
        "product_category=CATEGORY_LIVESTOCK",
        D(5_000),
        D(950),
    )
    assert "largest share (6000000 of 10000000)" in b.explanation[0]


def test_withholding_of_an_operation_adds_each_class_against_the_operation_value() -> None:
    # 2026, operation of 5,000,000: 3,000,000 unprocessed (1.5% = 45,000) + 2,000,000 coffee (0.5% = 10,000).
    # Each part alone is below 70 UVT (3,666,000) but the operation is above both thresholds.
    lines = [
        OperationLine(D(3_000_000), withholding_class="WITHHOLDING_CLASS_UNPROCESSED"),
        OperationLine(D(2_000_000), withholding_class="WITHHOLDING_CLASS_COFFEE"),
        OperationLine(D(1), withholding_class="WITHHOLDING_CLASS_NONE"),
    ]
    est = operation_withholding(RULES, UVT, lines, dt.date(2026, 11, 28))
    assert est is not None
    assert (est.amount, est.threshold) == (D(55_000), D(3_666_000))
    assert est.rule == "UNPROCESSED 1.5% above 70 UVT; COFFEE 0.5% above 70 UVT"
    assert (
        operation_withholding(
            RULES, UVT, [OperationLine(D(9), withholding_class="WITHHOLDING_CLASS_NONE")], dt.date(2026, 1, 1)
        )
        is None
    )


def test_periods_and_where_late_entries_are_booked() -> None:
    assert period_of(dt.date(2026, 12, 31)) == "2026-12"
    assert next_period("2026-12") == "2027-01"
    assert period_end("2026-02") == dt.date(2026, 3, 1)
    assert booking_period("2026-10", set()) == "2026-10"
    assert booking_period("2026-10", {"2026-10", "2026-11"}) == "2026-12"


def test_the_book_refuses_what_it_cannot_price() -> None:
    book = TariffBook([TariffSchedule("v1", dt.date(2025, 1, 1), (TariffRule(rate=D("0.001")),))], {2026: UVT_2026})
    line = [OperationLine(D(1_000))]
    assert book.price(line, dt.date(2026, 3, 1))[0].commission == D(1)
    with pytest.raises(TariffError, match="UVT of 2025"):
        book.price(line, dt.date(2025, 3, 1))
    with pytest.raises(TariffError, match="no tariff schedule in force"):
        book.price(line, dt.date(2024, 3, 1))
    with pytest.raises(TariffError, match="at least one line"):
        book.price([], dt.date(2026, 3, 1))


RULES = [
    WithholdingRule("UNPROCESSED", D("0.015"), D(92), dt.date(2019, 1, 1)),
    WithholdingRule("UNPROCESSED", D("0.015"), D(70), dt.date(2025, 6, 1)),
    WithholdingRule("COFFEE", D("0.005"), D(70), dt.date(2025, 6, 1)),
]
UVT = {2025: D(49_799), 2026: UVT_2026}


def test_withholding_avoided_above_the_threshold() -> None:
    # 2026: 70 UVT × 52,374 = 3,666,180 → 3,666,000 (nearest 1,000). 10,000,000 × 1.5% = 150,000.
    est = withholding_avoided(RULES, UVT, "UNPROCESSED", D(10_000_000), dt.date(2026, 11, 28))
    assert est is not None
    assert (est.threshold, est.amount) == (D(3_666_000), D(150_000))
    below = withholding_avoided(RULES, UVT, "UNPROCESSED", D(3_000_000), dt.date(2026, 11, 28))
    assert below is not None
    assert below.amount == 0


def test_withholding_threshold_before_june_2025() -> None:
    # 92 UVT × 49,799 = 4,581,508 → 4,582,000; 4,000,000 is below it in May 2025, above 70 UVT in July.
    may = withholding_avoided(RULES, UVT, "UNPROCESSED", D(4_000_000), dt.date(2025, 5, 31))
    july = withholding_avoided(RULES, UVT, "UNPROCESSED", D(4_000_000), dt.date(2025, 7, 1))
    assert may is not None
    assert july is not None
    assert (may.threshold, may.amount) == (D(4_582_000), D(0))
    assert july.amount == D(60_000)


marginal = schedule(
    TariffRule(
        tier_mode=TierMode.MARGINAL,
        brackets=(Bracket(D(0), D("0.002")), Bracket(D(50_000_000), D("0.001"))),
        minimum=Bound(cop=D(20_000)),
        maximum=Bound(uvt=D(5)),
    )
)
values = st.decimals(min_value=D(0), max_value=D(10_000_000_000), places=2)


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_commission_is_monotonic_and_bounded(a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    x, y = commission(marginal, low, UVT_2026), commission(marginal, high, UVT_2026)
    assert x.commission <= y.commission
    assert D(20_000) <= x.commission <= 5 * UVT_2026
    assert x.vat == (x.commission * D("0.19")).quantize(D(1), rounding="ROUND_HALF_UP")
    assert x.total == x.commission + x.vat
