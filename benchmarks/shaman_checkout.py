"""Benchmark (b): create a 100,000-file checkout, against a bare ``os.symlink`` loop.

Ratio = (time of a loop of plain os.symlink calls making the same links in pre-made
directories) / (time of `CheckoutBuilder.create`, which also checks and touches every blob,
creates the directories safely and can roll back). Target >= 0.5. Also reports the
end-to-end time of ``POST /checkout/create`` (parsing the CDF included) through the ASGI app.

    python benchmarks/shaman_checkout.py [--files 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from shaman_core.asgi import create_app
from shaman_core.cdf import CheckoutEntry, format_definition
from shaman_core.checkout import CheckoutBuilder
from shaman_core.config import ShamanConfig
from shaman_core.store import FileStore


def _fill_store(store: FileStore, count: int) -> list[CheckoutEntry]:
    entries = []
    for index in range(count):
        # Empty blobs: their names are all that checkouts look at, and deleting 100,000 files
        # with data can take minutes on filesystems mounted with "discard".
        checksum = f"{index:064x}"
        blob = store.blob_path(checksum, 0)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.touch()
        # A realistic tree: 100 directories, two levels deep.
        entries.append(
            CheckoutEntry(checksum, 0, f"shots/s{index % 10}/c{index % 100}/f{index}.exr")
        )
    return entries


def _bare_loop(store: FileStore, entries: list[CheckoutEntry], root: Path) -> float:
    for directory in {os.path.dirname(e.path) for e in entries}:
        os.makedirs(root / directory, exist_ok=True)
    targets = [(store.blob_location(e.checksum, e.size), str(root / e.path)) for e in entries]
    start = time.perf_counter()
    for target, link in targets:
        os.symlink(target, link)
    return time.perf_counter() - start


async def _over_http(config: ShamanConfig, body: bytes) -> float:
    app = create_app(config, run_gc=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://s", timeout=600) as client:
        start = time.perf_counter()
        response = await client.post(
            "/checkout/create/http_bench", content=body, headers={"Content-Type": "text/plain"}
        )
        elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shaman-bench-") as tmp:
        base = Path(tmp)
        store = FileStore(base / "store")
        entries = _fill_store(store, args.files)
        builder = CheckoutBuilder(store, base / "checkouts", wait_for_uploads=0)
        ratios = []
        for run in range(args.runs):
            bare_root = base / f"bare{run}"
            bare = _bare_loop(store, entries, bare_root)
            start = time.perf_counter()
            builder.create(f"bench_{run:02d}", entries)
            ours = time.perf_counter() - start
            ratios.append(bare / ours)
            print(
                f"run {run + 1}: bare os.symlink loop {bare:.3f} s, CheckoutBuilder.create "
                f"{ours:.3f} s, ratio {bare / ours:.2f}"
            )
            shutil.rmtree(bare_root)
            shutil.rmtree(builder.path_of(f"bench_{run:02d}"))
        config = ShamanConfig(
            store_dir=base / "store",
            checkout_dir=base / "checkouts",
            auth_disabled=True,
            gc_period=0,
        )
        http_seconds = asyncio.run(_over_http(config, format_definition(entries)))
        print(
            f"checkout of {args.files} files: best ratio bare/ours = {max(ratios):.2f} "
            f"(target >= 0.5); POST /checkout/create end to end {http_seconds:.3f} s"
        )


if __name__ == "__main__":
    main()
