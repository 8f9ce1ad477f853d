"""Reconciliation at the service level: real database, the sandbox's Stars, localstripe and the
fake YooKassa, the real refund worker. Charges that never reached the bot are found, recorded
and served; refunds made at a provider are recorded; a second run and a concurrent run change
nothing; a provider outage is reported, never fatal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any

import stripe
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import FakeClock
from bot.context import AppContext
from bot.jobs import reconcile_payments
from bot.sandbox import SandboxServer
from bot.sandbox.yookassa import FakeYooKassa
from bot.services import Services
from bot.services.reconcile import ReconcileReport, reconciled_charge_id
from bot.services.refund_worker import RefundWorker
from storage.enums import (
    OutboxKind,
    PaymentMethod,
    PaymentStatus,
    RefundReason,
    TicketStatus,
)
from storage.models import (
    JobLease,
    Order,
    OutboxMessage,
    Payment,
    Refund,
    Ticket,
    Webinar,
)
from tests.factories import make_org, make_user, make_webinar
from tests.reconcile.conftest import (
    OWNER_ID,
    SECOND_OWNER_ID,
    all_rows,
    lost_stars_payment,
    stripe_charge,
)

ANN, BOB, CAT = 2001, 2002, 2003


async def shop(session: AsyncSession, clock: FakeClock) -> Webinar:
    """An organization selling one webinar in Stars and by card, three buyers, two owners (the
    second reads Russian)."""
    await make_user(session, SECOND_OWNER_ID, first_name="Second", language_code="ru")
    org = await make_org(session, OWNER_ID, accept_stripe=True, accept_yookassa=True)
    webinar = await make_webinar(
        session, org, starts_at=clock.now() + timedelta(days=10), price_stars=100, price_minor=1999
    )
    for buyer in (ANN, BOB, CAT):
        await make_user(session, buyer, first_name=f"Buyer{buyer}")
    await session.commit()
    return webinar


async def held_order(app: AppContext, user_id: int, webinar: Webinar, method: PaymentMethod):  # type: ignore[no-untyped-def]
    """An invoice and an accepted pre-checkout, as the bot makes them."""
    async with app.session_factory() as session:
        invoice = await Services(session, app).sales.create_invoice(user_id, webinar.id, method)
    order = invoice.order
    assert order is not None, invoice.refusal
    async with app.session_factory() as session:
        answer = await Services(session, app).sales.pre_checkout(
            user_id=user_id,
            payload=order.token,
            total_amount=order.amount_minor,
            currency=order.currency,
        )
    assert answer.ok, answer.error_message
    return order


async def reconcile(app: AppContext, **kwargs: Any) -> ReconcileReport:
    async with app.session_factory() as session:
        return await Services(session, app).reconcile.run(**kwargs)


def by_method(report: ReconcileReport) -> dict[str, tuple[int, int, int, int, int]]:
    """Per provider: checked, missing, delivered, refunded, refunds recorded."""
    return {
        str(p.method): (p.checked, p.missing, p.delivered, p.refunded, p.refunds_recorded)
        for p in report.providers
    }


async def counts(session: AsyncSession) -> dict[str, int]:
    found = {}
    for model in (Payment, Refund, Ticket, OutboxMessage, Order):
        found[model.__tablename__] = int(await session.scalar(select(func.count(model.id))) or 0)
    found["refunded"] = int(
        await session.scalar(
            select(func.count(Payment.id)).where(Payment.status == PaymentStatus.REFUNDED)
        )
        or 0
    )
    await session.commit()
    return found


async def owner_notices(session: AsyncSession) -> dict[int, list[str]]:
    rows = await all_rows(
        session,
        OutboxMessage,
        OutboxMessage.kind == OutboxKind.NOTICE,
        OutboxMessage.chat_id.in_([OWNER_ID, SECOND_OWNER_ID]),
    )
    found: dict[int, list[str]] = {}
    for row in rows:
        found.setdefault(row.chat_id, []).append(row.payload["text"])
    return found


async def test_charges_that_never_reached_the_bot_are_recorded_and_served_once(
    session: AsyncSession,
    app: AppContext,
    clock: FakeClock,
    sandbox: SandboxServer,
    stripe_client: stripe.StripeClient,
    dated_yookassa: FakeYooKassa,
) -> None:
    webinar = await shop(session, clock)
    ann = sandbox.user(ANN, "Ann")
    await ann.start()
    stars_order = await held_order(app, ANN, webinar, PaymentMethod.STARS)
    stars_charge = await lost_stars_payment(app.bot, ann, stars_order)  # type: ignore[arg-type]
    # A Stripe charge whose metadata names the invoice and the buyer: it can be served.
    card_order = await held_order(app, BOB, webinar, PaymentMethod.STRIPE)
    known_card = await stripe_charge(
        stripe_client,
        card_order.amount_minor,
        metadata={"invoice_payload": card_order.token, "telegram_user_id": str(BOB)},
    )
    # Card charges nobody can tell the order or the buyer of: recorded and refunded.
    anonymous_card = await stripe_charge(stripe_client, 1500, "eur")
    anonymous_yookassa = dated_yookassa.add_payment(99000, "RUB")["id"]
    clock.advance(hours=2)  # past the settle time: the live path had its chance

    report = await reconcile(app)

    assert not report.busy
    assert by_method(report) == {
        "stars": (1, 1, 1, 0, 0),
        "stripe": (2, 2, 1, 1, 0),
        "yookassa": (1, 1, 0, 1, 0),
    }
    assert await RefundWorker(app).run_until_idle() == 2  # the two unmatched refunds
    payments = {p.telegram_payment_charge_id: p for p in await all_rows(session, Payment)}
    assert set(payments) == {
        stars_charge,
        reconciled_charge_id(PaymentMethod.STRIPE, known_card),
        reconciled_charge_id(PaymentMethod.STRIPE, anonymous_card),
        reconciled_charge_id(PaymentMethod.YOOKASSA, anonymous_yookassa),
    }
    stars_payment = payments[stars_charge]
    assert (stars_payment.order_id, stars_payment.user_id, stars_payment.amount_minor) == (
        stars_order.id,
        ANN,
        100,
    )
    card = payments[reconciled_charge_id(PaymentMethod.STRIPE, known_card)]
    assert (card.order_id, card.provider_payment_charge_id, card.method) == (
        card_order.id,
        known_card,
        PaymentMethod.STRIPE,
    )
    tickets = {t.payment_id: t for t in await all_rows(session, Ticket)}
    assert set(tickets) == {stars_payment.id, card.id}
    assert {t.status for t in tickets.values()} == {TicketStatus.ACTIVE}
    access = await all_rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.ACCESS)
    assert sorted(row.chat_id for row in access) == [ANN, BOB]

    for charge_id, method in (
        (reconciled_charge_id(PaymentMethod.STRIPE, anonymous_card), PaymentMethod.STRIPE),
        (reconciled_charge_id(PaymentMethod.YOOKASSA, anonymous_yookassa), PaymentMethod.YOOKASSA),
    ):
        unmatched = payments[charge_id]
        assert (unmatched.order_id, unmatched.user_id, unmatched.method) == (None, 0, method)
        [refund] = await all_rows(session, Refund, Refund.payment_id == unmatched.id)
        assert refund.reason == RefundReason.UNMATCHED
        assert (await all_rows(session, Payment, Payment.id == unmatched.id))[0].status == (
            PaymentStatus.REFUNDED
        )
    assert (await stripe_client.v1.charges.retrieve_async(anonymous_card)).refunded
    assert dated_yookassa.refunds_for(anonymous_yookassa)
    # Nobody to tell about the anonymous charges but the owners: no message to a chat 0.
    assert await all_rows(session, OutboxMessage, OutboxMessage.chat_id == 0) == []

    notices = await owner_notices(session)
    assert set(notices) == {OWNER_ID, SECOND_OWNER_ID}
    [english], [russian] = notices[OWNER_ID], notices[SECOND_OWNER_ID]
    assert "Reconciliation with the payment providers" in english
    assert "<b>Stripe</b>: checked 2, missing 2 (recorded: delivered 1, refunded 1)" in english
    assert "Сверка" in russian

    # The same window again: the providers now show the refunds, we already have them.
    before = await counts(session)
    again = await reconcile(app)
    assert by_method(again) == {
        "stars": (1, 0, 0, 0, 0),
        "stripe": (2, 0, 0, 0, 0),
        "yookassa": (1, 0, 0, 0, 0),
    }
    assert not again.notable
    assert await counts(session) == before
    assert await RefundWorker(app).run_until_idle() == 0


async def test_a_refund_made_at_the_provider_is_recorded_and_revokes_its_ticket(
    session: AsyncSession,
    app: AppContext,
    clock: FakeClock,
    sandbox: SandboxServer,
    stripe_client: stripe.StripeClient,
) -> None:
    webinar = await shop(session, clock)
    # Two payments the bot did record: a Stripe one and a Stars one.
    card_order = await held_order(app, BOB, webinar, PaymentMethod.STRIPE)
    card_charge = await stripe_charge(stripe_client, card_order.amount_minor)
    async with app.session_factory() as s:
        paid = await Services(s, app).purchases.complete_payment(
            user_id=BOB,
            payload=card_order.token,
            total_amount=card_order.amount_minor,
            currency=card_order.currency,
            telegram_charge_id="tg-card-1",
            provider_charge_id=card_charge,
        )
    assert paid.ticket is not None
    ann = sandbox.user(ANN, "Ann")
    await ann.start()
    stars_order = await held_order(app, ANN, webinar, PaymentMethod.STARS)
    stars_charge = await lost_stars_payment(app.bot, ann, stars_order)  # type: ignore[arg-type]
    async with app.session_factory() as s:
        stars_paid = await Services(s, app).purchases.complete_payment(
            user_id=ANN,
            payload=stars_order.token,
            total_amount=100,
            currency="XTR",
            telegram_charge_id=stars_charge,
        )
    assert stars_paid.ticket is not None
    # Refunded outside the bot: Stripe's dashboard, Telegram support (whose refunded_payment
    # update was lost).
    stripe_refund = await stripe_client.v1.refunds.create_async(params={"charge": card_charge})
    assert await app.bot.refund_star_payment(ANN, stars_charge)  # type: ignore[union-attr]
    clock.advance(hours=2)

    report = await reconcile(app)

    assert by_method(report)["stripe"] == (1, 0, 0, 0, 1)
    assert by_method(report)["stars"] == (1, 0, 0, 0, 1)
    for ticket_id, buyer in ((paid.ticket.id, BOB), (stars_paid.ticket.id, ANN)):
        [ticket] = await all_rows(session, Ticket, Ticket.id == ticket_id)
        assert ticket.status == TicketStatus.REFUNDED
        [payment] = await all_rows(session, Payment, Payment.id == ticket.payment_id)
        assert payment.status == PaymentStatus.REFUNDED
        [refund] = await all_rows(session, Refund, Refund.payment_id == payment.id)
        assert refund.reason == RefundReason.PROVIDER
        [told] = await all_rows(
            session, OutboxMessage, OutboxMessage.dedupe_key == f"revoked:{ticket_id}"
        )
        assert told.chat_id == buyer
        assert "refunded" in told.payload["text"]
    [card_refund] = await all_rows(session, Refund, Refund.payment_id == paid.ticket.payment_id)
    assert card_refund.provider_refund_id == stripe_refund.id
    # The refunds were the providers' own: the bot asked for none.
    assert await RefundWorker(app).run_until_idle() == 0

    before = await counts(session)
    again = await reconcile(app)
    assert not again.notable
    assert await counts(session) == before


async def test_a_provider_outage_is_reported_and_the_others_are_reconciled(
    session: AsyncSession,
    app: AppContext,
    clock: FakeClock,
    sandbox: SandboxServer,
    stripe_client: stripe.StripeClient,
    dated_yookassa: FakeYooKassa,
) -> None:
    await shop(session, clock)
    # Nothing to find: the hourly job tells nobody.
    quiet = await reconcile_payments(app)
    assert not quiet.notable
    assert await owner_notices(session) == {}

    await stripe_charge(stripe_client, 700)
    clock.advance(hours=2)
    sandbox.faults.fail_next("getStarTransactions", status=502)
    dated_yookassa.fail_next(500)

    report = await reconcile_payments(app)

    errors = {str(p.method): p.error for p in report.providers}
    assert errors["stripe"] is None
    assert errors["stars"]
    assert errors["yookassa"]
    assert by_method(report)["stripe"] == (1, 1, 0, 1, 0)
    notices = await owner_notices(session)
    [english] = notices[OWNER_ID]
    assert "⚠️ Telegram Stars could not be checked completely" in english
    assert "⚠️ YooKassa could not be checked completely" in english
    [russian] = notices[SECOND_OWNER_ID]
    assert "YooKassa" in russian
    assert "Сверка" in russian
    # The lease was given back despite the errors: the next run goes ahead.
    [lease] = await all_rows(session, JobLease)
    assert lease.lease_until <= clock.now()
    assert not (await reconcile_payments(app)).busy


async def test_two_runs_at_once_record_everything_once(
    session: AsyncSession,
    app: AppContext,
    clock: FakeClock,
    sandbox: SandboxServer,
    stripe_client: stripe.StripeClient,
) -> None:
    webinar = await shop(session, clock)
    ann = sandbox.user(ANN, "Ann")
    await ann.start()
    order = await held_order(app, ANN, webinar, PaymentMethod.STARS)
    await lost_stars_payment(app.bot, ann, order)  # type: ignore[arg-type]
    await stripe_charge(stripe_client, 1200)
    clock.advance(hours=2)

    first, second = await asyncio.gather(reconcile(app), reconcile(app))

    assert sorted([first.busy, second.busy]) == [False, True]
    done = second if first.busy else first
    assert by_method(done)["stars"] == (1, 1, 1, 0, 0)
    assert by_method(done)["stripe"] == (1, 1, 0, 1, 0)
    found = await counts(session)
    assert (found["payments"], found["tickets"], found["refunds"]) == (2, 1, 1)
    # Once the lease is free again, a run finds everything in place.
    assert not (await reconcile(app)).notable


async def test_a_late_update_of_a_reconciled_card_charge_is_a_replay(
    session: AsyncSession, app: AppContext, clock: FakeClock, stripe_client: stripe.StripeClient
) -> None:
    webinar = await shop(session, clock)
    order = await held_order(app, BOB, webinar, PaymentMethod.STRIPE)
    charge = await stripe_charge(
        stripe_client,
        order.amount_minor,
        metadata={"invoice_payload": order.token, "telegram_user_id": str(BOB)},
    )
    clock.advance(hours=2)
    assert by_method(await reconcile(app))["stripe"] == (1, 1, 1, 0, 0)

    # Telegram's successful_payment finally arrives, with Telegram's own charge id.
    async with app.session_factory() as s:
        late = await Services(s, app).purchases.complete_payment(
            user_id=BOB,
            payload=order.token,
            total_amount=order.amount_minor,
            currency=order.currency,
            telegram_charge_id="tg-late-1",
            provider_charge_id=charge,
        )

    assert late.result == "replay"
    found = await counts(session)
    assert (found["payments"], found["tickets"], found["refunds"]) == (1, 1, 0)


async def test_report_mode_leaves_unknown_card_charges_alone_and_tells_once_a_day(
    session: AsyncSession,
    app: AppContext,
    clock: FakeClock,
    stripe_client: stripe.StripeClient,
    dated_yookassa: FakeYooKassa,
) -> None:
    """With ``RECONCILE_UNKNOWN_CARD_CHARGES=report`` (provider accounts shared with other
    sales) a card charge that names no invoice is another shop's as likely as a lost payment:
    it is named to the owners, never recorded or refunded. The hourly run says the same thing at
    most once a day; anything it fixes is told at once."""
    app.settings = app.settings.model_copy(update={"reconcile_unknown_card_charges": "report"})
    webinar = await shop(session, clock)
    foreign = await stripe_charge(stripe_client, 1500, "eur")
    clock.advance(hours=2)
    if (clock.now() + timedelta(hours=1)).date() != clock.now().date():
        # The clock started at the real time (localstripe's): the hour this test moves on below
        # must not cross midnight, or the next day's report is rightly told again.
        clock.set(datetime.combine(clock.now().date() + timedelta(days=1), time(), UTC))

    report = await reconcile_payments(app)

    [stripe_report] = [p for p in report.providers if p.method == PaymentMethod.STRIPE]
    assert stripe_report.left_alone == [f"{foreign} (1500 EUR)"]
    assert (stripe_report.missing, stripe_report.refunded) == (0, 0)
    assert await all_rows(session, Payment) == []
    assert await all_rows(session, Refund) == []
    assert not (await stripe_client.v1.charges.retrieve_async(foreign)).refunded
    notices = await owner_notices(session)
    [english] = notices[OWNER_ID]
    assert "⚠️ Stripe: 1 charge matches no order of this bot and was left alone" in english
    assert foreign in english
    [russian] = notices[SECOND_OWNER_ID]
    assert foreign in russian
    assert "оставлен" in russian

    # An hour later the same finding: nobody is told again that day.
    clock.advance(hours=1)
    assert (await reconcile_payments(app)).notable
    assert {owner: len(texts) for owner, texts in (await owner_notices(session)).items()} == {
        OWNER_ID: 1,
        SECOND_OWNER_ID: 1,
    }
    # A charge that names its invoice and buyer is still recorded and served, and told at once.
    order = await held_order(app, BOB, webinar, PaymentMethod.STRIPE)
    await stripe_charge(
        stripe_client,
        order.amount_minor,
        metadata={"invoice_payload": order.token, "telegram_user_id": str(BOB)},
    )
    clock.advance(hours=2)
    fixed = await reconcile_payments(app)
    assert by_method(fixed)["stripe"] == (2, 1, 1, 0, 0)
    assert {owner: len(texts) for owner, texts in (await owner_notices(session)).items()} == {
        OWNER_ID: 2,
        SECOND_OWNER_ID: 2,
    }
    # The next day the charge left alone is named again, once.
    clock.advance(days=1)
    await reconcile_payments(app)
    assert {owner: len(texts) for owner, texts in (await owner_notices(session)).items()} == {
        OWNER_ID: 3,
        SECOND_OWNER_ID: 3,
    }
