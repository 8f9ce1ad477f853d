"""`python -m bot demo` is the newcomer's first look: it must run end to end."""

from __future__ import annotations

import pytest

from bot.demo import run_demo


async def test_demo_runs_the_whole_product_and_prints_a_transcript(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run_demo(quiet=True) == 0
    transcript = capsys.readouterr().out
    assert "👤 María → /neworg" in transcript
    assert "?start=w_" in transcript
    assert "pre-checkout ok" in transcript
    assert "Pago recibido" in transcript  # the organization's language, not Luca's Italian
    assert "vende2026" in transcript
    assert ".ics (document)" in transcript
