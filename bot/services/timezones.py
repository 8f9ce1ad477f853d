"""The participant's own time zone (/timezone) and times shown in two zones.

A webinar's time is always given in its organization's zone (the organizer's reference, and the
zone the organizer typed it in); a participant who set their own zone also reads it in theirs
whenever the two differ *at that moment*: Rome and Berlin never differ, New York and Rome differ
by six hours most of the year but by five in the weeks when only one of them has moved its
clocks. The text stays in the organization's language; calendar files stay in UTC.

A zone is found from a city name (the city part of every IANA zone name: "New York",
"sao paulo", "Europe/Rome") or from a shared location, through ``timezonefinder`` (offline
polygons of every zone, shipped in the package).
"""

from __future__ import annotations

import logging
import unicodedata
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from bot.formatting import local_datetime
from bot.i18n import N_, _
from bot.services.admin_input import InvalidInput
from bot.services.base import Service
from storage.models import Organization, User

log = logging.getLogger(__name__)

CITY_MAX = 64
# Typed to forget one's zone: times are then shown in the organizer's zone only.
RESET_WORDS = frozenset({"-", "—", "–"})


def _fold(text: str) -> str:
    """``São_Paulo`` -> ``sao paulo``: accents, case, underscores and dashes do not matter."""
    plain = "".join(
        ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)
    )
    return " ".join(plain.replace("_", " ").replace("-", " ").lower().split())


@cache
def _zones_by_name() -> dict[str, str]:
    """Every IANA zone by its full name and by its city part (``new york``); a city part two
    zones share keeps the first in sorted order, and full names always win."""
    names = sorted(
        name
        for name in available_timezones()
        # Legacy aliases ("US/Eastern", "Etc/GMT+5", "EST5EDT") are no cities.
        if "/" in name and not name.startswith(("Etc/", "SystemV/", "US/"))
    )
    found: dict[str, str] = {}
    for name in names:
        found.setdefault(_fold(name.rsplit("/", 1)[-1]), name)
    for name in names:
        found[_fold(name)] = name
    found["utc"] = "UTC"
    return found


def zone_of_city(raw: str) -> str:
    """A city name or IANA zone name -> the zone; :class:`InvalidInput` if none matches."""
    text = raw.strip()
    zone = _zones_by_name().get(_fold(text)) if 0 < len(text) <= CITY_MAX else None
    if zone is None:
        raise InvalidInput(
            N_(
                "I don't know this city. Send a big city in your time zone (Rome, New York, "
                "Sao Paulo, Tokyo), a zone name like Europe/Rome, or share your location."
            )
        )
    return zone


@cache
def _finder():  # type: ignore[no-untyped-def]
    from timezonefinder import TimezoneFinder

    return TimezoneFinder()


def zone_at(latitude: float, longitude: float) -> str:
    """The zone of a point on earth; :class:`InvalidInput` for the open sea or bad numbers."""
    zone = None
    if -90 <= latitude <= 90 and -180 <= longitude <= 180:
        zone = _finder().timezone_at(lng=longitude, lat=latitude)
    if zone is None or zone not in available_timezones():
        raise InvalidInput(
            N_("I can't tell the time zone of this place. Send the name of a city near you.")
        )
    return zone


def differs(moment: datetime, zone_a: str, zone_b: str | None) -> bool:
    """Whether two zones show different clock times at ``moment`` (not just other names)."""
    if not zone_b or zone_b == zone_a:
        return False
    return moment.astimezone(ZoneInfo(zone_a)).utcoffset() != (
        moment.astimezone(ZoneInfo(zone_b)).utcoffset()
    )


def show_time(moment: datetime, org: Organization, own_zone: str | None) -> str:
    """The moment in the organization's zone, plus the participant's own when it differs, in
    the organization's language: ``Mar 20, 2026, 6:00 PM (UTC+01:00); your time: …``."""
    lang = org.language
    text = local_datetime(moment, org.timezone, lang)
    if own_zone and differs(moment, org.timezone, own_zone):
        text = _(
            "{time}; your time: {own}",
            locale=lang,
            time=text,
            own=local_datetime(moment, own_zone, lang),
        )
    return text


class TimezoneService(Service):
    async def set_zone(self, user: User, zone: str | None) -> str | None:
        """Remember the participant's zone (``None``: forget it); committed at once."""
        user.timezone = zone
        user.updated_at = self.clock.now()
        await self.session.commit()
        log.info("user %s set the time zone %s", user.id, zone)
        return zone

    async def set_from_text(self, user: User, raw: str) -> str | None:
        """A typed city or zone name, or a dash to forget the zone. Bad input changes nothing."""
        if raw.strip() in RESET_WORDS:
            return await self.set_zone(user, None)
        return await self.set_zone(user, zone_of_city(raw))

    async def set_from_location(self, user: User, latitude: float, longitude: float) -> str:
        zone = zone_at(latitude, longitude)
        await self.set_zone(user, zone)
        return zone
