"""Sandbox Telegram Bot API server with simulated users, for tests, demos and benchmarks.

Layout: ``core/`` (state, method routing, params, error shapes), ``api/`` (one module per
area of the Bot API: updates, messages, files, callbacks and keyboards, payments and Stars,
chats and invite links, the bot's profile, limits and faults), ``server.py`` (HTTP and
inspection), ``users.py`` (simulated users, written against ``core.world.World`` only),
``transcript.py``, and the payment provider fakes ``stripe.py`` and ``yookassa.py``.

>>> from bot.sandbox import SandboxServer, SimUser, RateLimit, PaymentResult
"""

from bot.sandbox.core.errors import ApiError
from bot.sandbox.core.faults import Faults
from bot.sandbox.core.host import CardProcessor
from bot.sandbox.core.state import (
    BotMessage,
    CallbackAnswer,
    CallRecord,
    Charge,
    InviteLink,
    InvoiceInfo,
    PaymentResult,
    RefundEvent,
    ServerStats,
    SimBot,
    SimChat,
    StoredFile,
    UserProfile,
)
from bot.sandbox.ratelimit import RateLimit
from bot.sandbox.server import SandboxServer
from bot.sandbox.transcript import Transcript
from bot.sandbox.users import SimUser

__all__ = [
    "ApiError",
    "BotMessage",
    "CallRecord",
    "CallbackAnswer",
    "CardProcessor",
    "Charge",
    "Faults",
    "InviteLink",
    "InvoiceInfo",
    "PaymentResult",
    "RateLimit",
    "RefundEvent",
    "SandboxServer",
    "ServerStats",
    "SimBot",
    "SimChat",
    "SimUser",
    "StoredFile",
    "Transcript",
    "UserProfile",
]
