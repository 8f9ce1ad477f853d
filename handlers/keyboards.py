"""Inline keyboards shared by several routers."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.i18n import LANGUAGE_NAMES, LOCALES


class LanguageCallback(CallbackData, prefix="lang"):
    locale: str


def language_keyboard(current: str | None = None) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for locale in LOCALES:
        mark = "✓ " if locale == current else ""
        builder.button(
            text=f"{mark}{LANGUAGE_NAMES[locale]}", callback_data=LanguageCallback(locale=locale)
        )
    builder.adjust(2)
    return builder.as_markup()
