"""Pools of per-participant links: parse what the organizer pasted or uploaded, import, count.

Webinar platforms export personal join links as plain lists or spreadsheets, so the parser takes
one link a line, ``name,link`` (or ``;``/tab separated, quoted as spreadsheets quote), or a link
somewhere in a line of words. Lines it cannot use are reported by number, never guessed at.
"""

from __future__ import annotations

import asyncio
import csv
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePath

from bot.context import AppContext
from bot.i18n import N_
from bot.services.access import AccessService
from bot.services.admin_input import InvalidInput, is_url
from bot.services.base import Service
from bot.services.webinars import PoolStats, WebinarService
from storage.enums import AccessMode, WebinarStatus
from storage.repositories.links import LinkRepository

MAX_UPLOAD_BYTES = 1024 * 1024
MAX_LINES = 10_000
LABEL_MAX = 255
TEXT_EXTENSIONS = frozenset({".txt", ".csv", ".tsv", ".text", ".list"})
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_DELIMITERS = (",", ";", "\t", "|")
_CONTROL_OK = frozenset("\t\n\r\f")


class LineIssue(StrEnum):
    NOT_A_LINK = "not_a_link"
    DUPLICATE = "duplicate"  # repeated in the same import
    IN_POOL = "in_pool"  # imported before
    SEVERAL_LINKS = "several_links"


@dataclass(frozen=True)
class ParsedLink:
    line: int
    url: str
    label: str | None = None


@dataclass(frozen=True)
class LineProblem:
    line: int
    issue: LineIssue
    first_line: int | None = None  # where a duplicate was seen first


@dataclass
class ParseResult:
    links: list[ParsedLink] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)


@dataclass(frozen=True)
class ImportOutcome:
    added: int
    problems: list[LineProblem]
    pool: PoolStats
    assigned_waiting: int = 0


def _split(line: str, delimiter: str) -> list[str]:
    try:
        row = next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])
    except csv.Error:
        row = line.split(delimiter)
    return [cell.strip().strip("\"'").strip() for cell in row]


def _cells(line: str) -> list[str]:
    """The line's cells, split by the first separator that leaves a link in a cell of its own."""
    splits = [_split(line, d) for d in _DELIMITERS if d in line]
    for cells in splits:
        if any(is_url(cell) for cell in cells):
            return cells
    return splits[0] if splits else [line]


def _clean_label(parts: list[str]) -> str | None:
    label = " ".join(" ".join(parts).split()).strip(" -–—:|,;")
    return label[:LABEL_MAX] or None


def parse_line(line: str) -> tuple[list[str], str | None]:
    """The links found in one line and the label around them."""
    if is_url(line):
        return [line], None
    cells = [cell for cell in _cells(line) if cell]
    urls = [cell for cell in cells if is_url(cell)]
    if urls:
        return urls, _clean_label([cell for cell in cells if not is_url(cell)])
    # "Olga Petrova https://..." with no separator: look at the words.
    words = line.split()
    urls = [word for word in words if is_url(word)]
    return urls, _clean_label([word for word in words if not is_url(word)]) if urls else None


def parse_links(text: str) -> ParseResult:
    """Parse pasted or uploaded text into links, with a problem for every line not imported."""
    result = ParseResult()
    first_seen: dict[str, int] = {}
    first_content = True
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        line = raw.strip().lstrip("\ufeff").strip()
        if not line or line.startswith("#"):
            continue
        urls, label = parse_line(line)
        is_header = first_content and not urls and any(d in line for d in _DELIMITERS)
        first_content = False
        if is_header:
            # A spreadsheet's column titles ("name,link"): not a problem worth reporting.
            continue
        if not urls:
            result.problems.append(LineProblem(number, LineIssue.NOT_A_LINK))
        elif len(urls) > 1:
            result.problems.append(LineProblem(number, LineIssue.SEVERAL_LINKS))
        elif urls[0] in first_seen:
            result.problems.append(LineProblem(number, LineIssue.DUPLICATE, first_seen[urls[0]]))
        else:
            first_seen[urls[0]] = number
            result.links.append(ParsedLink(number, urls[0], label))
    return result


def line_count(text: str) -> int:
    """Lines as :func:`parse_links` numbers them (``\\r``, ``\\n`` and ``\\r\\n`` all end one);
    line breaks at the very end open no line."""
    return len(_LINE_BREAK.findall(text.rstrip("\r\n"))) + 1


def check_size(text: str) -> None:
    """Refuse an import too large to handle at once: by bytes, then by lines as parsed."""
    # Characters, not the UTF-8 size: a megabyte uploaded in cp1251 decodes to as many
    # characters, and parsing costs per character.
    if len(text) > MAX_UPLOAD_BYTES:
        raise InvalidInput(N_("The file is too large: at most 1 MB per import."))
    lines = line_count(text)
    if lines > MAX_LINES:
        raise InvalidInput(
            N_("Too many lines: {lines}, at most {limit} per import. Split the list."),
            lines=lines,
            limit=MAX_LINES,
        )


def checked_parse(text: str) -> ParseResult:
    """:func:`check_size`, then :func:`parse_links`: CPU work, run off the event loop."""
    if not text.strip():
        raise InvalidInput(N_("The file is empty: there are no links in it."))
    check_size(text)
    return parse_links(text)


def decode_upload(filename: str | None, mime_type: str | None, data: bytes) -> str:
    """The text of an uploaded list, or a refusal for anything that is not a text file."""
    suffix = PurePath(filename or "").suffix.lower()
    if suffix not in TEXT_EXTENSIONS and not (mime_type or "").startswith("text/"):
        raise InvalidInput(N_("Send the links as a .txt or .csv file, or paste them as text."))
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidInput(N_("The file is too large: at most 1 MB per import."))
    if b"\x00" in data:
        raise InvalidInput(
            N_("This file is not text. Send a .txt or .csv file with one link a line.")
        )
    for encoding in ("utf-8-sig", "cp1251"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise InvalidInput(
            N_("This file is not text. Send a .txt or .csv file with one link a line.")
        )
    if any(unicodedata.category(ch) == "Cc" and ch not in _CONTROL_OK for ch in text):
        raise InvalidInput(
            N_("This file is not text. Send a .txt or .csv file with one link a line.")
        )
    if not text.strip():
        raise InvalidInput(N_("The file is empty: there are no links in it."))
    return text


class LinkService(Service):
    def __init__(
        self, session, app: AppContext, *, webinars: WebinarService, access: AccessService
    ) -> None:
        super().__init__(session, app)
        self.webinars = webinars
        self.access = access

    @property
    def repo(self) -> LinkRepository:
        return LinkRepository(self.session)

    async def stats(self, org_id: int, webinar_id: int) -> PoolStats:
        webinar = await self.webinars.get(org_id, webinar_id)
        return PoolStats(*(await self.repo.stats([webinar.id])).get(webinar.id, (0, 0, 0)))

    async def read_upload(self, filename: str | None, mime_type: str | None, data: bytes) -> str:
        """:func:`decode_upload` off the event loop (it looks at every character)."""
        return await asyncio.to_thread(decode_upload, filename, mime_type, data)

    async def import_links(self, org_id: int, webinar_id: int, text: str) -> ImportOutcome:
        """Add the new links of ``text`` to the webinar's pool; report every skipped line."""
        webinar = await self.webinars.get(org_id, webinar_id)
        if webinar.status == WebinarStatus.CANCELLED:
            raise InvalidInput(N_("This webinar is cancelled and can no longer be changed."))
        if webinar.access_mode != AccessMode.LINKS:
            raise InvalidInput(N_("This webinar does not use unique links."))
        # A megabyte of lines takes a good part of a second to parse: not on the event loop,
        # where every other organizer's and buyer's update would wait for it.
        parsed = await asyncio.to_thread(checked_parse, text)
        known = await self.repo.urls(webinar.id)
        fresh = [link for link in parsed.links if link.url not in known]
        problems = parsed.problems + [
            LineProblem(link.line, LineIssue.IN_POOL) for link in parsed.links if link.url in known
        ]
        problems.sort(key=lambda problem: problem.line)
        await self.repo.add_many(
            webinar.id, [(link.url, link.label) for link in fresh], self.clock.now()
        )
        await self.session.commit()
        assigned = await self._assign_waiting(webinar.id) if fresh else 0
        pool = PoolStats(*(await self.repo.stats([webinar.id])).get(webinar.id, (0, 0, 0)))
        return ImportOutcome(
            added=len(fresh), problems=problems, pool=pool, assigned_waiting=assigned
        )

    async def _assign_waiting(self, webinar_id: int) -> int:
        """Participants who paid while the pool was empty get their links now."""
        return await self.access.assign_waiting(webinar_id)
