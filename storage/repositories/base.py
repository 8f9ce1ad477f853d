from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession


class Repository:
    """Base for repositories: shares the caller's session (and so its transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name
