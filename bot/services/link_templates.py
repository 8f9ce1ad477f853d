"""Link templates: personal links made from the organizer's pattern, for platforms that accept
a participant's name and a token in the room URL
(``https://room.example/w/123?name={name}&t={token}``).

The template is checked when it is set: a valid http(s) URL once filled, ``{token}`` present (it
is what makes each link personal and unguessable), no placeholder but ``{name}`` and ``{token}``,
no format specs. Each ticket then gets the template filled with its holder's URL-encoded display
name and a fresh token; the link and its token are stored as the ticket's access link, shown in
/my and the CSV, and revoked with the ticket.
"""

from __future__ import annotations

import secrets
from string import Formatter
from urllib.parse import quote

from bot.formatting import escape
from bot.i18n import N_
from bot.services.admin_input import URL_MAX, InvalidInput, is_url

PLACEHOLDERS = frozenset({"name", "token"})
NAME_MAX = 64  # characters of the display name put in a link (encoded, up to 12 bytes each)
TOKEN_BYTES = 16  # 128 bits: unguessable


def new_link_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


EXAMPLE = "https://room.example/w/123?name={name}&t={token}"
# Placeholders are named in messages as values, so translations never hold literal braces.
_NAMES = {"name": "{name}", "token": "{token}"}


def _parts(template: str) -> list[tuple[str, str | None]]:
    """``[(literal, field or None), ...]``; :class:`InvalidInput` for anything but plain
    ``{name}`` and ``{token}`` fields."""
    try:
        parsed = list(Formatter().parse(template))
    except ValueError:
        raise InvalidInput(
            N_(
                "A brace is not closed in this template. "
                "Placeholders are written {name} and {token}."
            ),
            **_NAMES,
        ) from None
    parts: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (field not in PLACEHOLDERS or spec or conversion):
            shown = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise InvalidInput(
                N_(
                    "Unknown placeholder {field} in the template. Only {name} (the "
                    "participant's name) and {token} (their personal code) are filled in."
                ),
                field=escape("{" + shown[:40] + "}"),
                **_NAMES,
            )
        parts.append((literal, field))
    return parts


def fill_link_template(template: str, *, name: str, token: str) -> str:
    values = {"name": quote(name[:NAME_MAX], safe=""), "token": quote(token, safe="")}
    return "".join(
        literal + (values[field] if field else "") for literal, field in _parts(template)
    )


def parse_link_template(raw: str) -> str:
    """The organizer's template, checked; refused with a clear reason otherwise."""
    template = raw.strip()
    parts = _parts(template)
    if "token" not in {field for _literal, field in parts}:
        raise InvalidInput(
            N_(
                "The template needs {token}: it makes each participant's link personal. "
                "Example: {example}"
            ),
            example=escape(EXAMPLE),
            **_NAMES,
        )
    # Filled with the longest values it will ever get: the link must stay a valid URL.
    sample = fill_link_template(template, name="N" * NAME_MAX, token=new_link_token())
    if not is_url(sample) or len(template) > URL_MAX // 2:
        raise InvalidInput(
            N_(
                "This is not a valid link template. Send a full link that starts with "
                "https://, for example {example}"
            ),
            example=escape(EXAMPLE),
        )
    return template
