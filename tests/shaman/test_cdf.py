"""Checkout definition parsing and formatting (spec/shaman.md §5, §12 items 1-10)."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shaman_core.cdf import (
    CheckoutEntry,
    DefinitionReader,
    format_definition,
    parse_definition,
    validate_path,
)
from shaman_core.errors import DefinitionError

EXAMPLE = (
    b"35b0491c27b0333d1fb45fc0789a12ca06b1d640d2569780b807de504d7029e0 1424 definition.go\n"
    b"63b72c63b9424fd13b9370fb60069080c3a15717cf3ad442635b187c6a895079 127  logging.go\n"
    b"9f1470441beb98dbb66e3339e7da697d9c2312999a6a5610c461cbf55040e210 795 manager.go\n"
)
CS31 = "35b0491c27b0333d1fb45fc0789a12c"


def test_first_line_of_example() -> None:
    entries = parse_definition(EXAMPLE)
    assert entries[0] == CheckoutEntry(
        "35b0491c27b0333d1fb45fc0789a12ca06b1d640d2569780b807de504d7029e0", 1424, "definition.go"
    )


def test_extra_space_before_path_is_trimmed() -> None:
    entries = parse_definition(EXAMPLE)
    assert entries[1] == CheckoutEntry(
        "63b72c63b9424fd13b9370fb60069080c3a15717cf3ad442635b187c6a895079", 127, "logging.go"
    )
    assert len(entries) == 3


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"{CS31} 30 /etc/passwd", "no absolute paths allowed"),
        (f"{CS31} 30 ../../../../../../etc/passwd", "paths must be clean"),
        (f"{CS31} 30 some/path/../etc/passwd", "paths must be clean"),
        ("35b 30 some/path", "invalid checksum"),
        ("35b0491c.7b0333d1fb45fc0789a12c 30 some/path", "invalid checksum"),
        ("35b0491c/7b0333d1fb45fc0789a12c 30 some/path", "invalid checksum"),
        (f"{CS31} 30 a//b", "paths must be clean"),
        (f"{CS31} 30 ./a", "paths must be clean"),
        (f"{CS31} 30 a/.", "paths must be clean"),
        (f"{CS31} 30 .", "paths must be clean"),
        (f"{CS31} 30 a/", "paths must be clean"),
        (f"{CS31} 30 ..", "paths must be clean"),
        (f"{CS31} 30 a\x00b", "NUL"),
        (f"{CS31} 30 C:\\x", "drive-letter"),
        (f"{CS31} 30 c:/x", "drive-letter"),
        (f"{CS31} 30 {'x' * 256}", "component longer than 255 bytes"),
        (f"{CS31} 30 {'/'.join(['x' * 200] * 20)}", "path longer than"),
        (f"{CS31} -30 a", "invalid file size"),
        (f"{CS31} 3_0 a", "invalid file size"),
        (f"{CS31} 99999999999999999999 a", "invalid file size"),
        (f"{CS31}  30 a", "invalid file size"),
        (f"{CS31}\t30\ta", "three space-separated parts, not 1"),
        (f"{CS31} 30", "three space-separated parts, not 2"),
    ],
)
def test_bad_line_is_refused_with_its_line_number(line: str, reason: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(line.encode())
    assert caught.value.line == 1
    assert reason in str(caught.value)
    assert str(caught.value).startswith("invalid line 1: ")


def test_31_char_checksum_is_acceptable() -> None:
    assert parse_definition(f"{CS31} 30 some/path".encode())[0].checksum == CS31


@pytest.mark.parametrize("name", ["shot..v2.png", "a...b", "..hidden", "dir/x..", "sp ace/ü.txt"])
def test_dots_inside_a_name_are_fine(name: str) -> None:
    assert parse_definition(f"{CS31} 30 {name}".encode())[0].path == name


def test_line_numbers_count_blank_lines() -> None:
    data = f"\n{CS31} 1 a\n\n   \n{CS31} 1 /abs\n".encode()
    with pytest.raises(DefinitionError) as caught:
        parse_definition(data)
    assert caught.value.line == 5


@pytest.mark.parametrize("separator", [b"\n", b"\r\n", b"\n\n"])
@pytest.mark.parametrize("final", [b"", b"\n", b"\r\n"])
def test_line_endings_and_final_newline(separator: bytes, final: bytes) -> None:
    data = f"{CS31} 1 a".encode() + separator + f"{CS31} 2 b".encode() + final
    assert [e.path for e in parse_definition(data)] == ["a", "b"]


def test_same_path_same_content_kept_once() -> None:
    assert len(parse_definition(f"{CS31} 1 a\n{CS31} 1 a\n".encode())) == 1


def test_same_path_different_content_refused() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(f"{CS31} 1 a\n{CS31} 2 a\n".encode())
    assert caught.value.line == 2
    assert "line 1" in caught.value.reason


@pytest.mark.parametrize("order", [("a", "a/b"), ("a/b", "a")])
def test_file_and_directory_of_same_name_refused(order: tuple[str, str]) -> None:
    data = f"{CS31} 1 {order[0]}\n{CS31} 2 {order[1]}\n".encode()
    with pytest.raises(DefinitionError) as caught:
        parse_definition(data)
    assert caught.value.line == 2


def test_first_error_stops_reading() -> None:
    data = f"{CS31} 1 a\nbad\n{CS31} 1 /abs\n".encode()
    reader = DefinitionReader()
    with pytest.raises(DefinitionError) as caught:
        reader.feed(data)
    assert caught.value.line == 2


def test_chunked_feeding_equals_whole() -> None:
    data = EXAMPLE * 1
    reader = DefinitionReader()
    for index in range(len(data)):
        reader.feed(data[index : index + 1])
    assert reader.finish() == parse_definition(data)


def test_invalid_utf8_path_round_trips_bytes() -> None:
    line = CS31.encode() + b" 5 caf\xe9.txt"
    entry = parse_definition(line)[0]
    assert entry.format() == line


def test_gzip_is_not_the_parsers_business() -> None:
    with pytest.raises(DefinitionError):
        parse_definition(gzip.compress(EXAMPLE))


def test_hundred_thousand_lines() -> None:
    lines = [f"{i:064x} {i} dir{i % 100}/file{i}.bin" for i in range(100_000)]
    entries = parse_definition("\n".join(lines).encode())
    assert len(entries) == 100_000
    assert entries[-1].path == "dir99/file99999.bin"


path_component = st.text(
    alphabet=st.sampled_from([*"abcXYZ019._-~+=,;'()[]{}@#$%&!", "é", "ü", "ß", "日", "\\", ":"]),
    min_size=1,
    max_size=20,
).filter(lambda c: c not in (".", ".."))
entry_strategy = st.builds(
    CheckoutEntry,
    checksum=st.binary(min_size=32, max_size=32).map(bytes.hex),
    size=st.integers(0, 2**63 - 1),
    path=st.lists(path_component, min_size=1, max_size=4).map("/".join),
).filter(lambda e: validate_path(e.path) is None)


@given(st.lists(entry_strategy, max_size=8, unique_by=lambda e: e.path), st.booleans())
def test_format_then_parse_round_trips(entries: list[CheckoutEntry], trailing: bool) -> None:
    paths = {e.path for e in entries}
    # Skip file/directory clashes, which the parser rightly refuses.
    if any(p.startswith(q + "/") for p in paths for q in paths):
        return
    assert parse_definition(format_definition(entries, trailing_newline=trailing)) == entries


@given(st.binary(max_size=400))
def test_parser_never_crashes_and_accepts_only_safe_paths(data: bytes) -> None:
    reader = DefinitionReader()
    try:
        reader.feed(data)
        entries = reader.finish()
    except DefinitionError as error:
        line = error.line
        assert line == reader.lines_read
        return
    for entry in entries:
        assert validate_path(entry.path) is None
        parts = entry.path.split("/")
        assert ".." not in parts
        assert "" not in parts
        assert not entry.path.startswith("/")
