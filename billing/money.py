"""Currencies and the one rounding rule.

Rule (stated once, applied once per invoice line): an amount is computed exactly in
``Decimal`` from exact inputs, then rounded with ROUND_HALF_EVEN to the currency's minor unit.
Subtotals, tax bases and totals are sums of already-rounded lines, never re-rounded.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

#: ISO 4217 active codes and their minor-unit digits (the common trading currencies plus the
#: 0- and 3-digit ones, so the rule is exercised beyond 2 digits). Extend as customers need.
ISO_4217_MINOR_UNITS: dict[str, int] = {
    "AED": 2,
    "ARS": 2,
    "AUD": 2,
    "BGN": 2,
    "BHD": 3,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CLP": 0,
    "CNY": 2,
    "COP": 2,
    "CZK": 2,
    "DKK": 2,
    "EGP": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "MXN": 2,
    "MYR": 2,
    "NOK": 2,
    "NZD": 2,
    "OMR": 3,
    "PHP": 2,
    "PLN": 2,
    "RON": 2,
    "SAR": 2,
    "SEK": 2,
    "SGD": 2,
    "THB": 2,
    "TND": 3,
    "TRY": 2,
    "TWD": 2,
    "UAH": 2,
    "USD": 2,
    "VND": 0,
    "ZAR": 2,
}

#: Quantities (GPU-hours, kWh) are shown and stored to 6 decimal places (Decimal(18,6)).
QUANTITY_EXP = Decimal("0.000001")


def minor_unit_exp(minor_unit: int) -> Decimal:
    return Decimal(1).scaleb(-minor_unit)


def round_money(amount: Decimal, minor_unit: int) -> Decimal:
    """The rounding rule: ROUND_HALF_EVEN to the currency's minor unit (see module doc)."""
    return amount.quantize(minor_unit_exp(minor_unit), rounding=ROUND_HALF_EVEN)


def round_quantity(quantity: Decimal) -> Decimal:
    """Display precision of quantities; amounts are never computed from this rounded value."""
    return quantity.quantize(QUANTITY_EXP, rounding=ROUND_HALF_EVEN)


def fmt_money(amount: Decimal, minor_unit: int) -> str:
    return str(round_money(amount, minor_unit))
