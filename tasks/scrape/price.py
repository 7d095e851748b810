"""Prices as listing sites write them, read into an amount and an ISO currency code."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

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


MAX_PRICE = 10**15
"""The default bound on a price (WATCHKEEPER_SCRAPE_MAX_PRICE): a double holds 15 digits."""
NEGATIVE_RE = re.compile(r"[-\u2212][\s\u00a0\u202f]*(?:[^\s\d\-\u2212]{1,3}[\s\u00a0\u202f]*)?$")
"""A minus sign just before the number, or before its currency (``-5``, ``-$5``, ``EUR -5``)."""
EXPONENT_RE = re.compile(r"[eE][+\-\u2212]?\d")


@dataclass(frozen=True)
class Price:
    """A price as read from a listing: ``amount`` and ``currency`` (None when there is none), or
    the ``problem`` why the number shown is not used (then both are None)."""

    amount: float | None
    currency: str | None
    problem: str | None = None


def read_price(text: str, max_amount: float = MAX_PRICE) -> Price:
    """``"$12,500.00"`` → ``Price(12500.0, "USD")``; ``"1.234,50 €"`` → ``Price(1234.5, "EUR")``.

    Thousands and decimal separators are told apart by position: with both ``,`` and ``.`` the
    last one is decimal; a single separator followed by exactly three digits groups thousands.
    Text without a number ("Price on request") has no amount and no problem. A number shown
    with a minus sign or in exponent notation (``-5``, ``1e309``), or one above ``max_amount``
    (a 400-digit run), is a ``problem``: on a listing page it is a parse mistake far more often
    than a price, and a tracker that took it would report moves that never happened.
    """
    match = NUMBER_RE.search(text) if text else None
    if match is None:
        return Price(None, None)
    cleaned = _cleaned(match.group(0))
    problem = _problem(text, match, cleaned, max_amount)
    if problem:
        return Price(None, None, problem)
    iso = next((m for m in ISO_RE.findall(text) if m in KNOWN_ISO), None)
    currency = iso or next((code for sym, code in CURRENCY_SYMBOLS if sym in text), None)
    return Price(float(cleaned), currency)


def parse_price(text: str) -> tuple[float | None, str | None]:
    """``read_price`` as ``(amount, currency)``; a rejected number gives ``(None, None)``."""
    price = read_price(text)
    return price.amount, price.currency


def _problem(text: str, match: re.Match[str], cleaned: str, max_amount: float) -> str | None:
    if NEGATIVE_RE.search(text, 0, match.start()):
        return "negative"
    if EXPONENT_RE.match(text, match.end()):
        return "exponent notation"
    try:
        amount = float(cleaned)
    except ValueError:
        return f"unreadable number {match.group(0)[:20]!r}"
    if not math.isfinite(amount) or amount > max_amount:
        digits = len(cleaned.partition(".")[0])
        return f"{digits}-digit amount over the bound {max_amount:.0f}"
    return None


def _cleaned(raw: str) -> str:
    """The number's digits with one ``.`` for its decimal separator, if it has one."""
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
    return "".join(ch for ch in digits if ch not in grouping).replace(decimal or "#", ".")
