"""Importing a unique-links webinar's pool: pasted lines or an uploaded .txt/.csv file."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from bot.i18n import _, _n
from bot.services import Services
from bot.services.links import (
    MAX_UPLOAD_BYTES,
    ImportOutcome,
    LineIssue,
    LineProblem,
)
from bot.services.organizations import Membership
from handlers.admin.base import IsOrganizer, WebinarAction, reply
from handlers.admin.webinars import render_card

router = Router(name=__name__)
router.message.filter(IsOrganizer())
router.callback_query.filter(IsOrganizer())

SHOWN_PROBLEMS = 15


class LinkImport(StatesGroup):
    waiting = State()


def problem_text(problem: LineProblem) -> str:
    if problem.issue == LineIssue.DUPLICATE:
        return _("line {line}: repeats line {first}", line=problem.line, first=problem.first_line)
    if problem.issue == LineIssue.IN_POOL:
        return _("line {line}: already imported before", line=problem.line)
    if problem.issue == LineIssue.SEVERAL_LINKS:
        return _("line {line}: several links in one line", line=problem.line)
    return _("line {line}: not a link", line=problem.line)


def report(outcome: ImportOutcome) -> str:
    text = _n("✅ {n} link imported.", "✅ {n} links imported.", outcome.added)
    if outcome.problems:
        lines = [problem_text(p) for p in outcome.problems[:SHOWN_PROBLEMS]]
        hidden = len(outcome.problems) - SHOWN_PROBLEMS
        if hidden > 0:
            lines.append(_n("…and {n} more line", "…and {n} more lines", hidden))
        text += (
            "\n\n"
            + _n("{n} line skipped:", "{n} lines skipped:", len(outcome.problems))
            + "\n"
            + "\n".join(lines)
        )
    if outcome.assigned_waiting:
        text += "\n\n" + _n(
            "{n} participant who was waiting got a link.",
            "{n} participants who were waiting got a link.",
            outcome.assigned_waiting,
        )
    pool = outcome.pool
    return (
        text
        + "\n\n"
        + _(
            "Pool: {free} free, {assigned} given out, {revoked} revoked.",
            free=pool.free,
            assigned=pool.assigned,
            revoked=pool.revoked,
        )
    )


@router.callback_query(WebinarAction.filter(F.action == "links"))
async def start_import(
    query: CallbackQuery,
    callback_data: WebinarAction,
    membership: Membership,
    services: Services,
    state: FSMContext,
) -> None:
    """Ask for the links."""
    stats = await services.links.stats(membership.org.id, callback_data.id)
    await state.set_state(LinkImport.waiting)
    await state.set_data({"org_id": membership.org.id, "webinar_id": callback_data.id})
    await query.answer()
    await reply(
        query,
        _(
            "Send the participant links generated on your webinar platform: paste them, one a "
            "line, or upload a .txt or .csv file (one link a line, or name,link). "
            "Duplicates and lines without a link are skipped and listed.\n\n"
            "Pool now: {free} free, {assigned} given out, {revoked} revoked. /cancel stops.",
            free=stats.free,
            assigned=stats.assigned,
            revoked=stats.revoked,
        ),
    )


async def finish(
    message: Message, text: str, membership: Membership, services: Services, state: FSMContext
) -> None:
    data = await state.get_data()
    if data.get("org_id") != membership.org.id:
        await state.clear()
        await message.answer(_("This is no longer available."))
        return
    outcome = await services.links.import_links(membership.org.id, data["webinar_id"], text)
    await state.clear()
    await message.answer(report(outcome))
    card, markup = await render_card(membership, services, data["webinar_id"])
    await message.answer(card, reply_markup=markup)


@router.message(LinkImport.waiting, F.text, ~F.text.startswith("/"))
async def pasted(
    message: Message, membership: Membership, services: Services, state: FSMContext
) -> None:
    """Links pasted as text."""
    await finish(message, message.text or "", membership, services, state)


@router.message(LinkImport.waiting, F.document)
async def uploaded(
    message: Message, membership: Membership, services: Services, state: FSMContext, bot: Bot
) -> None:
    """Links in an uploaded file."""
    document = message.document
    assert document is not None
    if document.file_size and document.file_size > MAX_UPLOAD_BYTES:
        await message.answer(_("The file is too large: at most 1 MB per import."))
        return
    buffer = await bot.download(document.file_id)
    data = buffer.read() if buffer is not None else b""
    text = await services.links.read_upload(document.file_name, document.mime_type, data)
    await finish(message, text, membership, services, state)


@router.message(LinkImport.waiting, ~F.text.startswith("/"))
async def something_else(message: Message) -> None:
    """A photo, a sticker...: say what is expected."""
    await message.answer(_("Send the links as a .txt or .csv file, or paste them as text."))
