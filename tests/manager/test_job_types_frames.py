"""Frame ranges: the Server's parse/merge/chunk rules, and refusals of what it got wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamenco_manager.job_types import (
    FrameRangeError,
    frame_range_count,
    frame_range_merge,
    frame_range_parse,
    frame_range_start_end,
    iter_frame_range,
)

frame_lists = st.lists(st.integers(0, 5000), max_size=60)


@pytest.mark.parametrize(
    ("text", "frames"),
    [
        ("1,3-5,8", [1, 3, 4, 5, 8]),
        ("1-30, 40-44", [*range(1, 31), *range(40, 45)]),
        ("10,1-3", [1, 2, 3, 10]),
        ("2,2,1", [1, 2, 2]),
        (" 7 ", [7]),
        # int() strips line breaks and tabs too, so the Server took these.
        ("1-3\n", [1, 2, 3]),
        ("1 -\r\n3,\t7", [1, 2, 3, 7]),
        ("", []),
        ("0-0", [0]),
    ],
)
def test_parse_sorts_and_keeps_duplicates(text: str, frames: list[int]) -> None:
    assert frame_range_parse(text) == frames
    assert frame_range_count(text) == len(frames)


@pytest.mark.parametrize(
    ("frames", "name_style", "blender_style"),
    [
        ([1, 2, 3], "1-3", "1..3"),
        ([4, 5], "4,5", "4,5"),
        ([10], "10", "10"),
        ([*range(27, 31), *range(40, 45)], "27-30,40-44", "27..30,40..44"),
        ([1, 3, 4, 5, 8], "1,3-5,8", "1,3..5,8"),
        ([], "", ""),
    ],
)
def test_merge_writes_runs_of_three_as_ranges(
    frames: list[int], name_style: str, blender_style: str
) -> None:
    assert frame_range_merge(frames) == name_style
    assert frame_range_merge(frames, blender_style=True) == blender_style


def test_chunks_are_slices_of_the_sorted_list_and_may_span_gaps() -> None:
    assert list(iter_frame_range("1-5,8", 3)) == [[1, 2, 3], [4, 5, 8]]
    assert list(iter_frame_range("1-10", 3)) == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1-10,x", "'x'"),
        ("5-1", "ends before it starts"),
        ("1-2-3", "'1-2-3'"),
        ("1,,2", "''"),
        ("+5", "'+5'"),
        ("1_0", "'1_0'"),
        ("-5", "'-5'"),
        ("\u0661", "'\u0661'"),
        ("1234567890", "at most 9 digits"),
        ("1\u00a0-3", r"'1\xa0-3'"),  # only ASCII blanks
    ],
)
def test_bad_ranges_are_refused_naming_the_part(text: str, fragment: str) -> None:
    with pytest.raises(FrameRangeError, match=None) as caught:
        frame_range_parse(text)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_huge_ranges_are_refused_before_expanding() -> None:
    with pytest.raises(FrameRangeError, match="selects 1000000000 frames"):
        frame_range_parse("0-999999999")
    assert frame_range_count("0-999999999") == 1_000_000_000


def test_start_end() -> None:
    assert frame_range_start_end("1,3-5,8") == (1, 8)
    assert frame_range_start_end("20-30,1") == (1, 30)
    assert frame_range_start_end("") is None


@given(frame_lists)
def test_merge_then_parse_gives_the_sorted_frames_back(frames: list[int]) -> None:
    frames = sorted(frames)
    assert frame_range_parse(frame_range_merge(frames)) == frames
    blender = frame_range_merge(frames, blender_style=True)
    assert frame_range_parse(blender.replace("..", "-")) == frames


@given(frame_lists)
def test_merge_of_unique_frames_never_writes_a_range_of_two(frames: list[int]) -> None:
    for part in frame_range_merge(sorted(set(frames))).split(","):
        if "-" in part:
            start, end = map(int, part.split("-"))
            assert end - start >= 2


@given(frame_lists, st.integers(1, 20))
def test_chunking_partitions_the_frames(frames: list[int], chunk_size: int) -> None:
    text = ",".join(map(str, frames))
    chunks = list(iter_frame_range(text, chunk_size))
    assert [frame for chunk in chunks for frame in chunk] == sorted(frames)
    assert all(len(chunk) == chunk_size for chunk in chunks[:-1])
    assert all(1 <= len(chunk) <= chunk_size for chunk in chunks)


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 30)), min_size=1, max_size=10))
def test_count_and_start_end_agree_with_parse(parts: list[tuple[int, int]]) -> None:
    text = ",".join(f"{start}-{start + length}" for start, length in parts)
    frames = frame_range_parse(text)
    assert frame_range_count(text) == len(frames)
    assert frame_range_start_end(text) == (frames[0], frames[-1])


@given(st.text(max_size=30))
def test_any_text_parses_or_raises_frame_range_error(text: str) -> None:
    try:
        frames = frame_range_parse(text)
    except FrameRangeError:
        return
    assert frames == sorted(frames)


def test_chunk_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        list(iter_frame_range("1-3", 0))
