"""Unit tests of the sandbox's building blocks (no HTTP)."""

from __future__ import annotations

import struct

import pytest

from bot.sandbox import ApiError, RateLimit, SandboxServer
from bot.sandbox.api.files import image_size
from bot.sandbox.api.messages import html_plain_text
from bot.sandbox.ratelimit import RateLimiter
from bot.sandbox.transcript import Transcript, describe_message, format_amount, format_keyboard


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_per_chat_and_global_buckets() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        RateLimit(global_per_s=2, global_burst=3, per_chat_per_s=0.5, per_chat_burst=2), clock
    )
    assert limiter.acquire(1) is None
    assert limiter.acquire(1) is None
    assert limiter.acquire(1) == 2  # per-chat bucket empty, refills at 0.5/s
    assert limiter.acquire(2) is None
    assert limiter.acquire(3) == 1  # global bucket empty, refills at 2/s → 0.5 s → 1
    clock.now += 0.5
    assert limiter.acquire(3) is None
    clock.now += 2.0
    assert limiter.acquire(1) is None  # refused calls consumed nothing


def test_rate_limit_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimit(global_per_s=0)
    with pytest.raises(ValueError, match="at least 1"):
        RateLimit(per_chat_burst=0)


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("<b>a</b> &lt;3 <i>b</i>", "a <3 b"),
        ('<a href="https://x.org">x</a> <span class="tg-spoiler">s</span>', "x s"),
        ("<pre><code class='language-python'>x</code></pre>", "x"),
        ("no tags at all", "no tags at all"),
    ],
)
def test_html_valid(text: str, plain: str) -> None:
    assert html_plain_text(text) == plain


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("<p>x</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler"'),
    ],
)
def test_html_invalid(text: str, error: str) -> None:
    with pytest.raises(ApiError) as caught:
        html_plain_text(text)
    assert caught.value.code == 400
    assert caught.value.description == f"Bad Request: can't parse entities: {error}"


def test_image_size_sniffing() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + struct.pack(">II", 640, 480) + b"\x08"
    gif = b"GIF89a" + struct.pack("<HH", 10, 20) + b"\x00"
    jpeg = (
        b"\xff\xd8"
        + b"\xff\xe0\x00\x04ab"  # APP0, skipped
        + b"\xff\xc0\x00\x11\x08"
        + struct.pack(">HH", 300, 200)
        + b"\x03" * 12
    )
    assert image_size(png) == (640, 480)
    assert image_size(gif) == (10, 20)
    assert image_size(jpeg) == (200, 300)
    assert image_size(b"plain text") is None


def test_transcript_formatting() -> None:
    assert format_amount(100, "XTR") == "100 XTR"
    assert format_amount(150000, "RUB") == "1500.00 RUB"
    assert format_keyboard(
        {"inline_keyboard": [[{"text": "A"}, {"text": "B"}], [{"text": "C"}]]}
    ) == ("[A] [B] | [C]")
    assert format_keyboard({"remove_keyboard": True}) == "⌨ ✗"
    assert describe_message({"text": "two\nlines"}) == "two\n    lines"
    log = Transcript()
    log.add("a", 1)
    log.add("b", 2)
    log.add("c")
    assert log.render() == "a\nb\nc"
    assert log.render(chat_id=2) == "b"
    assert log.render(last=2) == "b\nc"
    assert len(log) == 3


def test_world_setup_errors() -> None:
    server = SandboxServer()
    with pytest.raises(ValueError, match="0 bots registered"):
        server.user(1)
    with pytest.raises(ValueError, match="malformed bot token"):
        server.add_bot("not-a-token", "x_bot")
    first = server.add_bot("1:A", "first_bot")
    server.add_bot("2:B", "second_bot")
    with pytest.raises(ValueError, match="2 bots registered"):
        server.user(1)
    alice = server.user(1, "Alice", bot="1:A")
    assert alice.bot is first
    assert server.user(1, bot=first) is alice
    assert server.user(1, bot="2:B") is not alice
    assert server.user(1, bot="2:B").first_name == "Alice"  # one profile, many bots
    with pytest.raises(ValueError, match="negative"):
        server.add_chat(5, "Not a group")
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
