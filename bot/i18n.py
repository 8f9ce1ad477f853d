"""Translations: gettext catalogs under ``locales/``, English source strings.

Each language keeps several ``.po`` files (``locales/<locale>/LC_MESSAGES/<part>.po``, one part per
feature) that are merged at start-up, compiled in memory: there is no compile step to forget and
no binary file in the repository. English is the source language and needs no catalog.

Messages are written ``_("Hello, {name}!", name=user.first_name)``: translated in the current
locale (the organizer's, set per update by a middleware) or in an explicit one
(``locale=org.language``: participants read an organization's messages in its language), then
formatted. Babel extracts ``_``, ``_n`` (plurals) and ``N_`` (marks a string for extraction only).
"""

from __future__ import annotations

import gettext as gettext_module
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiogram.utils.i18n import I18n
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
DEFAULT_LOCALE = "en"
LOCALES: tuple[str, ...] = ("en", "ru", "it", "pt_BR", "es")
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "ru": "Русский",
    "it": "Italiano",
    "pt_BR": "Português (Brasil)",
    "es": "Español",
}
EXTRACT_KEYWORDS: dict[str, Any] = {"_": None, "_n": (1, 2), "N_": None}


def normalize_locale(code: str | None) -> str | None:
    """Map a Telegram ``language_code`` (an IETF tag like ``pt-br``) or a locale to ours."""
    if not code:
        return None
    tag = code.replace("_", "-").lower()
    for locale in LOCALES:
        if tag == locale.replace("_", "-").lower():
            return locale
    primary = tag.split("-", 1)[0]
    if primary == "pt":
        return "pt_BR"
    return primary if primary in LOCALES else None


def load_catalogs(path: Path, locale: str) -> Iterable[Path]:
    return sorted((path / locale / "LC_MESSAGES").glob("*.po"))


class Translator(I18n):
    """aiogram's :class:`I18n`, reading and merging ``.po`` catalogs instead of ``.mo`` files."""

    def __init__(self, path: str | Path = LOCALES_DIR, default_locale: str = DEFAULT_LOCALE):
        super().__init__(path=path, default_locale=default_locale, domain="messages")

    def find_locales(self) -> dict[str, gettext_module.GNUTranslations]:
        translations: dict[str, gettext_module.GNUTranslations] = {}
        for locale in LOCALES:
            merged: Translations | None = None
            for po_path in load_catalogs(self.path, locale):
                with po_path.open("rb") as fp:
                    catalog = read_po(fp, locale=locale)
                buffer = io.BytesIO()
                write_mo(buffer, catalog)
                buffer.seek(0)
                part = Translations(buffer)
                if merged is None:
                    merged = part
                else:
                    merged.merge(part)
            if merged is not None:
                translations[locale] = merged
        return translations

    @property
    def available_locales(self) -> tuple[str, ...]:
        return LOCALES

    def translate(self, msgid: str, locale: str | None = None, **params: Any) -> str:
        text = self.gettext(msgid, locale=locale or self.current_locale)
        return text.format(**params) if params else text

    def translate_plural(
        self, singular: str, plural: str, n: int, locale: str | None = None, **params: Any
    ) -> str:
        text = self.gettext(singular, plural, n=n, locale=locale or self.current_locale)
        return text.format(n=n, **params)


def _current() -> Translator | None:
    # ContextInstanceMixin keeps one context variable per subclass: ask Translator, not I18n.
    return Translator.get_current(no_error=True)


def _(msgid: str, /, *, locale: str | None = None, **params: Any) -> str:
    """Translate ``msgid`` into ``locale`` (default: the current one) and format ``params``."""
    translator = _current()
    if translator is None:
        return msgid.format(**params) if params else msgid
    return translator.translate(msgid, locale, **params)


def _n(singular: str, plural: str, n: int, /, *, locale: str | None = None, **params: Any) -> str:
    """Plural-aware :func:`_`; ``{n}`` is available to the text."""
    translator = _current()
    if translator is None:
        return (singular if n == 1 else plural).format(n=n, **params)
    return translator.translate_plural(singular, plural, n, locale, **params)


def N_(msgid: str) -> str:
    """Mark ``msgid`` for extraction; translate it later with :func:`_`."""
    return msgid


def current_locale() -> str:
    translator = _current()
    return translator.current_locale if translator else DEFAULT_LOCALE
