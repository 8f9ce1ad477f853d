"""Sandbox Telegram Bot API server with simulated users, for tests, demos and benchmarks.

>>> from bot.sandbox import SandboxServer, SimUser, RateLimit, PaymentResult
"""

from bot.sandbox.ratelimit import RateLimit
from bot.sandbox.server import (
    ApiError,
    BotMessage,
    CallRecord,
    Charge,
    InviteLink,
    InvoiceInfo,
    RefundEvent,
    SandboxServer,
    ServerStats,
    SimBot,
    SimChat,
    StoredFile,
    UserProfile,
)
from bot.sandbox.transcript import Transcript
from bot.sandbox.users import CallbackAnswer, PaymentResult, SimUser

__all__ = [
    "ApiError",
    "BotMessage",
    "CallRecord",
    "CallbackAnswer",
    "Charge",
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
