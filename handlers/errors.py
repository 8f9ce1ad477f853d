"""Last-resort error handling, registered on the Dispatcher so it sees every router's errors:
log it, and tell the user something went wrong instead of leaving them in silence."""

from __future__ import annotations

import logging

from aiogram.types import ErrorEvent

from bot.context import AppContext
from bot.i18n import _
from bot.intake import Attempt
from bot.middlewares import answered_callback

log = logging.getLogger(__name__)


async def on_error(
    event: ErrorEvent,
    app: AppContext,
    locale: str | None = None,
    intake_attempt: Attempt | None = None,
) -> bool:
    """Log the failure and apologise to the user, once, in their language."""
    log.exception("update %s failed", event.update.update_id, exc_info=event.exception)
    if intake_attempt is not None and intake_attempt.number > 1:
        return True  # the intake retries the update; the user heard the apology the first time
    # aiogram runs error handlers outside the inner middlewares, so the locale the user middleware
    # found (it shares the data dict) is applied here explicitly.
    update = event.update
    with app.translator.context():
        if update.message is not None and update.message.successful_payment is not None:
            # "Try again" would make a buyer pay twice: their charge is stored and the intake
            # finishes the ticket on its next attempt.
            text = _(
                "Your payment has arrived and is safe. Your ticket is on its way: please do "
                "not pay again.",
                locale=locale or app.settings.default_locale,
            )
        else:
            text = _(
                "Sorry, something went wrong on my side. Please try again in a minute.",
                locale=locale or app.settings.default_locale,
            )
    try:
        query = update.callback_query
        if update.message is not None:
            await update.message.answer(text)
        elif query is not None and answered_callback.get() == query.id and query.bot:
            # The handler answered the button already: Telegram would refuse an alert now.
            await query.bot.send_message(query.from_user.id, text)
        elif query is not None:
            await query.answer(text, show_alert=True)
    except Exception:  # the apology itself must never raise
        log.warning("could not tell the user about the failure", exc_info=True)
    return True
