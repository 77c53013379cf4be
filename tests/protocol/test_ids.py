"""Object IDs: shape, parsing, and creation order within and across processes."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamenco_protocol.errors import InvalidObjectId, ProtocolError
from flamenco_protocol.ids import ObjectId


def test_new_ids_are_24_lower_case_hex() -> None:
    oid = ObjectId.new()
    assert len(oid) == 24
    assert oid == oid.lower()
    int(oid, 16)


def test_ids_sort_in_creation_order_within_a_process() -> None:
    made = [ObjectId.new() for _ in range(20_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_the_first_four_bytes_are_the_creation_time_as_in_bson() -> None:
    before = int(time.time())
    oid = ObjectId.new()
    after = int(time.time())
    assert before <= int(oid[:8], 16) <= after
    assert oid.generation_time == datetime.fromtimestamp(int(oid[:8], 16), tz=UTC)


def _make_ids(count: int) -> list[tuple[int, str, int]]:
    made = []
    for _ in range(count):
        before = time.time_ns()
        oid = str(ObjectId.new())
        made.append((before, oid, time.time_ns()))
    return made


def test_ids_made_in_other_processes_sort_in_creation_order() -> None:
    # Whenever one ID was finished before another was begun, it must sort first.
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        batches = pool.map(_make_ids, [3000, 3000])
    made = [item for batch in batches for item in batch]
    by_end = sorted(made, key=lambda item: item[2])
    greatest_finished = ""
    finished = 0
    checked = 0
    for start, oid, _ in sorted(made):
        while finished < len(by_end) and by_end[finished][2] < start:
            greatest_finished = max(greatest_finished, by_end[finished][1])
            finished += 1
        if greatest_finished:
            assert greatest_finished < oid
            checked += 1
    assert checked > len(made) // 2
    assert len({oid for _, oid, _ in made}) == len(made)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    ObjectId.new()
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        child = pool.apply(_make_ids, (100,))
    parent = _make_ids(100)
    assert not {oid for _, oid, _ in child} & {oid for _, oid, _ in parent}


@given(st.binary(min_size=12, max_size=12))
def test_parsing_accepts_either_case(raw: bytes) -> None:
    assert ObjectId.parse(raw.hex().upper()) == raw.hex()
    assert ObjectId(raw.hex()).binary == raw
    assert ObjectId.is_valid(raw.hex().upper())


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "5f1e0c0a2b3c4d5e6f70a10",
        "5f1e0c0a2b3c4d5e6f70a1011",
        "5f1e0c0a2b3c4d5e6f70a10g",
        " 5f1e0c0a2b3c4d5e6f70a10",
        "5f1e0c0a2b3c4d5e6f70a101\n",
        5,
        None,
        b"5f1e0c0a2b3c4d5e6f70a101",
    ],
)
def test_parsing_refuses_everything_else_with_a_clear_error(bad: object) -> None:
    with pytest.raises(InvalidObjectId, match="24-character hexadecimal"):
        ObjectId.parse(bad)
    assert not ObjectId.is_valid(bad)


def test_invalid_ids_are_protocol_and_value_errors() -> None:
    with pytest.raises(ProtocolError):
        ObjectId("x")
    with pytest.raises(ValueError, match="hexadecimal"):
        ObjectId("x")


def test_from_bytes_needs_twelve_bytes() -> None:
    with pytest.raises(InvalidObjectId, match="12 bytes"):
        ObjectId.from_bytes(b"\x00" * 11)
