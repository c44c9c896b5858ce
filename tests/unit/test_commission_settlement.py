"""Settlements' canonical form, names and the proto mapping of the
commission service; the shipped reference data; and the proof that no
float ever enters the money path."""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from services.commission import reference
from services.commission.conversion import (
    schedule_from_proto,
    schedule_to_proto,
    settlement_from_proto,
    settlement_to_proto,
)
from services.commission.settlement import Settlement, Totals, csv_lines, parse_settlement_id, settlement_id
from tests.conftest import ROOT

D = Decimal


def sample(**changes: object) -> Settlement:
    values: dict[str, object] = {
        "period": "2026-11",
        "broker": "",
        "by_broker": [
            Totals("brokers/b", 1, D("100.00"), D(1), D(0), D(1)),
            Totals("brokers/a", 2, D("300.50"), D(3), D(1), D(4)),
        ],
        "by_buyer": [Totals("860034313", 3, D("400.50"), D(4), D(1), D(5))],
        "by_category": [Totals("CATEGORY_LIVESTOCK", 3, D("400.50"), D(4), D(1), D(5))],
        "total": Totals("total", 3, D("400.50"), D(4), D(1), D(5)),
        "tariff_schedules": ["example-2026", "example-2025"],
    }
    values.update(changes)
    return Settlement(**values)  # type: ignore[arg-type]


def test_the_canonical_form_ignores_line_order_and_the_hash_follows_every_figure() -> None:
    a = sample()
    b = sample(by_broker=list(reversed(a.by_broker)), tariff_schedules=["example-2025", "example-2026"])
    assert a.canonical() == b.canonical()
    assert a.content_hash() == hashlib.sha256(a.canonical()).hexdigest()
    changed = sample(total=Totals("total", 3, D("400.50"), D(4), D(1), D(6)))
    assert changed.content_hash() != a.content_hash()


def test_the_proto_keeps_everything_the_hash_covers() -> None:
    s = sample(reversals=Totals("reversals", -1, D("-10.00"), D(-1), D(0), D(-1)))
    message = settlement_to_proto(s, "settlements/2026-11~all", closed=True)
    assert message.content_hash == s.content_hash()
    assert settlement_from_proto(message).content_hash() == s.content_hash()


def test_settlement_names() -> None:
    assert settlement_id("2026-11", "brokers/acme") == "2026-11~acme"
    assert settlement_id("2026-11", "") == "2026-11~all"
    assert parse_settlement_id("2026-11~acme") == ("2026-11", "brokers/acme")
    assert parse_settlement_id("2026-11~all") == ("2026-11", "")
    for bad in ("2026-11", "2026~acme", "2026-11~"):
        with pytest.raises(ValueError, match="PERIOD~BROKER"):
            parse_settlement_id(bad)


def test_csv_export_has_a_header_and_one_line_per_entry() -> None:
    lines = list(csv_lines([(1, "invoices/a", "CHARGE", D("10.00")), (2, "invoices/a", "REVERSAL", D("-10.00"))]))
    assert lines[0].startswith("entry,invoice,kind,")
    assert lines[1:] == ["1,invoices/a,CHARGE,10.00\n", "2,invoices/a,REVERSAL,-10.00\n"]


def test_shipped_schedules_are_labelled_examples_and_survive_the_contract() -> None:
    seeds = reference.schedules()
    assert seeds, "an example tariff ships with the service"
    for seed in seeds:
        assert seed.schedule.example
        assert "example" in seed.source.lower()
        assert "not BMC's official tariff" in seed.display_name
        message = schedule_to_proto(seed.schedule, seed.display_name, seed.source)
        assert schedule_from_proto(message, seed.schedule.schedule_id) == seed.schedule


def test_reference_values_match_the_domain_reference() -> None:
    uvt = {u.year: u.value for u in reference.uvt_values()}
    assert (uvt[2024], uvt[2025], uvt[2026]) == (47_065, 49_799, 52_374)
    rules = {(r.goods, r.effective_date): (r.rate, r.threshold_uvt) for r in reference.withholding_rules()}
    assert rules[("UNPROCESSED", dt.date(2025, 6, 1))] == (D("0.015"), D(70))
    assert rules[("COFFEE", dt.date(2025, 6, 1))] == (D("0.005"), D(70))
    assert rules[("PROCESSED", dt.date(2025, 6, 1))] == (D("0.025"), D(10))


COMMISSION_SOURCES = sorted((ROOT / "services" / "commission").glob("*.py"))


@pytest.mark.parametrize("path", COMMISSION_SOURCES, ids=lambda p: p.name)
def test_no_float_in_the_commission_code(path: Path) -> None:
    """Money is Decimal: no float literal, no float() and no true division of
    ints that could yield one appear in the service's code."""
    tree = ast.parse(path.read_text())
    floats = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, float)]
    calls = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "float"
    ]
    allowed = {"api.py"}  # BOOK_TTL_SECONDS, a duration, not money
    assert not calls, f"float() at lines {calls}"
    assert path.name in allowed or not floats, f"float literals at lines {floats}"


def test_no_float_in_the_shipped_data() -> None:
    def walk(value: object) -> list[object]:
        if isinstance(value, dict):
            return [x for v in value.values() for x in walk(v)]
        if isinstance(value, list):
            return [x for v in value for x in walk(v)]
        return [value]

    for path in (reference.TARIFFS, reference.REFERENCE):
        values = walk(tomllib.loads(path.read_text()))
        assert not [v for v in values if isinstance(v, float)], f"{path.name} has a number that TOML reads as a float"
