"""What the application shares between updates and jobs, built once by the factories.

The context points one way: it knows settings, clock, translator, the database and the ports to
the outside (the Bot API client, the payment providers' refunders), and nothing of the services
that use it. The running parts (the outbox dispatcher, the refund worker, the scheduler) are
built in the application factory, which hands each service what it needs; services reach them
only through :class:`Wakeups`, so a commit can say "there is work now" without knowing who does it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.i18n import Translator
from bot.settings import Settings
from payments.registry import RefunderRegistry
from storage.direct import Transaction

if TYPE_CHECKING:
    from aiogram import Bot


def _nothing() -> None:
    return None


@dataclass
class Wakeups:
    """Ask a background worker of this process to look for due work now, not at its next tick.

    Without a running worker (service tests, one-off commands) a wake-up does nothing: the work
    is in the database and whoever runs next takes it.
    """

    outbox: Callable[[], None] = _nothing
    refunds: Callable[[], None] = _nothing


@dataclass
class AppContext:
    settings: Settings
    clock: Clock
    translator: Translator
    session_factory: async_sessionmaker[AsyncSession]
    bot: Bot | None = None
    bot_username: str = "webinarpass_bot"
    refunders: RefunderRegistry = field(default_factory=RefunderRegistry)
    wake: Wakeups = field(default_factory=Wakeups)

    def transaction(self, *, autocommit: bool = False) -> Transaction:
        """A transaction of prebuilt statements without a session (``storage.direct``), on the
        sessions' engine: for the intake's and the outbox's own short writes. ``autocommit``:
        each statement commits on its own on PostgreSQL (see :class:`Transaction`)."""
        return Transaction(self.session_factory.kw["bind"], autocommit=autocommit)
