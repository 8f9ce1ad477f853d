"""What organizers type, checked and turned into values: names, e-mails, prices, dates, durations.

Parsers are pure functions. A refusal is an :class:`AdminError` carrying an English message
(marked with ``N_``) and its parameters; the handler translates it into the organizer's language,
so services never need to know who reads the answer.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

from babel.numbers import get_currency_precision

from bot.i18n import N_, _

TITLE_MAX = 128
ORG_NAME_MAX = 128
DESCRIPTION_MAX = 2000
TERMS_MAX = 3500
SUPPORT_MAX = 255
PASSWORD_MAX = 255
URL_MAX = 2048
EMAIL_MAX = 254
CAPACITY_MAX = 100_000
STARS_MAX = 100_000
PRICE_MAX_MAJOR = 1_000_000
DURATION_MAX = 24 * 60
OFFSET_MAX = 30 * 24 * 60
OFFSETS_MAX = 5
DEFAULT_OFFSETS = (1440, 60, 10)
# Far enough for any real plan, near enough to catch a mistyped year.
HORIZON = timedelta(days=3 * 365)
# Typed by the organizer to leave an optional field empty.
EMPTY_MARKS = frozenset({"-", "—", "–"})

CURRENCIES = ("USD", "EUR", "RUB")
COMMON_TIMEZONES = (
    "Europe/London",
    "Europe/Rome",
    "Europe/Madrid",
    "Europe/Moscow",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Dubai",
    "UTC",
)
DATE_FORMATS = ("%Y-%m-%d %H:%M", "%d.%m.%Y %H:%M", "%d/%m/%Y %H:%M", "%Y-%m-%dT%H:%M")


class AdminError(Exception):
    """A refusal the organizer reads: an untranslated message and its parameters.

    ``str()`` gives the English text, for logs; :meth:`render` the organizer's language.
    """

    def __init__(self, message: str, **params: object) -> None:
        self.message = message
        self.params = params
        super().__init__(self.render(locale="en"))

    def render(self, locale: str | None = None) -> str:
        return _(self.message, locale=locale, **self.params)


class InvalidInput(AdminError):
    """What was typed or chosen cannot be used; the wizard stays on its step."""


class NotAvailable(AdminError):
    """The object does not exist, belongs to another organization, or is no longer there."""

    def __init__(self) -> None:
        super().__init__(N_("This is no longer available."))


class NotAllowed(AdminError):
    """The caller's role does not allow this."""


def is_empty_mark(raw: str) -> bool:
    return raw.strip() in EMPTY_MARKS


def _one_line(raw: str) -> str:
    return " ".join(raw.split())


def parse_title(raw: str) -> str:
    title = _one_line(raw)
    if not title:
        raise InvalidInput(N_("The title cannot be empty. Send a short title."))
    if len(title) > TITLE_MAX:
        raise InvalidInput(
            N_("The title is too long: {length} characters, at most {limit}. Send a shorter one."),
            length=len(title),
            limit=TITLE_MAX,
        )
    return title


def parse_org_name(raw: str) -> str:
    name = _one_line(raw)
    if not name:
        raise InvalidInput(N_("The name cannot be empty. Send the organization's name."))
    if len(name) > ORG_NAME_MAX:
        raise InvalidInput(
            N_("The name is too long: {length} characters, at most {limit}. Send a shorter one."),
            length=len(name),
            limit=ORG_NAME_MAX,
        )
    return name


def parse_description(raw: str) -> str:
    text = raw.strip()
    if is_empty_mark(text):
        return ""
    if len(text) > DESCRIPTION_MAX:
        raise InvalidInput(
            N_("The description is too long: {length} characters, at most {limit}."),
            length=len(text),
            limit=DESCRIPTION_MAX,
        )
    return text


def parse_terms(raw: str) -> str | None:
    text = raw.strip()
    if is_empty_mark(text):
        return None
    if len(text) > TERMS_MAX:
        raise InvalidInput(
            N_("The terms are too long: {length} characters, at most {limit}."),
            length=len(text),
            limit=TERMS_MAX,
        )
    return text


def parse_support(raw: str) -> str | None:
    text = _one_line(raw)
    if is_empty_mark(text) or not text:
        return None
    if len(text) > SUPPORT_MAX:
        raise InvalidInput(
            N_("The contact is too long: {length} characters, at most {limit}."),
            length=len(text),
            limit=SUPPORT_MAX,
        )
    return text


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")


def parse_email(raw: str) -> str:
    email = raw.strip()
    if len(email) > EMAIL_MAX or not _EMAIL.match(email) or ".." in email:
        raise InvalidInput(
            N_("This does not look like an e-mail address. Example: team@example.org")
        )
    return email


@cache
def _timezones() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


def parse_timezone(raw: str) -> str:
    name = _timezones().get(raw.strip().replace(" ", "_").lower())
    if name is None:
        raise InvalidInput(
            N_(
                "I don't know this time zone. Send its IANA name, for example Europe/Rome, "
                "America/Sao_Paulo or Asia/Tokyo."
            )
        )
    return name


def parse_currency(raw: str) -> str:
    currency = raw.strip().upper()
    if currency not in CURRENCIES:
        raise InvalidInput(N_("Choose one of the currencies on the buttons."))
    return currency


_AMOUNT = re.compile(r"^\d+(?:[.,]\d+)?$")


def parse_price(raw: str, currency: str) -> int:
    """``19.99`` or ``19,99`` in ``currency`` -> minor units. Positive, at most the precision."""
    text = raw.strip().replace(" ", "").replace("\u00a0", "")
    precision = get_currency_precision(currency)
    example = "19.99" if precision else "199"
    if text.startswith("-") and _AMOUNT.match(text[1:]):
        raise InvalidInput(N_("The price must be greater than zero."))
    if not _AMOUNT.match(text):
        raise InvalidInput(
            N_("Send the price as a number, for example {example}."), example=example
        )
    whole, _sep, fraction = text.replace(",", ".").partition(".")
    if len(fraction) > precision:
        raise InvalidInput(
            N_("Too many decimals: {currency} prices have at most {digits}. Example: {example}."),
            currency=currency,
            digits=precision,
            example=example,
        )
    try:
        amount = Decimal(f"{whole}.{fraction or '0'}")
    except InvalidOperation:  # pragma: no cover - the regex already rules this out
        raise InvalidInput(
            N_("Send the price as a number, for example {example}."), example=example
        ) from None
    if amount <= 0:
        raise InvalidInput(N_("The price must be greater than zero."))
    if amount > PRICE_MAX_MAJOR:
        raise InvalidInput(
            N_("The price is too high: at most {limit}."), limit=f"{PRICE_MAX_MAJOR:,}"
        )
    return int(amount.scaleb(precision))


def _positive_int(raw: str) -> int | None:
    text = raw.strip().replace(" ", "")
    return int(text) if text.isascii() and text.isdigit() else None


def parse_stars(raw: str) -> int:
    stars = _positive_int(raw)
    if stars is None:
        raise InvalidInput(N_("Send the price in Stars as a whole number, for example 250."))
    if stars <= 0:
        raise InvalidInput(N_("The price must be greater than zero."))
    if stars > STARS_MAX:
        raise InvalidInput(N_("The price is too high: at most {limit}."), limit=f"{STARS_MAX:,}")
    return stars


def parse_capacity(raw: str) -> int:
    seats = _positive_int(raw)
    if seats is None or seats <= 0:
        raise InvalidInput(
            N_("Send the number of seats as a whole number greater than zero, for example 50.")
        )
    if seats > CAPACITY_MAX:
        raise InvalidInput(N_("Too many seats: at most {limit}."), limit=f"{CAPACITY_MAX:,}")
    return seats


def date_example(timezone: str, now: datetime) -> str:
    """A valid answer for the start-time step: a week from now, 18:30, in the org's zone."""
    local = (now + timedelta(days=7)).astimezone(ZoneInfo(timezone))
    return local.strftime("%Y-%m-%d 18:30")


def parse_start(raw: str, timezone: str, now: datetime) -> datetime:
    """A wall-clock time typed in the org's zone -> aware UTC, in the future."""
    text = " ".join(raw.split())
    example = date_example(timezone, now)
    local_example = datetime.strptime(example, "%Y-%m-%d %H:%M")
    examples = f"{example}, {local_example:%d.%m.%Y %H:%M}"
    for fmt in DATE_FORMATS:
        try:
            naive = datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    else:
        raise InvalidInput(
            N_("I can't read this date. Send the date and time like this: {examples}"),
            examples=examples,
        )
    zone = ZoneInfo(timezone)
    moment = naive.replace(tzinfo=zone).astimezone(UTC)
    # A wall-clock time skipped by a daylight-saving jump does not come back unchanged.
    if moment.astimezone(zone).replace(tzinfo=None) != naive:
        raise InvalidInput(
            N_("This time does not exist in {timezone}: the clocks jump forward then."),
            timezone=timezone,
        )
    if moment <= now:
        raise InvalidInput(
            N_("This moment has already passed. Send a future date and time, like {example}"),
            example=example,
        )
    if moment > now + HORIZON:
        raise InvalidInput(
            N_("This date is too far ahead. Send a date within three years, like {example}"),
            example=example,
        )
    return moment


_HOURS = r"(?:h|hr|hrs|hours?|ч|час|часа|часов|ora|ore|hora|horas)"
_MINUTES = r"(?:m|min|mins|minutes?|м|мин|минут[аы]?|minuti|minuto|minutos)"
_DAYS = r"(?:d|days?|д|дн|дня|дней|день|g|giorni|giorno|dia|dias|día|días)"
_DURATION = re.compile(
    rf"^(?:(?P<h>\d+)\s*{_HOURS}\.?)?\s*(?:(?P<m>\d+)\s*{_MINUTES}\.?)?$", re.IGNORECASE
)
_CLOCK = re.compile(r"^(?P<h>\d{1,2}):(?P<m>\d{2})$")


def _minutes(text: str) -> int | None:
    """``90``, ``1:30``, ``1h30m``, ``1 ч 30 мин``, ``2h``, ``45 min`` -> minutes."""
    text = text.strip().lower()
    if text.isascii() and text.isdigit():
        return int(text)
    clock = _CLOCK.match(text)
    if clock:
        return int(clock["h"]) * 60 + int(clock["m"])
    match = _DURATION.match(text)
    if match and (match["h"] or match["m"]):
        return int(match["h"] or 0) * 60 + int(match["m"] or 0)
    return None


def parse_duration(raw: str) -> int:
    minutes = _minutes(raw)
    if minutes is None:
        raise InvalidInput(
            N_("Send the duration in minutes (90) or hours and minutes (1:30, 1h 30m).")
        )
    if not 5 <= minutes <= DURATION_MAX:
        raise InvalidInput(N_("The duration must be between 5 minutes and 24 hours."))
    return minutes


_OFFSET = re.compile(
    rf"^(?P<n>\d+)\s*(?:(?P<d>{_DAYS})|(?P<h>{_HOURS})|{_MINUTES})?\.?$", re.IGNORECASE
)
# Items are separated by commas, or by spaces before the next number: "24h 1h 10m".
_OFFSET_SEPARATOR = re.compile(r"[,;]|\s+(?=\d)")


def parse_offsets(raw: str) -> list[int]:
    """``24h, 1h, 10m`` -> ``[1440, 60, 10]``; a bare number is minutes; ``-`` means none."""
    text = raw.strip()
    if is_empty_mark(text):
        return []
    offsets: set[int] = set()
    for item in _OFFSET_SEPARATOR.split(text):
        if not item.strip():
            continue
        match = _OFFSET.match(item.strip())
        if match is None:
            raise InvalidInput(
                N_("Send the reminders as times before the start, for example: 24h, 1h, 10m")
            )
        factor = 1440 if match["d"] else 60 if match["h"] else 1
        offsets.add(int(match["n"]) * factor)
    if not offsets:
        raise InvalidInput(
            N_("Send the reminders as times before the start, for example: 24h, 1h, 10m")
        )
    if len(offsets) > OFFSETS_MAX:
        raise InvalidInput(N_("At most {limit} reminders."), limit=OFFSETS_MAX)
    if any(not 1 <= offset <= OFFSET_MAX for offset in offsets):
        raise InvalidInput(N_("Each reminder must be between 1 minute and 30 days before."))
    return sorted(offsets, reverse=True)


def is_url(text: str) -> bool:
    """An absolute http(s) URL with a host and nothing that would break it in a message."""
    if not text or len(text) > URL_MAX or any(ch.isspace() for ch in text):
        return False
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in {"http", "https"} and bool(host) and "." in (host or "")


def parse_url(raw: str) -> str:
    url = raw.strip()
    if not is_url(url):
        raise InvalidInput(
            N_(
                "Send a full link that starts with https://, for example https://meet.example.org/room"
            )
        )
    return url


def parse_room_password(raw: str) -> str | None:
    text = raw.strip()
    if is_empty_mark(text) or not text:
        return None
    if len(text) > PASSWORD_MAX or "\n" in text:
        raise InvalidInput(
            N_("The password must be one line of at most {limit} characters."), limit=PASSWORD_MAX
        )
    return text


_CHAT_LINK = re.compile(r"^(?:https?://)?t\.me/(?P<name>[A-Za-z][A-Za-z0-9_]{3,31})/?$")
_USERNAME = re.compile(r"^@(?P<name>[A-Za-z][A-Za-z0-9_]{3,31})$")


def parse_chat_ref(raw: str) -> int | str:
    """A group or channel as ``-100…`` id, ``@username`` or ``t.me/username``."""
    text = raw.strip()
    if re.fullmatch(r"-\d{5,20}", text):
        return int(text)
    match = _USERNAME.match(text) or _CHAT_LINK.match(text)
    if match:
        return f"@{match['name']}"
    raise InvalidInput(
        N_(
            "Send the group's @username or its id (like -1001234567890), or forward me "
            "any message from it."
        )
    )


def format_offset(minutes: int) -> str:
    """``1440`` -> ``24h``, ``90`` -> ``1h30m``, ``10`` -> ``10m``: short and language-neutral."""
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest}m"
    return f"{hours}h{rest}m" if rest else f"{hours}h"


def format_duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return f"{hours}:{rest:02d}"
