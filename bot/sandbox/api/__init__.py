"""The Bot API methods, one module per area of Telegram's documentation.

Importing this package registers every method in :data:`bot.sandbox.core.routing.METHODS`.
"""

from bot.sandbox.api import (
    callbacks,
    chats,
    files,
    limits,
    messages,
    payments,
    profile,
    updates,
)

__all__ = ["callbacks", "chats", "files", "limits", "messages", "payments", "profile", "updates"]
