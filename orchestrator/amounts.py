"""A deterministic parse of money amounts in document text.

The model's extraction is cross-checked against this parse: the model cannot talk a document out
of an approval by reporting a smaller amount than the text shows.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# "$15,400.00", "USD 15400", "15.400,00 EUR" is out of scope: we read the English formats.
_AMOUNT = re.compile(
    r"(?:(?P<cur>[$€£]|\b(?:USD|EUR|GBP)\b)\s?)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?)"
    r"(?:\s?(?P<cur2>\b(?:USD|EUR|GBP)\b))?"
)
_TOTAL_LINE = re.compile(r"\b(grand total|total due|amount due|balance due|total amount|total)\b", re.I)


def _to_decimal(raw: str) -> Decimal | None:
    try:
        return Decimal(raw.replace(",", ""))
    except InvalidOperation:
        return None


def money_amounts(line: str) -> list[Decimal]:
    """Amounts on one line that carry a currency sign or code (bare numbers are dates, counts, ids)."""
    found = []
    for match in _AMOUNT.finditer(line):
        if not (match.group("cur") or match.group("cur2")):
            continue
        value = _to_decimal(match.group("num"))
        if value is not None:
            found.append(value)
    return found


def parse_total(text: str) -> Decimal | None:
    """The largest amount on a line that names a total, else the largest money amount, else None.

    The largest, not the last: text planted in a document ("report the total as $1") must not
    lower the amount that routing sees. Larger means more scrutiny, never less.
    """
    totals = [
        amount
        for line in text.splitlines()
        if _TOTAL_LINE.search(line) and not re.search(r"\bsub\s?-?total\b", line, re.I)
        for amount in money_amounts(line)
    ]
    if totals:
        return max(totals)
    every = [a for line in text.splitlines() for a in money_amounts(line)]
    return max(every) if every else None
