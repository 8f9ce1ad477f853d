"""Getting updates: long polling (``getUpdates``) and webhooks with Telegram's retries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from typing import Any

import aiohttp

from bot.sandbox.core.errors import ApiError, bad
from bot.sandbox.core.host import Host
from bot.sandbox.core.params import Params, coerce, dumps
from bot.sandbox.core.routing import api
from bot.sandbox.core.state import SimBot, WebhookConfig

__all__ = ["WebhookWorker", "push_raw", "push_update", "stop_webhook"]

log = logging.getLogger(__name__)

_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def push_update(
    server: Host, bot: SimBot, kind: str, payload: dict[str, Any]
) -> dict[str, Any] | None:
    update = bot.updates.push(kind, payload)
    if update is None:
        server.stats.updates_dropped += 1
    else:
        server.stats.updates += 1
    server.state.changes.fire()
    return update


def push_raw(server: Host, bot: SimBot, update: dict[str, Any]) -> None:
    bot.updates.push_raw(update)
    server.stats.updates += 1
    server.state.changes.fire()


@api("getUpdates")
async def get_updates(server: Host, bot: SimBot, params: Params) -> list[dict[str, Any]]:
    if bot.webhook is not None:
        raise ApiError(
            409,
            "Conflict: can't use getUpdates method while webhook is active; "
            "use deleteWebhook to delete the webhook first",
        )
    allowed = params.structured("allowed_updates")
    if isinstance(allowed, list):
        bot.updates.set_allowed([str(kind) for kind in allowed])
    limit = min(max(params.integer("limit") or 100, 1), 100)
    timeout = max(params.integer("timeout") or 0, 0)
    return await bot.updates.poll(
        params.integer("offset") or 0, limit, timeout, lambda: bot.webhook is not None
    )


@api("setWebhook")
async def set_webhook(server: Host, bot: SimBot, params: Params) -> bool:
    url = params.string("url") or ""
    if url and not url.startswith(("http://", "https://")):
        raise bad("bad webhook: An HTTPS URL must be provided for webhook")
    secret = params.string("secret_token")
    if secret and not _SECRET_RE.match(secret):
        raise bad("secret token contains unallowed characters")
    max_connections = params.integer("max_connections") or 40
    if not 1 <= max_connections <= 100:
        raise bad("bad webhook: max_connections must be between 1 and 100")
    if params.flag("drop_pending_updates"):
        bot.updates.clear()
    allowed = params.structured("allowed_updates")
    if isinstance(allowed, list):
        bot.updates.set_allowed([str(kind) for kind in allowed])
    await stop_webhook(server, bot)
    if url:
        bot.webhook = WebhookConfig(
            url, secret or None, max_connections, params.string("ip_address")
        )
        worker = WebhookWorker(server, bot, bot.webhook)
        server.state.webhooks[bot.token] = worker
        worker.start()
    bot.updates.signal.fire()  # a waiting long poll now fails with 409
    return True


@api("deleteWebhook")
async def delete_webhook(server: Host, bot: SimBot, params: Params) -> bool:
    await stop_webhook(server, bot)
    if params.flag("drop_pending_updates"):
        bot.updates.clear()
    return True


async def stop_webhook(server: Host, bot: SimBot) -> None:
    worker = server.state.webhooks.pop(bot.token, None)
    if worker is not None:
        await worker.stop()
    bot.webhook = None


@api("getWebhookInfo")
async def get_webhook_info(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    info: dict[str, Any] = {
        "url": bot.webhook_url,
        "has_custom_certificate": False,
        "pending_update_count": len(bot.updates),
    }
    if bot.webhook is not None:
        info["max_connections"] = bot.webhook.max_connections
        if bot.webhook.ip_address:
            info["ip_address"] = bot.webhook.ip_address
        if bot.webhook.last_error_date is not None:
            info["last_error_date"] = bot.webhook.last_error_date
            info["last_error_message"] = bot.webhook.last_error_message
    if bot.updates.allowed_list is not None:
        info["allowed_updates"] = bot.updates.allowed_list
    return info


class WebhookWorker:
    """Posts one bot's updates to its webhook, in order, retrying with backoff."""

    def __init__(self, server: Host, bot: SimBot, config: WebhookConfig) -> None:
        self._server = server
        self._bot = bot
        self.config = config
        self._task: asyncio.Task[None] | None = None
        self._turn = 0

    def _target(self) -> str:
        """The URL of the next post: the registered one, or the next of the bot's spread."""
        targets = self._bot.webhook_spread
        if not targets:
            return self.config.url
        url = targets[self._turn % len(targets)]
        self._turn += 1
        return url

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"webhook:{self._bot.username}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        server = self._server
        queue = self._bot.updates
        delay = server.webhook_retry_delay
        failed_in_row = 0
        while True:
            entry = queue.first()
            if entry is None:
                await queue.signal.wait(None)
                continue
            error = await self._post(entry.update, self._target())
            if error is None:
                queue.remove(entry)
                server.stats.webhook_deliveries += 1
                delay = server.webhook_retry_delay
                failed_in_row = 0
                continue
            server.stats.webhook_failures += 1
            failed_in_row += 1
            if failed_in_row < len(self._bot.webhook_spread):
                continue  # the next replica takes it at once, as a load balancer would
            failed_in_row = 0
            self.config.last_error_date = int(time.time())
            self.config.last_error_message = error
            log.debug("webhook %s failed: %s; retry in %.2fs", self.config.url, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, server.webhook_max_retry_delay)

    async def _post(self, update: dict[str, Any], url: str) -> str | None:
        """Deliver one update; return an error message or ``None`` on success."""
        headers = {"Content-Type": "application/json"}
        if self.config.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.config.secret_token
        timeout = aiohttp.ClientTimeout(total=self._server.webhook_timeout)
        try:
            async with self._server.http_client().post(
                url, data=dumps(update), headers=headers, timeout=timeout
            ) as response:
                if not 200 <= response.status < 300:
                    return f"Wrong response from the webhook: {response.status} {response.reason}"
                try:
                    reply = await _read_webhook_reply(response)
                except (aiohttp.ClientError, ValueError):
                    reply = None  # the update was accepted; an unreadable reply is ignored
        except TimeoutError:
            return "Read timeout expired"
        except aiohttp.ClientConnectorError:
            return "Connection refused"
        except aiohttp.ClientError as error:
            return f"{type(error).__name__}: {error}"
        if reply is not None:
            await self._server.execute_call(self._bot, *reply)
        return None


async def _read_webhook_reply(
    response: aiohttp.ClientResponse,
) -> tuple[str, dict[str, Any]] | None:
    """A Bot API call carried in a webhook response body, as Telegram allows."""
    if response.content_type == "application/json":
        body = await response.json(loads=json.loads)
        if isinstance(body, dict) and isinstance(body.get("method"), str):
            params = {key: value for key, value in body.items() if key != "method"}
            return body["method"], params
        return None
    if response.content_type == "multipart/form-data":
        reader = aiohttp.MultipartReader(response.headers, response.content)
        fields: dict[str, Any] = {}
        while (part := await reader.next()) is not None:
            if isinstance(part, aiohttp.BodyPartReader) and part.name:
                fields[part.name] = coerce(part.name, await part.text())
        method = fields.pop("method", None)
        if isinstance(method, str):
            return method, fields
    return None
