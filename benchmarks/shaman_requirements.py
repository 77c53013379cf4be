"""Benchmark (c): ``/checkout/requirements`` for a 100,000-line CDF whose files are all stored.

Reports the time of `requirements` (look up and touch every blob) after parsing, of the whole
``POST /checkout/requirements`` through the ASGI app, and their ratios against parsing alone.

    python benchmarks/shaman_requirements.py [--lines 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from shaman_core.asgi import create_app
from shaman_core.cdf import CheckoutEntry, format_definition, parse_definition
from shaman_core.checkout import requirements
from shaman_core.config import ShamanConfig
from shaman_core.store import FileStore


def _fill_store(store: FileStore, count: int) -> list[CheckoutEntry]:
    entries = []
    for index in range(count):
        checksum = f"{index:064x}"
        blob = store.blob_path(checksum, 0)  # empty blobs: see shaman_checkout.py
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.touch()
        entries.append(CheckoutEntry(checksum, 0, f"shots/s{index % 10}/f{index}.exr"))
    return entries


async def _over_http(config: ShamanConfig, body: bytes) -> float:
    app = create_app(config, run_gc=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://s", timeout=600) as client:
        start = time.perf_counter()
        response = await client.post(
            "/checkout/requirements", content=body, headers={"Content-Type": "text/plain"}
        )
        elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text
    assert response.content == b"", "every file should be stored"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shaman-bench-") as tmp:
        base = Path(tmp)
        store = FileStore(base / "store")
        body = format_definition(_fill_store(store, args.lines))
        config = ShamanConfig(
            store_dir=base / "store", checkout_dir=base / "co", auth_disabled=True, gc_period=0
        )
        timings: list[tuple[float, float, float]] = []
        for run in range(args.runs):
            start = time.perf_counter()
            entries = parse_definition(body)
            parse_seconds = time.perf_counter() - start
            start = time.perf_counter()
            assert requirements(store, entries) == []
            lookup_seconds = time.perf_counter() - start
            http_seconds = asyncio.run(_over_http(config, body))
            print(
                f"run {run + 1}: parse {parse_seconds:.3f} s, look up and touch "
                f"{lookup_seconds:.3f} s, POST end to end {http_seconds:.3f} s"
            )
            timings.append((parse_seconds, lookup_seconds, http_seconds))
        # The fastest run of each step: the machine's noise only ever adds time.
        parse_seconds = min(t[0] for t in timings)
        lookup_seconds = min(t[1] for t in timings)
        http_seconds = min(t[2] for t in timings)
        print(
            f"requirements for {args.lines} stored files: {http_seconds:.3f} s end to end; "
            f"parse alone {parse_seconds:.3f} s; ratio parse/(parse+lookup) = "
            f"{parse_seconds / (parse_seconds + lookup_seconds):.2f}, "
            f"parse/end-to-end = {parse_seconds / http_seconds:.2f}"
        )


if __name__ == "__main__":
    main()
