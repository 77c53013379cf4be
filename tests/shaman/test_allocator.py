"""The malloc tuning the Shaman applies for streamed request bodies."""

from __future__ import annotations

import resource
import sys

import pytest

from shaman_core.allocator import tune_malloc_for_streaming


def test_tuning_is_idempotent() -> None:
    assert tune_malloc_for_streaming() is tune_malloc_for_streaming()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_freed_body_pieces_are_not_faulted_in_again() -> None:
    if not tune_malloc_for_streaming():
        pytest.skip("not glibc")
    received = bytes(256_000)

    def receive_pieces(count: int) -> None:
        # What uvicorn does per piece of a request body: a bytearray, then bytes of it.
        for _ in range(count):
            body = bytearray()
            body += received
            message = bytes(body)
            del body, message

    receive_pieces(10)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    receive_pieces(400)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # Untuned glibc returns the pages each time: about 100 faults per piece.
    assert faults < 2_000
