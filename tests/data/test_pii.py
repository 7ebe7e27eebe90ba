"""PII redaction: each kind found and counted, ordinary numbers left alone, the Luhn check."""

from __future__ import annotations

import pytest

from data.pii import PII_KINDS, luhn_valid, redact_pii


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to john.doe+news@mail.example.co.uk today", "write to <EMAIL> today", "email"),
        ("card 4111 1111 1111 1111 expires", "card <CARD> expires", "card"),
        ("card 5500-0000-0000-0004.", "card <CARD>.", "card"),
        ("amex 378282246310005", "amex <CARD>", "card"),
        ("host 2001:db8::8a2e:370:7334 up", "host <IPV6> up", "ipv6"),
        ("loopback ::1, mapped ::ffff:192.0.2.1", "loopback <IPV6>, mapped <IPV6>", "ipv6"),
        ("server 192.168.0.1, gateway 10.0.0.255.", "server <IPV4>, gateway <IPV4>.", "ipv4"),
        ("call +44 20 7946 0958 now", "call <PHONE> now", "phone"),
        ("call (555) 123-4567 or 555.123.4567", "call <PHONE> or <PHONE>", "phone"),
        ("office 020 7946 0958", "office <PHONE>", "phone"),
    ],
)
def test_each_kind_is_redacted_and_counted(text: str, expected: str, kind: str) -> None:
    redacted, counts = redact_pii(text)
    assert redacted == expected
    assert counts[kind] == expected.count(f"<{kind.upper()}>")
    assert sum(counts.values()) == counts[kind]


@pytest.mark.parametrize(
    "text",
    [
        "On 2023-01-15 at 10:30:45 we shipped version 1.2.3.4.5 (v1.2.3.4).",
        "The year 1999, pi 3.14159, a count of 1234567 and 100,000,000 people.",
        "ISBN 978-3-16-148410-0; std::vector and a::b are code; MAC 00:1A:2B:3C:4D:5E.",
        "A 16-digit number failing Luhn: 4111111111111112. Not an address: 256.1.1.1.",
        "Scene 2, line 15:30. Act 1, 12:30:45:00.",
    ],
)
def test_ordinary_numbers_are_left_alone(text: str) -> None:
    assert redact_pii(text) == (text, dict.fromkeys(PII_KINDS, 0))


def test_counts_add_up_over_a_mixed_text() -> None:
    text = "a@b.io, c@d.org; 4012888888881881; +1 415 555 2671; 8.8.8.8 and fe80::1"
    redacted, counts = redact_pii(text)
    assert counts == {"email": 2, "card": 1, "ipv6": 1, "ipv4": 1, "phone": 1}
    assert redacted == "<EMAIL>, <EMAIL>; <CARD>; <PHONE>; <IPV4> and <IPV6>"


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4111111111111111", True), ("79927398713", True), ("4111111111111112", False), ("0", True), ("18", True)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid
