"""Fixtures for the operations tests: logs captured through the bot's own logging set-up."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bot.logs import configure_logging
from tests.bot.test_redis_replicas import redis_url

__all__ = ["redis_url"]  # the fixture: Redis at TEST_REDIS_URL, or the test is skipped


class CapturedLog:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()


def _capture(fmt: str) -> Iterator[CapturedLog]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("INFO", fmt, stream=stream)
    try:
        yield CapturedLog(stream)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


@pytest.fixture
def text_log() -> Iterator[CapturedLog]:
    """The root logger writing plain text to a buffer, as ``python -m bot`` sets it up."""
    yield from _capture("text")


@pytest.fixture
def json_log() -> Iterator[CapturedLog]:
    yield from _capture("json")
