"""The reference data shipped with the service: the example tariff, UVT
values and withholding rules, read from the TOML files under `data/`.

Amounts are TOML strings, read as exact decimals: a float never enters."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.commission.domain import Bound, Bracket, TariffRule, TariffSchedule, TierMode, WithholdingRule

DATA = Path(__file__).parent / "data"
TARIFFS = DATA / "tariffs.example.toml"
REFERENCE = DATA / "reference.toml"


@dataclass(frozen=True)
class SeedSchedule:
    """A shipped schedule with what only people read (title, source)."""

    schedule: TariffSchedule
    display_name: str
    source: str


@dataclass(frozen=True)
class UvtEntry:
    year: int
    value: Decimal
    source: str


def _bound(raw: Mapping[str, str] | None) -> Bound | None:
    if raw is None:
        return None
    return Bound(cop=Decimal(raw["cop"])) if "cop" in raw else Bound(uvt=Decimal(raw["uvt"]))


def _rule(raw: Mapping[str, Any]) -> TariffRule:
    return TariffRule(
        rate=Decimal(raw.get("rate", "0")),
        brackets=tuple(Bracket(Decimal(start), Decimal(rate)) for start, rate in raw.get("brackets", [])),
        tier_mode=TierMode(raw.get("tier_mode", "SINGLE")),
        minimum=_bound(raw.get("minimum")),
        maximum=_bound(raw.get("maximum")),
        product_category=raw.get("product_category", ""),
        operation_type=raw.get("operation_type", ""),
    )


def schedules(path: Path = TARIFFS) -> list[SeedSchedule]:
    document = tomllib.loads(path.read_text())
    return [
        SeedSchedule(
            TariffSchedule(
                schedule_id=raw["id"],
                effective_date=raw["effective_date"],
                rules=tuple(_rule(r) for r in raw["rule"]),
                vat_rate=Decimal(raw.get("vat_rate", "0.19")),
                rounding_mode=raw.get("rounding_mode", "HALF_UP"),
                rounding_increment=Decimal(raw.get("rounding_increment", "1")),
                example=bool(raw.get("example", False)),
            ).validated(),
            raw.get("display_name", raw["id"]),
            raw.get("source", ""),
        )
        for raw in document["schedule"]
    ]


def uvt_values(path: Path = REFERENCE) -> list[UvtEntry]:
    return [
        UvtEntry(int(r["year"]), Decimal(r["value"]), r.get("source", ""))
        for r in tomllib.loads(path.read_text())["uvt"]
    ]


def withholding_rules(path: Path = REFERENCE) -> list[WithholdingRule]:
    return [
        WithholdingRule(r["goods"], Decimal(r["rate"]), Decimal(r["threshold_uvt"]), r["effective_date"])
        for r in tomllib.loads(path.read_text())["withholding"]
    ]
