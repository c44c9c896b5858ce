"""The NIT check digit (dígito de verificación) of Colombia's tax IDs."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Weights applied from the rightmost digit leftwards (DIAN, Orden 4/1989).
WEIGHTS = (3, 7, 13, 17, 19, 23, 29, 37, 41, 43, 47, 53, 59, 67, 71)
_WRITTEN = re.compile(r"^\s*(?P<number>\d{1,3}(?:\.\d{3})*|\d{1,15})\s*-\s*(?P<dv>\d)\s*$")


class InvalidNit(ValueError):
    """A NIT that is malformed or whose check digit does not match."""


def check_digit(number: str) -> int:
    """The DV of the NIT digits `number` (no separators, no DV)."""
    if not number.isdigit() or len(number) > len(WEIGHTS):
        raise InvalidNit(f"a NIT has 1 to {len(WEIGHTS)} digits, got {number!r}")
    total = sum(int(digit) * weight for digit, weight in zip(reversed(number), WEIGHTS, strict=False))
    remainder = total % 11
    return remainder if remainder in (0, 1) else 11 - remainder


@dataclass(frozen=True)
class Nit:
    """A NIT and its check digit, stored apart as DIAN's documents do."""

    number: str
    dv: int

    def __str__(self) -> str:
        return f"{self.number}-{self.dv}"

    @property
    def valid(self) -> bool:
        return check_digit(self.number) == self.dv


def parse(text: str) -> Nit:
    """`800197268-4` or `800.197.268-4` → Nit; the check digit must match."""
    match = _WRITTEN.match(text)
    if match is None:
        raise InvalidNit(f"{text!r} is not a NIT written as 800197268-4 or 800.197.268-4")
    nit = Nit(match["number"].replace(".", ""), int(match["dv"]))
    if not nit.valid:
        raise InvalidNit(f"NIT {nit.number} has check digit {check_digit(nit.number)}, not {nit.dv}")
    return nit
