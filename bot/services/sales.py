"""Selling: webinar offers, orders and invoices, pre-checkout seat holds, payments and tickets.

The card, the invoice and the pre-checkout of a purchase (DESIGN.md, "An order's life"):

- The invoice payload is the order's opaque token. Amount, currency, owner and the webinar's
  state are checked against the order at pre-checkout and again at payment.
- Seats: active tickets + live holds <= capacity. Every decision that takes a seat locks the
  webinar row first on PostgreSQL (SQLite has a single writer), in a mode that lets one such
  decision run at a time, then counts, in a later statement than the one that waited for the
  lock (that one's snapshot predates the wait). A payment whose live hold becomes its ticket
  takes no seat: its weaker lock lets it run beside the pre-checkouts and other payments (the
  lock modes: :mod:`storage.repositories.sales`).

The successful payment that follows is :mod:`bot.services.purchases`; the states an order goes
through are in :mod:`bot.services.orders`.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.formatting import STARS, local_datetime
from bot.i18n import _
from bot.services import orders
from bot.services.base import Service
from bot.services.users import Touch, UserService
from payments import ReceiptSpec, build_invoice
from payments.base import CURRENCY_EXPONENTS
from storage.enums import (
    OrderStatus,
    PaymentMethod,
    Product,
    WebinarStatus,
)
from storage.models import Order, Organization, Webinar
from storage.repositories.sales import (
    CheckoutRepository,
    HoldOutcome,
    OfferRepository,
    SalesRepository,
)

log = logging.getLogger(__name__)

# Reads of a checkout whose order or webinar changed before its hold, before it gives up.
_CHECKOUT_TRIES = 3

CARD_CURRENCIES = frozenset(code for code in CURRENCY_EXPONENTS if code != STARS)


class SaleState(StrEnum):
    ON_SALE = "on_sale"
    SOLD_OUT = "sold_out"
    STARTED = "started"
    CANCELLED = "cancelled"
    NOT_ON_SALE = "not_on_sale"  # a draft


@dataclass(frozen=True)
class Price:
    method: PaymentMethod
    amount_minor: int
    currency: str


@dataclass
class Offer:
    """What the webinar card shows to one buyer."""

    webinar: Webinar
    org: Organization
    state: SaleState
    prices: list[Price]
    seats_left: int | None  # None: unlimited
    own_ticket_id: int | None = None  # the viewer's active ticket for this webinar
    # After the event: the recording's prices, when it is on sale (empty otherwise).
    recording_prices: list[Price] = field(default_factory=list)
    viewer_timezone: str | None = None  # the buyer's own zone (/timezone), if they set one


@dataclass
class InvoiceResult:
    """``send_invoice`` keyword arguments, or a refusal already in the organization's language."""

    invoice: dict[str, Any] | None = None
    refusal: str | None = None
    order: Order | None = None


@dataclass(frozen=True)
class CheckoutAnswer:
    ok: bool
    error_message: str | None = None


class SalesService(Service):
    def __init__(self, session: AsyncSession, app: AppContext, *, users: UserService) -> None:
        super().__init__(session, app)
        self.users = users

    @property
    def repo(self) -> SalesRepository:
        return SalesRepository(self.session)

    # -- the card ------------------------------------------------------------------------------

    def prices(
        self, webinar: Webinar, org: Organization, product: Product = Product.SEAT
    ) -> list[Price]:
        """Accepted methods with a price, in a stable order (Stars first)."""
        prices: list[Price] = []
        settings = self.settings
        if product == Product.RECORDING:
            stars, minor = webinar.recording_price_stars, webinar.recording_price_minor
        else:
            stars, minor = webinar.price_stars, webinar.price_minor
        if org.accept_stars and stars:
            prices.append(Price(PaymentMethod.STARS, stars, STARS))
        card_ok = bool(minor) and webinar.currency in CARD_CURRENCIES
        if card_ok and org.accept_stripe and settings.stripe_provider_token:
            prices.append(Price(PaymentMethod.STRIPE, minor or 0, webinar.currency))
        if card_ok and org.accept_yookassa and settings.yookassa_provider_token:
            prices.append(Price(PaymentMethod.YOOKASSA, minor or 0, webinar.currency))
        return prices

    def recording_refusal(self, webinar: Webinar, lang: str) -> str | None:
        """Why this webinar's recording cannot be bought now, or ``None``."""
        if webinar.status == WebinarStatus.CANCELLED:
            return _("This webinar has been cancelled.", locale=lang)
        on_sale = webinar.recording_price_stars or webinar.recording_price_minor
        if not on_sale or not webinar.recording_available(self.clock.now()):
            return _("The recording of this webinar is not for sale.", locale=lang)
        return None

    def refusal(self, webinar: Webinar, product: Product, lang: str) -> str | None:
        if product == Product.RECORDING:
            return self.recording_refusal(webinar, lang)
        return self.sale_refusal(webinar, lang)

    def sale_state(self, webinar: Webinar, seats_left: int | None) -> SaleState:
        if webinar.status == WebinarStatus.CANCELLED:
            return SaleState.CANCELLED
        if webinar.status != WebinarStatus.PUBLISHED:
            return SaleState.NOT_ON_SALE
        if webinar.starts_at <= self.clock.now():
            return SaleState.STARTED
        if seats_left is not None and seats_left <= 0:
            return SaleState.SOLD_OUT
        return SaleState.ON_SALE

    async def offer(self, code: str, user_id: int, *, touch: Touch | None = None) -> Offer | None:
        """The card of the webinar behind a deep-link code, or ``None`` if there is none.

        One statement: the webinar, its organization, the seats taken and the viewer's ticket;
        with ``touch`` (the viewer, left by the user middleware), the viewer is stored first, in
        the same transaction (see :meth:`Service.unit`).
        """
        async with self.unit() as on:
            if touch is not None:
                await self.users.store(on, touch)
            card = await OfferRepository(on).card(code, user_id, self.clock.now()) if code else None
        if card is None:
            return None
        webinar, org = card.webinar, card.org
        seats_left = (
            None
            if webinar.capacity is None or card.seats_taken is None
            else max(webinar.capacity - card.seats_taken, 0)
        )
        state = self.sale_state(webinar, seats_left)
        recording: list[Price] = []
        if state == SaleState.STARTED and self.recording_refusal(webinar, org.language) is None:
            recording = self.prices(webinar, org, Product.RECORDING)
        return Offer(
            webinar=webinar,
            org=org,
            state=state,
            prices=self.prices(webinar, org),
            seats_left=seats_left,
            own_ticket_id=card.own_ticket_id,
            recording_prices=recording,
            viewer_timezone=card.viewer_timezone,
        )

    # -- invoices ------------------------------------------------------------------------------

    async def create_invoice(
        self,
        user_id: int,
        webinar_id: int,
        method: PaymentMethod,
        product: Product = Product.SEAT,
        *,
        touch: Touch | None = None,
    ) -> InvoiceResult:
        """Open (or reuse) an order and build its invoice; the payload is the order's token.

        ``product`` is a seat of the live session, or the recording (sold after the event).
        One read (the webinar, its organization, the buyer's ticket and reusable order), and an
        insert when there is no order to reuse; with ``touch`` (the buyer, left by the user
        middleware), the buyer is stored first, in the same transaction (see
        :meth:`Service.unit`). Each statement stands on its own: two presses at once may open
        two orders, as they could in one transaction, and either invoice can be paid."""
        async with self.unit() as on:
            if touch is not None:
                await self.users.store(on, touch)
            return await self._invoice(
                OfferRepository(on),
                user_id,
                webinar_id,
                method,
                product,
                viewer_locale=touch.locale if touch is not None else None,
            )

    async def _invoice(
        self,
        repo: OfferRepository,
        user_id: int,
        webinar_id: int,
        method: PaymentMethod,
        product: Product,
        *,
        viewer_locale: str | None,
    ) -> InvoiceResult:
        purchase = await repo.purchase(webinar_id, user_id, method, product)
        if purchase is None:
            # No organization to speak for: the buyer's own language.
            return InvoiceResult(refusal=_("This webinar no longer exists.", locale=viewer_locale))
        webinar, org = purchase.webinar, purchase.org
        lang = org.language
        refusal = self.refusal(webinar, product, lang)
        if refusal is None and purchase.own_ticket_id is not None:
            refusal = _(
                "You already have a ticket for this webinar. /my shows your access.", locale=lang
            )
        prices = self.prices(webinar, org, product)
        price = next((p for p in prices if p.method == method), None)
        if refusal is None and price is None:
            refusal = _("This payment method is not available for this webinar.", locale=lang)
        if refusal is not None or price is None:
            return InvoiceResult(refusal=refusal)

        order = purchase.open_order
        if order is None or (order.amount_minor, order.currency) != (
            price.amount_minor,
            price.currency,
        ):
            # No order of this purchase to reuse, or one at an older price: a new one.
            now = self.clock.now()
            order = await repo.insert_order(
                Order(
                    token=secrets.token_urlsafe(24),
                    webinar_id=webinar.id,
                    user_id=user_id,
                    method=method,
                    product=product,
                    amount_minor=price.amount_minor,
                    currency=price.currency,
                    status=OrderStatus.CREATED,
                    hold_expires_at=None,
                    paid_at=None,
                    updated_at=None,
                    created_at=now,
                )
            )
        invoice = self._invoice_kwargs(order, webinar, org, chat_id=user_id)
        return InvoiceResult(invoice=invoice, order=order)

    def _invoice_kwargs(
        self, order: Order, webinar: Webinar, org: Organization, *, chat_id: int
    ) -> dict[str, Any]:
        lang = org.language
        method = PaymentMethod(order.method)
        provider_token: str | None = None
        need_email = False
        receipt: ReceiptSpec | None = None
        if method == PaymentMethod.STRIPE and self.settings.stripe_provider_token:
            provider_token = self.settings.stripe_provider_token.get_secret_value()
        elif method == PaymentMethod.YOOKASSA and self.settings.yookassa_provider_token:
            provider_token = self.settings.yookassa_provider_token.get_secret_value()
            # A fiscal receipt is e-mailed by YooKassa: it needs the buyer's address.
            need_email = org.yookassa_need_email or org.yookassa_receipt
            if org.yookassa_receipt:
                receipt = ReceiptSpec(description=webinar.title, vat_code=org.yookassa_vat_code)
        starts = _local(webinar, org)
        description = _(
            "{organization} · {starts}", locale=lang, organization=org.name, starts=starts
        )
        if webinar.description:
            description = f"{description}\n{webinar.description}"
        recording = order.product == Product.RECORDING
        if recording:
            description = _("Recording · {description}", locale=lang, description=description)
        return build_invoice(
            method,
            chat_id=chat_id,
            title=webinar.title,
            description=description,
            payload=order.token,
            amount_minor=order.amount_minor,
            currency=order.currency,
            provider_token=provider_token,
            label=_("Webinar recording", locale=lang)
            if recording
            else _("Webinar ticket", locale=lang),
            need_email=need_email,
            receipt=receipt,
            allowed_currencies=None if method == PaymentMethod.STARS else CARD_CURRENCIES,
        )

    def sale_refusal(self, webinar: Webinar, lang: str) -> str | None:
        """Why this webinar cannot be bought now (ignoring seats), or ``None``."""
        if webinar.status == WebinarStatus.CANCELLED:
            return _("This webinar has been cancelled.", locale=lang)
        if webinar.status != WebinarStatus.PUBLISHED:
            return _("This webinar is not on sale yet.", locale=lang)
        if webinar.starts_at <= self.clock.now():
            return _("This webinar has already started: sales are closed.", locale=lang)
        return None

    # -- pre-checkout --------------------------------------------------------------------------

    async def pre_checkout(
        self, *, user_id: int, payload: str, total_amount: int, currency: str
    ) -> CheckoutAnswer:
        """Accept the checkout only if the order is valid and a seat hold could be written.

        A transaction of its own without the update's session (``storage.direct``): the read,
        then the hold, each one statement outside a transaction on PostgreSQL, so no lock is
        held across a round trip (see :class:`CheckoutRepository`). A refusal writes nothing.
        """
        if self.session.in_transaction():
            await self.session.commit()  # the user's profile: SQLite's one connection is needed
        for _attempt in range(_CHECKOUT_TRIES):
            async with self.app.transaction(autocommit=True) as transaction:
                answer = await self._pre_checkout(
                    CheckoutRepository(transaction), user_id, payload, total_amount, currency
                )
            if answer is not None:
                return answer
        # The order or its webinar changed between the read and the hold at every try.
        msg = f"the checkout of {payload!r} found its order changing {_CHECKOUT_TRIES} times"
        raise RuntimeError(msg)

    async def _pre_checkout(
        self,
        checkout: CheckoutRepository,
        user_id: int,
        payload: str,
        total_amount: int,
        currency: str,
    ) -> CheckoutAnswer | None:
        """The answer, or None when the order or its webinar changed between the read and the
        hold (nothing was written: read again)."""
        invalid = CheckoutAnswer(
            False, _("This invoice is not valid. Please open the webinar link again.")
        )
        found = await checkout.order_context(payload) if payload else None
        if found is None or found.order.user_id != user_id:
            return invalid
        order, webinar, org = found.order, found.webinar, found.org
        lang = org.language
        if order.status == OrderStatus.PAID:
            return CheckoutAnswer(
                False, _("This order is already paid. /my shows your access.", locale=lang)
            )
        if order.status not in (OrderStatus.CREATED, OrderStatus.HELD, OrderStatus.EXPIRED):
            return CheckoutAnswer(
                False,
                _(
                    "This invoice is no longer valid. Please open the webinar link again.",
                    locale=lang,
                ),
            )
        product = Product(order.product)
        refusal = self.refusal(webinar, product, lang)
        if refusal is not None:
            return CheckoutAnswer(False, refusal)
        if (total_amount, currency) != (order.amount_minor, order.currency):
            # Not what the invoice said: a tampered or foreign checkout, not a price change.
            log.warning("pre-checkout of order %s does not match its invoice", order.id)
            return CheckoutAnswer(
                False,
                _("This invoice is not valid. Please open the webinar link again.", locale=lang),
            )
        prices = self.prices(webinar, org, product)
        price = next((p for p in prices if p.method == order.method), None)
        if price is None or (price.amount_minor, price.currency) != (
            order.amount_minor,
            order.currency,
        ):
            return CheckoutAnswer(
                False,
                _(
                    "The price of this webinar has changed. "
                    "Please open the webinar link again for a new invoice.",
                    locale=lang,
                ),
            )
        if product == Product.RECORDING:
            # No seat to hold: the order stays open until its charge arrives.
            if found.own_ticket_id is not None:
                return _has_ticket(lang)
            return CheckoutAnswer(True)
        now = self.clock.now()
        hold = await checkout.hold_seat(
            found, until=orders.hold_until(now, self.settings.seat_hold_minutes), now=now
        )
        if hold.outcome == HoldOutcome.STALE:
            return None
        if hold.outcome == HoldOutcome.HAS_TICKET:
            return _has_ticket(lang)
        if hold.outcome == HoldOutcome.FULL:
            return CheckoutAnswer(
                False, _("Sorry, all seats of this webinar are taken.", locale=lang)
            )
        return CheckoutAnswer(True)

    async def expire_holds(self) -> int:
        """Mark lapsed holds expired (they already stopped counting when they lapsed)."""
        expired = await self.repo.expire_holds(self.clock.now())
        await self.session.commit()
        return expired

    async def buyer_org(self, user_id: int) -> Organization | None:
        """The organization the user bought from last (for /paysupport and /terms)."""
        org = await self.repo.latest_org_of_buyer(user_id)
        await self.session.commit()
        return org


def _has_ticket(lang: str) -> CheckoutAnswer:
    return CheckoutAnswer(
        False,
        _("You already have a ticket for this webinar. /my shows your access.", locale=lang),
    )


def _local(webinar: Webinar, org: Organization) -> str:
    return local_datetime(webinar.starts_at, org.timezone, org.language)


async def sales_maintenance(app: AppContext) -> int:
    """The job: mark lapsed seat holds expired (they stopped counting when they lapsed)."""
    async with app.session_factory() as session:
        return await SalesService(session, app, users=UserService(session, app)).expire_holds()
