"""Every user-facing string is translated into every supported language."""

from __future__ import annotations

import pytest

from bot.i18n import LOCALES, Translator, _, _n, normalize_locale
from bot.locales_tool import check, extract_messages, placeholders


def test_every_message_is_translated_in_every_language() -> None:
    report = check()
    details = "\n".join(
        f"[{locale}] {problem}"
        for locale, problems in report.problems.items()
        for problem in problems
    )
    assert report.ok, f"translation catalogs are incomplete:\n{details}"


def test_the_source_has_messages_to_translate() -> None:
    assert len(extract_messages()) > 10


@pytest.mark.parametrize("locale", [locale for locale in LOCALES if locale != "en"])
def test_each_language_loads_and_differs_from_english(translator: Translator, locale: str) -> None:
    with translator.context():
        assert _("Choose your language:", locale=locale) != "Choose your language:"


def test_plural_forms_follow_the_language(translator: Translator) -> None:
    with translator.context():
        assert _n("{n} seat", "{n} seats", 1, locale="en") == "1 seat"
        assert _n("{n} seat", "{n} seats", 5, locale="en") == "5 seats"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("en", "en"),
        ("en-US", "en"),
        ("ru", "ru"),
        ("pt-br", "pt_BR"),
        ("pt", "pt_BR"),
        ("pt_BR", "pt_BR"),
        ("es-419", "es"),
        ("it", "it"),
        ("de", None),
        (None, None),
        ("", None),
    ],
)
def test_telegram_language_codes_map_to_our_locales(code: str | None, expected: str | None) -> None:
    assert normalize_locale(code) == expected


def test_placeholders_are_parsed() -> None:
    assert placeholders("Hi {name}, {n} left") == {"name", "n"}
    assert placeholders("no fields") == set()
