"""Amounts as Colombian documents print them."""

from __future__ import annotations

from decimal import Decimal


def pesos(amount: Decimal) -> str:
    """Colombian notation: `$ 12.500.000,00`."""
    whole, _, cents = f"{amount.quantize(Decimal('0.01')):,.2f}".partition(".")
    return f"$ {whole.replace(',', '.')},{cents}"
