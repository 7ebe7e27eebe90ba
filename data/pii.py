"""Redact personal data from text: e-mail addresses, card numbers, IP addresses and phone numbers.

Each find is replaced by a placeholder (``<EMAIL>``, ``<CARD>``, ``<IPV6>``, ``<IPV4>``, ``<PHONE>``) and
counted. The kinds run in that order, and no placeholder holds more than one digit, so a later pattern never
matches inside an earlier replacement (a card number is never half-taken for a phone number).

What counts as each kind (patterns err on the side of plain numbers staying intact):
- card: 13 to 19 digits, optionally in groups split by single spaces or dashes, that pass the Luhn check;
- IPv6: colon-separated hex groups, with at least one decimal digit, that Python's ``ipaddress`` accepts as an
  IPv6 address (``::1``, ``fe80::1``, ``2001:db8::8a2e:370:7334``, ``::ffff:192.0.2.1``; not ``std::vector``);
- IPv4: four dot-separated numbers from 0 to 255;
- phone: an international number (``+`` and a country code, then digit groups), a North American number
  (``555-123-4567``, ``(555) 123-4567``, ``555.123.4567``) or a national number with a leading 0 in two or three
  groups (``020 7946 0958``), each with 9 to 15 digits. Dates, times and version numbers do not match.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

PII_KINDS = ("email", "card", "ipv6", "ipv4", "phone")

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}(?![\w:])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\d|\.\d)")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"  # international
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}([.-])\d{3}\1\d{4}"  # North American
    r"|0\d{1,4}[ -]\d{3,4}(?:[ -]\d{3,4})?"  # national, with a trunk 0
    r")(?![\w-])"
)


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum (every card number does)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _is_card(found: str) -> bool:
    separators = set(re.sub(r"\d", "", found))
    return len(separators) <= 1 and luhn_valid(_digits(found))  # one separator style, as cards are printed


def _is_ipv6(found: str) -> bool:
    if not any(c.isdigit() for c in found):
        return False  # "::" or "a::b" parse as addresses, but in prose and code they are punctuation
    try:
        ipaddress.IPv6Address(found)
    except ValueError:
        return False
    return True


def _is_phone(found: str) -> bool:
    return 9 <= len(_digits(found)) <= 15


# kind -> (pattern, check a match must also pass); checked matches become "<KIND>".
_RULES: dict[str, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    "email": (_EMAIL, lambda found: True),
    "card": (_CARD, _is_card),
    "ipv6": (_IPV6, _is_ipv6),
    "ipv4": (_IPV4, lambda found: True),
    "phone": (_PHONE, _is_phone),
}


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """``text`` with every find replaced by its placeholder, and the number of finds of each kind."""
    counts = dict.fromkeys(PII_KINDS, 0)
    for kind, (pattern, check) in _RULES.items():

        def replace(match: re.Match[str], kind: str = kind, check: Callable[[str], bool] = check) -> str:
            if not check(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            return f"<{kind.upper()}>"

        text = pattern.sub(replace, text)
    return text, counts
