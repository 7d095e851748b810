"""Prices as listing sites write them, read into an amount and an ISO currency code."""

from __future__ import annotations

import re

CURRENCY_SYMBOLS = (
    ("US$", "USD"),
    ("HK$", "HKD"),
    ("CA$", "CAD"),
    ("C$", "CAD"),
    ("A$", "AUD"),
    ("S$", "SGD"),
    ("NZ$", "NZD"),
    ("R$", "BRL"),
    ("CHF", "CHF"),
    ("Fr.", "CHF"),
    ("$", "USD"),
    ("€", "EUR"),
    ("£", "GBP"),
    ("¥", "JPY"),
    ("₹", "INR"),
    ("₩", "KRW"),
    ("₽", "RUB"),
    ("₺", "TRY"),
    ("zł", "PLN"),
    ("kr", "SEK"),
)
ISO_RE = re.compile(r"(?<![A-Za-z])([A-Z]{3})(?![A-Za-z])")
NUMBER_RE = re.compile(r"\d(?:[\d.,'\u2019\s\u00a0\u202f]*\d)?")
KNOWN_ISO = frozenset(
    {
        "USD",
        "EUR",
        "GBP",
        "CHF",
        "JPY",
        "CNY",
        "HKD",
        "SGD",
        "AUD",
        "CAD",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "CZK",
        "HUF",
        "RUB",
        "TRY",
        "INR",
        "KRW",
        "BRL",
        "MXN",
        "ZAR",
        "AED",
        "THB",
    }
)


def parse_price(text: str) -> tuple[float | None, str | None]:
    """``"$12,500.00"`` → ``(12500.0, "USD")``; ``"1.234,50 €"`` → ``(1234.5, "EUR")``.

    Thousands and decimal separators are told apart by position: with both ``,`` and ``.`` the
    last one is decimal; a single separator followed by exactly three digits groups thousands.
    Text without a number ("Price on request") gives ``(None, None)``.
    """
    if not text:
        return None, None
    match = NUMBER_RE.search(text)
    amount = _number(match.group(0)) if match else None
    iso = next((m for m in ISO_RE.findall(text) if m in KNOWN_ISO), None)
    currency = iso or next((code for sym, code in CURRENCY_SYMBOLS if sym in text), None)
    return amount, currency if amount is not None else None


def _number(raw: str) -> float | None:
    digits = re.sub(r"[\s\u00a0\u202f'\u2019]", "", raw)
    last_dot, last_comma = digits.rfind("."), digits.rfind(",")
    if last_dot >= 0 and last_comma >= 0:
        decimal = "." if last_dot > last_comma else ","
    elif last_dot >= 0 or last_comma >= 0:
        sep = "." if last_dot >= 0 else ","
        tail = len(digits) - digits.rfind(sep) - 1
        decimal = sep if digits.count(sep) == 1 and tail != 3 else ""
    else:
        decimal = ""
    grouping = {".", ","} - {decimal}
    cleaned = "".join(ch for ch in digits if ch not in grouping).replace(decimal or "#", ".")
    try:
        return float(cleaned)
    except ValueError:
        return None
