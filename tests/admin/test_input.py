"""The parsers behind every wizard step: what organizers type, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.services.admin_input import (
    InvalidInput,
    parse_capacity,
    parse_chat_ref,
    parse_duration,
    parse_email,
    parse_offsets,
    parse_price,
    parse_stars,
    parse_start,
    parse_timezone,
    parse_title,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-05 18:30",
        "05.12.2026 18:30",
        "05/12/2026 18:30",
        "2026-12-05T18:30",
        " 05.12.2026  18:30 ",
    ],
)
def test_start_accepts_the_common_formats_in_the_org_zone(text: str) -> None:
    assert parse_start(text, "Europe/Rome", NOW) == datetime(2026, 12, 5, 17, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["tomorrow", "2026-13-05 18:30", "31.02.2027 10:00", "2026-12-05", "", "18:30"]
)
def test_start_refuses_nonsense_with_an_example(text: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_start(text, "Europe/Rome", NOW)
    assert "2026-11-30 18:30" in error.value.render()


def test_start_refuses_the_past_and_the_far_future() -> None:
    with pytest.raises(InvalidInput, match="already passed"):
        parse_start("2026-11-23 09:00", "UTC", NOW)
    with pytest.raises(InvalidInput, match="too far"):
        parse_start("2099-01-01 10:00", "UTC", NOW)


def test_start_refuses_a_time_skipped_by_daylight_saving() -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        parse_start("2027-03-28 02:30", "Europe/Rome", NOW)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("19.99", "USD", 1999), ("19,99", "EUR", 1999), ("1500", "RUB", 150000), ("0.5", "USD", 50)],
)
def test_price_in_minor_units(text: str, currency: str, minor: int) -> None:
    assert parse_price(text, currency) == minor


@pytest.mark.parametrize("text", ["0", "0.00", "-5", "abc", "19.999", "1e3", "19.99.1", "$5", ""])
def test_price_refuses_bad_amounts(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_price(text, "USD")


@pytest.mark.parametrize("text", ["0", "-1", "2.5", "many", "١٢"])
def test_stars_and_seats_are_positive_whole_numbers(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_stars(text)
    with pytest.raises(InvalidInput):
        parse_capacity(text)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("1:30", 90), ("1h30m", 90), ("1 h 30 min", 90), ("2 ч", 120), ("45 min", 45)],
)
def test_duration(text: str, minutes: int) -> None:
    assert parse_duration(text) == minutes


@pytest.mark.parametrize("text", ["0", "3", "25h", "soon", "-30"])
def test_duration_refusals(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "offsets"),
    [
        ("24h, 1h, 10m", [1440, 60, 10]),
        ("1d 2h 15", [1440, 120, 15]),
        ("10 мин; 1 ч", [60, 10]),
        ("-", []),
        ("60, 60", [60]),
    ],
)
def test_reminder_offsets(text: str, offsets: list[int]) -> None:
    assert parse_offsets(text) == offsets


@pytest.mark.parametrize("text", ["soon", "24h, later", "0", "31d", "1,2,3,4,5,6", ""])
def test_reminder_offset_refusals(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_offsets(text)


def test_titles_emails_zones_and_chats() -> None:
    assert parse_title("  Pricing \n for  founders ") == "Pricing for founders"
    with pytest.raises(InvalidInput, match="too long"):
        parse_title("x" * 129)
    with pytest.raises(InvalidInput):
        parse_title("   ")
    assert parse_email("team@example.org") == "team@example.org"
    for bad in ["team", "team@", "a@b", "a b@c.org", "a@@b.org"]:
        with pytest.raises(InvalidInput):
            parse_email(bad)
    assert parse_timezone("america/sao paulo") == "America/Sao_Paulo"
    with pytest.raises(InvalidInput):
        parse_timezone("Mars/Olympus")
    assert parse_chat_ref("-1001234567890") == -1001234567890
    assert parse_chat_ref("https://t.me/acme_club") == "@acme_club"
    with pytest.raises(InvalidInput):
        parse_chat_ref("my group")
