"""Fixtures for the organizer admin tests."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.services import Services


@pytest.fixture
def services(session: AsyncSession, app_context: AppContext) -> Services:
    return Services(session, app_context)
