"""Settlements, free of I/O: the totals of a period, their canonical JSON
(the export, and the input of the content hash that proves a re-run
identical) and the rows of the CSV export."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import orjson

ZERO = Decimal(0)
CSV_HEADER = (
    "entry", "invoice", "kind", "registered_in", "booked_in", "broker", "buyer_id", "category",
    "base", "commission", "vat", "total", "tariff_schedule",
)  # fmt: skip


@dataclass(frozen=True)
class Totals:
    """Sums under one key; `invoice_count` nets reversals (each counts −1)."""

    key: str
    invoice_count: int = 0
    base: Decimal = ZERO
    commission: Decimal = ZERO
    vat: Decimal = ZERO
    total: Decimal = ZERO

    def as_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "invoice_count": self.invoice_count,
            "base": str(self.base),
            "commission": str(self.commission),
            "vat": str(self.vat),
            "total": str(self.total),
        }


@dataclass(frozen=True)
class Settlement:
    """A period's commissions, for one broker or all (`broker` empty).

    `by_*` net the period's charges and the reversals of its own invoices;
    `reversals` shows those reversals alone; `adjustments` holds entries that
    belong to an earlier, closed period and were booked here; `total` is what
    is billed (period plus adjustments)."""

    period: str
    broker: str
    by_broker: Sequence[Totals] = ()
    by_buyer: Sequence[Totals] = ()
    by_category: Sequence[Totals] = ()
    reversals: Totals = field(default_factory=lambda: Totals("reversals"))
    adjustments: Totals = field(default_factory=lambda: Totals("adjustments"))
    total: Totals = field(default_factory=lambda: Totals("total"))
    tariff_schedules: Sequence[str] = ()
    last_entry: int = 0  # the last ledger entry included

    def canonical(self) -> bytes:
        """The settlement as JSON with a fixed key and line order: equal
        settlements give equal bytes."""
        body = {
            "period": self.period,
            "broker": self.broker or "all",
            "by_broker": [t.as_json() for t in sorted(self.by_broker, key=lambda t: t.key)],
            "by_buyer": [t.as_json() for t in sorted(self.by_buyer, key=lambda t: t.key)],
            "by_category": [t.as_json() for t in sorted(self.by_category, key=lambda t: t.key)],
            "reversals": self.reversals.as_json(),
            "adjustments": self.adjustments.as_json(),
            "total": self.total.as_json(),
            "tariff_schedules": sorted(self.tariff_schedules),
        }
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def settlement_id(period: str, broker: str) -> str:
    """`{period}~{broker id or all}`, the last segment of the settlement's name."""
    return f"{period}~{broker.removeprefix('brokers/') or 'all'}"


def parse_settlement_id(settlement: str) -> tuple[str, str]:
    """(period, broker name or empty) of a settlement id; ValueError if malformed."""
    period, sep, broker = settlement.partition("~")
    if not sep or len(period) != 7 or period[4] != "-" or not broker:
        raise ValueError(f"{settlement!r} is not PERIOD~BROKER")
    return period, "" if broker == "all" else f"brokers/{broker}"


def csv_lines(rows: Iterable[Sequence[object]]) -> Iterable[str]:
    """The export, one ledger entry per line (values never need quoting:
    names, codes, dates and decimals only)."""
    yield ",".join(CSV_HEADER) + "\n"
    for row in rows:
        yield ",".join(str(value) for value in row) + "\n"
