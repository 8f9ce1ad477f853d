"""``python -m bot locales extract|check``: keep the catalogs complete.

``extract`` writes ``locales/messages.pot`` from the source tree. ``check`` lists, per language,
messages that are missing, untranslated, fuzzy, stale, duplicated across parts, or whose
``{placeholders}`` differ from the English text; it exits non-zero if there is any.
"""

from __future__ import annotations

import re
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from bot.i18n import DEFAULT_LOCALE, EXTRACT_KEYWORDS, LOCALES, LOCALES_DIR

ROOT = LOCALES_DIR.parent
SOURCE_DIRS = ("bot", "handlers", "payments", "storage")
MessageId = str | tuple[str, ...]


def extract_messages(root: Path = ROOT) -> dict[MessageId, list[str]]:
    """Every translatable message in the source, with the places it is used."""
    found: dict[MessageId, list[str]] = {}
    for directory in SOURCE_DIRS:
        for filename, lineno, message, _comments, _context in extract_from_dir(
            root / directory,
            method_map=[("**.py", "python")],
            keywords=EXTRACT_KEYWORDS,
            comment_tags=("Translators:",),
        ):
            key = message if isinstance(message, str) else tuple(message)
            found.setdefault(key, []).append(f"{directory}/{filename}:{lineno}")
    return found


_FIELD = string.Formatter()


def placeholders(text: str) -> set[str]:
    try:
        return {name for _lit, name, _spec, _conv in _FIELD.parse(text) if name is not None}
    except ValueError:
        return {"<unbalanced braces>"}


_TAG = re.compile(r"</?([a-z]+)[^>]*>")


def html_tags(text: str) -> list[str]:
    return sorted(_TAG.findall(text))


@dataclass
class Report:
    problems: dict[str, list[str]] = field(default_factory=dict)

    def add(self, locale: str, problem: str) -> None:
        self.problems.setdefault(locale, []).append(problem)

    @property
    def ok(self) -> bool:
        return not self.problems


def _entries(locale: str) -> Iterator[tuple[Path, Catalog]]:
    for po_path in sorted((LOCALES_DIR / locale / "LC_MESSAGES").glob("*.po")):
        with po_path.open("rb") as fp:
            yield po_path, read_po(fp, locale=locale)


def check(root: Path = ROOT) -> Report:
    report = Report()
    source = extract_messages(root)
    for locale in LOCALES:
        if locale == DEFAULT_LOCALE:
            continue
        seen: dict[MessageId, Path] = {}
        for po_path, catalog in _entries(locale):
            for message in catalog:
                if not message.id:
                    continue
                key = message.id if isinstance(message.id, str) else tuple(message.id)
                where = po_path.relative_to(root)
                if key in seen:
                    report.add(locale, f"duplicate in {where} and {seen[key]}: {key!r}")
                seen[key] = where
                if key not in source:
                    report.add(locale, f"stale (not in the code) in {where}: {key!r}")
                    continue
                strings = message.string if isinstance(message.string, tuple) else (message.string,)
                if not all(strings):
                    report.add(locale, f"untranslated in {where}: {key!r}")
                    continue
                if message.fuzzy:
                    report.add(locale, f"fuzzy in {where}: {key!r}")
                source_text = key if isinstance(key, str) else key[0]
                expected = placeholders(source_text) | (
                    placeholders(key[1]) if isinstance(key, tuple) else set()
                )
                for text in strings:
                    if placeholders(text) - expected or (
                        isinstance(key, str) and placeholders(text) != expected
                    ):
                        report.add(locale, f"placeholders differ in {where}: {key!r} -> {text!r}")
                    if html_tags(text) != html_tags(source_text):
                        report.add(locale, f"HTML tags differ in {where}: {key!r} -> {text!r}")
        for key, places in source.items():
            if key not in seen:
                report.add(locale, f"missing: {key!r} (used at {places[0]})")
    return report


def write_template(root: Path = ROOT) -> Path:
    catalog = Catalog(project="webinarpass", charset="utf-8")
    for key, places in sorted(extract_messages(root).items(), key=lambda item: item[1][0]):
        catalog.add(key, locations=[tuple(place.rsplit(":", 1)) for place in places])
    target = LOCALES_DIR / "messages.pot"
    with target.open("wb") as fp:
        write_po(fp, catalog, width=100, omit_header=False, sort_by_file=True)
    return target


def main(action: str) -> int:
    if action == "extract":
        print(f"wrote {write_template()}")
        return 0
    report = check()
    for locale, problems in report.problems.items():
        print(f"[{locale}] {len(problems)} problem(s)")
        for problem in problems:
            print(f"  {problem}")
    if report.ok:
        print("all catalogs complete: " + ", ".join(LOCALES))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "check"))
