"""A small fake of the YooKassa HTTP API (v3) for tests and local runs.

It implements what the official ``yookassa`` SDK calls for payments and refunds, with
YooKassa's rules that matter for refunds: Basic auth, the ``Idempotence-Key`` header,
refunds limited to what is left of the payment, and YooKassa's error JSON. Payments and
refunds are listed (``GET /v3/payments``, ``GET /v3/refunds``) newest first, filtered by
``created_at.gte/gt/lte/lt`` (and ``status``, ``payment_id``), ``limit`` 1-100 (default 10),
a page at a time with ``next_cursor``.

Connected to the sandbox Bot API server (``server.connect_provider(token, fake)``), it
records every card payment of an invoice sent with that provider token, and its payment id
becomes the ``provider_payment_charge_id`` the bot receives, as with Telegram.

    async with FakeYooKassa(shop_id="123456", secret_key="test_key") as fake:
        payment = fake.add_payment(1000, "RUB")          # or POST /v3/payments via the SDK
        Configuration.configure("123456", "test_key", api_url=fake.url)
        ...
        assert fake.requests[-1].path == "/v3/refunds"

Only binds to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

__all__ = ["FakeYooKassa", "RecordedRequest"]

_CENT = Decimal("0.01")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received (auth failures included)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    status: int = 0  # the HTTP status the fake answered with


@dataclass
class _Stored:
    status: int
    body: dict[str, Any]
    request_body: Any = field(default=None)


def _timestamp(moment: datetime) -> str:
    """YooKassa's format: UTC, milliseconds, ``Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_time(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _ApiError(400, "invalid_request", f"Invalid {name}", name) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _money(value: Decimal, currency: str) -> dict[str, str]:
    return {"value": format(value.quantize(_CENT), "f"), "currency": currency}


class _ApiError(Exception):
    def __init__(self, status: int, code: str, description: str, parameter: str | None = None):
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.parameter = parameter

    def body(self) -> dict[str, Any]:
        # The shape of YooKassa's error object; the SDK's ApiError parses it.
        body: dict[str, Any] = {
            "type": "error",
            "id": str(uuid.uuid4()),
            "code": self.code,
            "description": self.description,
        }
        if self.parameter:
            body["parameter"] = self.parameter
        return body


class FakeYooKassa:
    """Fake YooKassa API server. ``url`` is the SDK's ``api_url`` (with ``/v3``).

    State is public for assertions: ``payments`` and ``refunds`` by id (the JSON objects
    the API returns) and ``requests`` (every request, in order). ``refund_status`` sets
    the status new refunds get ("succeeded" or "pending"); :meth:`settle_refund` then ends a
    pending refund as ``succeeded`` or ``canceled``, the way YooKassa does later on its own.
    :meth:`fail_next` makes the next request fail with a given HTTP status and ``delay``
    slows every answer, to test outages and timeouts.
    """

    def __init__(self, shop_id: str = "123456", secret_key: str = "test_secret_key") -> None:
        self.shop_id = str(shop_id)
        self.secret_key = secret_key
        self.payments: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.refund_status = "succeeded"
        # What "now" is for created_at, captured_at: tests set it to date payments.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.delay = 0.0  # seconds to wait before answering, to test client timeouts
        self._failures: list[tuple[int, str]] = []
        self._idempotency: dict[tuple[str, str], _Stored] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """API root to pass as ``api_url`` to the SDK, e.g. ``http://127.0.0.1:PORT/v3``."""
        if self._port is None:
            raise RuntimeError("FakeYooKassa is not started")
        return f"http://127.0.0.1:{self._port}/v3"

    async def start(self) -> str:
        """Start listening on 127.0.0.1 (free port); return :attr:`url`."""
        if self._runner is not None:
            return self.url
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v3/payments", self._create_payment)
        app.router.add_get("/v3/payments", self._list_payments)
        app.router.add_get("/v3/payments/{id}", self._get_payment)
        app.router.add_post("/v3/refunds", self._create_refund)
        app.router.add_get("/v3/refunds", self._list_refunds)
        app.router.add_get("/v3/refunds/{id}", self._get_refund)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._port = runner.addresses[0][1]
        self._runner = runner
        return self.url

    async def stop(self) -> None:
        """Stop the server. State is kept for assertions after stop."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeYooKassa:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- test helpers ----------------------------------------------------------------------

    def add_payment(
        self,
        amount_minor: int,
        currency: str = "RUB",
        *,
        status: str = "succeeded",
        description: str | None = None,
        payment_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a payment directly (no HTTP); returns the payment object."""
        value = (Decimal(amount_minor) / 100).quantize(_CENT)
        return self._new_payment(
            value, currency.upper(), description, metadata or {}, status, payment_id
        )

    async def record_payment(self, *, amount_minor: int, currency: str, description: str) -> str:
        """A card payment made through the sandbox Bot API server (its ``CardProcessor``)."""
        return str(self.add_payment(amount_minor, currency, description=description)["id"])

    def fail_next(self, status: int = 500, code: str = "internal_server_error") -> None:
        """Answer the next request with this HTTP status and YooKassa error code."""
        self._failures.append((status, code))

    def settle_refund(
        self, refund_id: str, status: str = "succeeded", *, reason: str = "general_decline"
    ) -> dict[str, Any]:
        """End a pending refund as ``succeeded`` or ``canceled`` (with ``reason``, one of
        YooKassa's cancellation reasons). A canceled refund gives its amount back to the
        payment's refundable balance. Returns the refund object."""
        if status not in ("succeeded", "canceled"):
            raise ValueError(f"a refund ends succeeded or canceled, not {status!r}")
        refund = self.refunds[refund_id]
        if refund["status"] != "pending":
            raise ValueError(f"refund {refund_id} is {refund['status']}, not pending")
        refund["status"] = status
        if status == "canceled":
            refund["cancellation_details"] = {"party": "yoo_money", "reason": reason}
            payment = self.payments[refund["payment_id"]]
            currency = payment["amount"]["currency"]
            left = Decimal(payment["refunded_amount"]["value"]) - Decimal(refund["amount"]["value"])
            payment["refunded_amount"] = _money(left, currency)
            payment["refundable"] = True
        return refund

    def refunds_for(self, payment_id: str) -> list[dict[str, Any]]:
        """Refunds of one payment, oldest first."""
        return [r for r in self.refunds.values() if r["payment_id"] == payment_id]

    # -- HTTP ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            if self._failures:
                status, code = self._failures.pop(0)
                raise _ApiError(status, code, f"injected failure {status}")
            self._check_auth(request)
            if not isinstance(body, dict | None):
                raise _ApiError(400, "invalid_request", "Request body must be a JSON object")
            response = await handler(request)
        except _ApiError as exc:
            response = web.json_response(exc.body(), status=exc.status)
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                json=body,
                status=response.status,
            )
        )
        return response

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            shop_id, _, secret = decoded.partition(":")
            ok = shop_id == self.shop_id and secret == self.secret_key
        if not ok:
            raise _ApiError(
                401,
                "invalid_credentials",
                "Login and password are incorrect or the shop is blocked",
            )

    @staticmethod
    def _idempotence_key(request: web.Request) -> str:
        key = request.headers.get("Idempotence-Key", "")
        if not key:
            raise _ApiError(
                400, "invalid_request", "Idempotence-Key header is required", "Idempotence-Key"
            )
        if len(key) > 64:
            raise _ApiError(
                400, "invalid_request", "Idempotence-Key is longer than 64", "Idempotence-Key"
            )
        return key

    async def _idempotent(self, request: web.Request, create: Any) -> web.Response:
        """Run ``create(body)`` once per key; a repeat returns the stored answer."""
        key = self._idempotence_key(request)
        # The middleware already read (and aiohttp cached) the body and checked it is JSON.
        body = json.loads(await request.read() or b"{}")
        slot = (request.path, key)
        stored = self._idempotency.get(slot)
        if stored is not None:
            if stored.request_body != body:
                raise _ApiError(
                    400,
                    "invalid_request",
                    "Idempotence key was already used with other request parameters",
                    "Idempotence-Key",
                )
            return web.json_response(stored.body, status=stored.status)
        result = create(body)
        # Only successes are remembered: a refused request may be retried once fixed.
        self._idempotency[slot] = _Stored(200, result, body)
        return web.json_response(result)

    async def _create_payment(self, request: web.Request) -> web.Response:
        def create(body: dict[str, Any]) -> dict[str, Any]:
            value, currency = self._parse_amount(body.get("amount"))
            return self._new_payment(
                value,
                currency,
                body.get("description"),
                body.get("metadata") or {},
                "succeeded",
                None,
            )

        return await self._idempotent(request, create)

    async def _list_payments(self, request: web.Request) -> web.Response:
        return web.json_response(self._page(list(self.payments.values()), request, ("status",)))

    async def _list_refunds(self, request: web.Request) -> web.Response:
        found = list(self.refunds.values())
        return web.json_response(self._page(found, request, ("status", "payment_id")))

    @staticmethod
    def _page(
        objects: list[dict[str, Any]], request: web.Request, equal_filters: tuple[str, ...]
    ) -> dict[str, Any]:
        """One page of a list answer, newest first, with YooKassa's filters and cursor."""
        query = request.query
        try:
            limit = int(query.get("limit", "10"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            raise _ApiError(400, "invalid_request", "Invalid limit", "limit")
        bounds = []
        for name, keep in (
            ("created_at.gte", lambda at, bound: at >= bound),
            ("created_at.gt", lambda at, bound: at > bound),
            ("created_at.lte", lambda at, bound: at <= bound),
            ("created_at.lt", lambda at, bound: at < bound),
        ):
            if name in query:
                bounds.append((_parse_time(query[name], name), keep))
        # Dicts keep insertion order: reversed, objects created in one millisecond stay newest
        # first too.
        found = []
        for item in reversed(objects):
            at = _parse_time(item["created_at"], "created_at")
            if all(keep(at, bound) for bound, keep in bounds) and all(
                item.get(key) == query[key] for key in equal_filters if key in query
            ):
                found.append(item)
        start = 0
        if "cursor" in query:
            ids = [item["id"] for item in found]
            try:
                last = base64.urlsafe_b64decode(query["cursor"].encode()).decode()
                start = ids.index(last) + 1
            except (ValueError, binascii.Error, UnicodeDecodeError):
                raise _ApiError(400, "invalid_request", "Invalid cursor", "cursor") from None
        page = found[start : start + limit]
        body: dict[str, Any] = {"type": "list", "items": page}
        if start + limit < len(found):
            body["next_cursor"] = base64.urlsafe_b64encode(page[-1]["id"].encode()).decode()
        return body

    async def _get_payment(self, request: web.Request) -> web.Response:
        payment = self.payments.get(request.match_info["id"])
        if payment is None:
            raise _ApiError(404, "not_found", "Payment doesn't exist or access denied")
        return web.json_response(payment)

    async def _create_refund(self, request: web.Request) -> web.Response:
        def create(body: dict[str, Any]) -> dict[str, Any]:
            payment_id = body.get("payment_id")
            if not isinstance(payment_id, str) or not payment_id:
                raise _ApiError(400, "invalid_request", "payment_id is required", "payment_id")
            value, currency = self._parse_amount(body.get("amount"))
            payment = self.payments.get(payment_id)
            if payment is None:
                raise _ApiError(404, "not_found", "Payment doesn't exist or access denied")
            if payment["status"] != "succeeded":
                raise _ApiError(
                    400,
                    "invalid_request",
                    f"Payment in status {payment['status']} can't be refunded",
                    "payment_id",
                )
            if currency != payment["amount"]["currency"]:
                raise _ApiError(
                    400, "invalid_request", "Refund currency differs from payment", "amount"
                )
            paid = Decimal(payment["amount"]["value"])
            refunded = Decimal(payment["refunded_amount"]["value"])
            available = paid - refunded
            if value > available:
                raise _ApiError(
                    400,
                    "invalid_request",
                    f"Refund amount exceeds the amount available for refund ({available})",
                    "amount.value",
                )
            refund_id = str(uuid.uuid4())
            refund: dict[str, Any] = {
                "id": refund_id,
                "payment_id": payment_id,
                "status": self.refund_status,
                "created_at": _timestamp(self.clock()),
                "amount": _money(value, currency),
            }
            if body.get("description"):
                refund["description"] = body["description"]
            if body.get("metadata"):
                refund["metadata"] = body["metadata"]
            self.refunds[refund_id] = refund
            payment["refunded_amount"] = _money(refunded + value, currency)
            payment["refundable"] = refunded + value < paid
            return refund

        return await self._idempotent(request, create)

    async def _get_refund(self, request: web.Request) -> web.Response:
        refund = self.refunds.get(request.match_info["id"])
        if refund is None:
            raise _ApiError(404, "not_found", "Refund doesn't exist or access denied")
        return web.json_response(refund)

    # -- model -----------------------------------------------------------------------------

    @staticmethod
    def _parse_amount(amount: Any) -> tuple[Decimal, str]:
        if not isinstance(amount, dict):
            raise _ApiError(400, "invalid_request", "amount is required", "amount")
        try:
            value = Decimal(str(amount.get("value")))
        except InvalidOperation:
            raise _ApiError(
                400, "invalid_request", "amount.value is not a number", "amount.value"
            ) from None
        if not value.is_finite() or value <= 0 or value != value.quantize(_CENT):
            raise _ApiError(400, "invalid_request", "Invalid amount.value", "amount.value")
        currency = amount.get("currency")
        if currency not in ("RUB", "USD", "EUR"):
            raise _ApiError(400, "invalid_request", "Invalid currency", "amount.currency")
        return value, currency

    def _new_payment(
        self,
        value: Decimal,
        currency: str,
        description: str | None,
        metadata: dict[str, Any],
        status: str,
        payment_id: str | None,
    ) -> dict[str, Any]:
        payment_id = payment_id or str(uuid.uuid4())
        succeeded = status == "succeeded"
        payment: dict[str, Any] = {
            "id": payment_id,
            "status": status,
            "paid": succeeded,
            "amount": _money(value, currency),
            "income_amount": _money(value, currency),
            "recipient": {"account_id": self.shop_id, "gateway_id": "100500"},
            "payment_method": {
                "type": "bank_card",
                "id": payment_id,
                "saved": False,
                "title": "Bank card *4444",
                "card": {
                    "first6": "555555",
                    "last4": "4444",
                    "expiry_month": "12",
                    "expiry_year": "2030",
                    "card_type": "MasterCard",
                    "issuer_country": "RU",
                },
            },
            "created_at": _timestamp(self.clock()),
            "test": True,
            "refunded_amount": _money(Decimal(0), currency),
            "refundable": succeeded,
            "metadata": metadata,
        }
        if succeeded:
            payment["captured_at"] = _timestamp(self.clock())
        if description:
            payment["description"] = description
        self.payments[payment_id] = payment
        return payment
