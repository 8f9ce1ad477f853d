"""The link-import parser: examples from real exports, and properties over arbitrary input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.services.admin_input import InvalidInput
from bot.services.links import (
    MAX_LINES,
    MAX_UPLOAD_BYTES,
    LineIssue,
    checked_parse,
    decode_upload,
    line_count,
    parse_links,
)


def test_plain_lines_name_link_pairs_and_spreadsheets() -> None:
    text = (
        "name,link\n"
        "Olga,https://meet.example.org/j/1\n"
        '"Petrov, Ivan";https://meet.example.org/j/2\n'
        "https://meet.example.org/j/3?pwd=a,b\n"
        "\n"
        "# a comment\n"
        "Maria Rossi https://meet.example.org/j/4\n"
        "https://meet.example.org/j/1\n"
        "call me maybe\n"
        "https://a.example.org/x https://b.example.org/y\n"
        "ftp://files.example.org/z\n"
    )
    result = parse_links(text)
    assert [(link.line, link.url, link.label) for link in result.links] == [
        (2, "https://meet.example.org/j/1", "Olga"),
        (3, "https://meet.example.org/j/2", "Petrov, Ivan"),
        (4, "https://meet.example.org/j/3?pwd=a,b", None),
        (7, "https://meet.example.org/j/4", "Maria Rossi"),
    ]
    assert [(p.line, p.issue, p.first_line) for p in result.problems] == [
        (8, LineIssue.DUPLICATE, 2),
        (9, LineIssue.NOT_A_LINK, None),
        (10, LineIssue.SEVERAL_LINKS, None),
        (11, LineIssue.NOT_A_LINK, None),
    ]


def test_windows_line_ends_and_byte_order_mark() -> None:
    result = parse_links("\ufeffhttps://x.example.org/1\r\nhttps://x.example.org/2\r")
    assert [link.line for link in result.links] == [1, 2]


def test_uploads_text_is_decoded_binary_refused() -> None:
    assert decode_upload("links.txt", None, "https://x.example.org/ä\n".encode()) == (
        "https://x.example.org/ä\n"
    )
    assert "Ольга" in decode_upload(
        "links.csv", None, "Ольга,https://x.example.org/1".encode("cp1251")
    )
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    for name, data in [
        ("links.txt", png),
        ("links.txt", b"PK\x03\x04\x14\x00\x06\x00"),
        ("links.csv", b"\x1b[31mhello"),
        ("photo.png", b"https://x.example.org/1"),
        ("links.txt", b""),
        ("links.txt", b" \n\n"),
        ("links.txt", b"x" * (1024 * 1024 + 1)),
    ]:
        with pytest.raises(InvalidInput):
            decode_upload(name, None, data)


HOST = st.from_regex(r"[a-z][a-z0-9]{0,10}\.(org|com|io)", fullmatch=True)
PATH = st.from_regex(r"[A-Za-z0-9_\-/]{0,20}", fullmatch=True)
URLS = st.builds(lambda host, path: f"https://{host}/{path}", HOST, PATH)
JUNK = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=",;\t|#\r\n:/"),
    min_size=1,
    max_size=30,
).filter(lambda s: s.strip() and "http" not in s and "\x0b" not in s)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(URLS.map(lambda u: ("url", u)), JUNK.map(lambda j: ("junk", j))), max_size=40
    )
)
def test_every_valid_url_is_imported_once_and_every_other_line_is_reported(
    lines: list[tuple[str, str]],
) -> None:
    # Junk first would look like a spreadsheet header only if it had a separator: it has none.
    text = "\n".join(value for _kind, value in lines)
    result = parse_links(text)
    urls = [value for kind, value in lines if kind == "url"]
    assert [link.url for link in result.links] == list(dict.fromkeys(urls))
    reported = {problem.line for problem in result.problems}
    imported = {link.line for link in result.links}
    assert not reported & imported
    for number, (kind, value) in enumerate(lines, start=1):
        if not value.strip() or value.strip().startswith("\ufeff"):
            continue
        if kind == "junk":
            problem = next(p for p in result.problems if p.line == number)
            assert problem.issue == LineIssue.NOT_A_LINK
        elif number not in imported:
            problem = next(p for p in result.problems if p.line == number)
            assert problem.issue == LineIssue.DUPLICATE
            assert lines[problem.first_line - 1][1] == value


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_never_crashes_on_arbitrary_text(text: str) -> None:
    result = parse_links(text)
    assert len({link.url for link in result.links}) == len(result.links)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(["links.txt", "links.csv", "x.bin", None]))
def test_uploads_never_crash(data: bytes, name: str | None) -> None:
    try:
        text = decode_upload(name, None, data)
    except InvalidInput:
        return
    parse_links(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=16, max_size=512).filter(lambda b: b"\x00" in b))
def test_binary_with_zero_bytes_is_always_refused(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_upload("links.txt", None, data)


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("a", 1),
        ("a\n", 1),
        ("a\r\nb\r\n", 2),
        ("a\rb\rc", 3),  # old Mac line ends: a line each, as the parser numbers them
        ("a\n\rb", 3),
        ("a\n\n\n", 1),
    ],
)
def test_lines_are_counted_as_the_parser_splits_them(text: str, lines: int) -> None:
    assert line_count(text) == lines
    numbered = parse_links(text.replace("a", "https://x.example.org/a"))
    assert all(link.line <= lines for link in numbered.links)


@given(st.text(alphabet="ab\r\n", max_size=40))
def test_the_line_count_bounds_every_reported_line(text: str) -> None:
    result = parse_links(text.replace("a", "https://x.example.org/a "))
    assert all(p.line <= line_count(text) for p in result.problems)
    assert all(link.line <= line_count(text) for link in result.links)


def test_imports_are_capped_by_size_and_by_lines_as_parsed() -> None:
    checked_parse("https://x.example.org/1\r" * MAX_LINES)
    with pytest.raises(InvalidInput) as error:
        checked_parse("https://x.example.org/1\r" * (MAX_LINES + 1))
    assert error.value.render("en") == (
        "Too many lines: 10001, at most 10000 per import. Split the list."
    )
    with pytest.raises(InvalidInput) as error:
        checked_parse("x" * (MAX_UPLOAD_BYTES + 1))
    assert error.value.render("en") == "The file is too large: at most 1 MB per import."
