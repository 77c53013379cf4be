"""Packing a directory into a Shaman: the client side of the protocol (httpx).

``pack(source, url, checkout_id=...)`` hashes every file (in parallel, with a checksum cache),
asks ``/checkout/requirements`` what the Shaman lacks, uploads those files concurrently (telling
the Shaman it may defer a file someone else is already sending, and coming back for it in a later
round), then creates the checkout. `ShamanClient` offers the single calls.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import httpx

from shaman_core.cdf import CheckoutEntry, format_definition, validate_path
from shaman_core.checksums import ChecksumCache, hash_files
from shaman_core.errors import ShamanError
from shaman_core.progress import Progress

__all__ = ["PackReport", "ShamanClient", "ShamanClientError", "UploadOutcome", "pack"]

_CHUNK = 1 << 20
_MAX_ROUNDS = 50


class ShamanClientError(ShamanError):
    """The Shaman refused a request or could not be reached; `status` is the HTTP status
    (0 when there was no response)."""


class UploadOutcome:
    """What happened to one upload (plain strings, for logs)."""

    UPLOADED = "uploaded"
    ALREADY_STORED = "already-stored"
    DEFERRED = "deferred"


@attrs.define
class PackReport:
    """What `pack` did."""

    files: int = 0
    bytes: int = 0
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    already_stored: int = 0
    deferred: int = 0
    rounds: int = 0
    checkout_path: str | None = None
    seconds: float = 0.0


class ShamanClient:
    """The Shaman calls, on one shared connection pool (safe to use from several threads).

    `url` is the Shaman's base URL (a trailing slash is added when missing); `token` is sent as
    ``Authorization: Bearer`` when given.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=url if url.endswith("/") else url + "/",
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> ShamanClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _post(self, url: str, **kwargs: object) -> httpx.Response:
        try:
            return self.http.post(url, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as error:
            raise ShamanClientError(f"cannot reach the Shaman: {error}", status=0) from error

    def requirements(self, definition: bytes) -> list[tuple[str, str]]:
        """``(status, path)`` for every file the Shaman wants (``file-unknown`` or
        ``already-uploading``)."""
        response = self._post(
            "checkout/requirements", content=definition, headers={"Content-Type": "text/plain"}
        )
        _raise_for_status(response)
        answer = []
        for line in response.content.decode("utf-8", "surrogateescape").split("\n"):
            if line:
                status, _, path = line.partition(" ")
                answer.append((status, path))
        return answer

    def upload(
        self,
        entry: CheckoutEntry,
        source: Path,
        *,
        can_defer: bool = False,
        progress: Progress | None = None,
    ) -> str:
        """Send one file; return an `UploadOutcome` value."""
        headers: dict[str, str | bytes] = {
            "Content-Length": str(entry.size),
            # Raw UTF-8 bytes: the header is only logged, and the Shaman sanitises it.
            "X-Shaman-Original-Filename": entry.path.encode("utf-8", "surrogateescape"),
        }
        if can_defer:
            headers["X-Shaman-Can-Defer-Upload"] = "true"
        sent = [0]
        try:
            response = self._post(
                f"files/{entry.checksum}/{entry.size}",
                content=_read_chunks(source, progress, sent),
                headers=headers,
            )
        except ShamanClientError:
            if progress is not None:
                progress.retract(sent[0])
            raise
        if response.status_code == 208:
            if progress is not None:
                progress.retract(sent[0])
            if "location" in response.headers:
                return UploadOutcome.ALREADY_STORED
            return UploadOutcome.DEFERRED
        if response.status_code >= 300 and progress is not None:
            progress.retract(sent[0])
        _raise_for_status(response)
        if progress is not None:
            progress.file_done()
        return UploadOutcome.UPLOADED

    def create_checkout(self, checkout_id: str, definition: bytes) -> str:
        """Create the checkout; return its path relative to the checkout root."""
        response = self._post(
            f"checkout/create/{checkout_id}",
            content=definition,
            headers={"Content-Type": "text/plain"},
        )
        _raise_for_status(response)
        return response.text.strip()


def _read_chunks(source: Path, progress: Progress | None, sent: list[int]) -> Iterator[bytes]:
    with open(source, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            sent[0] += len(chunk)
            if progress is not None:
                progress.advance(len(chunk))
            yield chunk


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 300:
        raise ShamanClientError(
            f"Shaman answered {response.status_code} to {response.request.method} "
            f"{response.request.url.path}: {response.text.strip()}",
            status=response.status_code,
        )


def collect_files(source: Path) -> list[tuple[str, Path]]:
    """Every regular file under `source` as (relative POSIX path, absolute path), sorted.

    Raises `ShamanClientError` when `source` is not a directory, or a directory under it cannot
    be read: a pack must not become a checkout of what could be read.
    """
    if not source.is_dir():
        raise ShamanClientError(f"cannot pack {str(source)!r}: not a directory")

    def unreadable(error: OSError) -> None:
        raise ShamanClientError(f"cannot pack {error.filename!r}: {error.strerror}") from error

    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source, onerror=unreadable):
        dirnames.sort()
        for name in filenames:
            absolute = Path(dirpath) / name
            if not absolute.is_file():
                continue
            relative = absolute.relative_to(source).as_posix()
            problem = validate_path(relative)
            if problem is not None:
                raise ShamanClientError(f"cannot pack {relative!r}: {problem}")
            found.append((relative, absolute))
    found.sort()
    return found


def pack(
    source: str | os.PathLike[str],
    url: str,
    *,
    checkout_id: str | None = None,
    token: str | None = None,
    concurrency: int = 4,
    progress: Progress | None = None,
    cache: ChecksumCache | None = None,
    transport: httpx.BaseTransport | None = None,
    retry_wait: float = 0.5,
) -> PackReport:
    """Upload the directory `source` to the Shaman at `url` and create checkout `checkout_id`.

    Files someone else is uploading are deferred and asked for again in the next round; the
    checkout is created once the Shaman has every file. Raises `ShamanClientError`.
    """
    started = time.monotonic()
    root = Path(source)
    files = collect_files(root)
    sums = hash_files([absolute for _relative, absolute in files], cache=cache)
    entries = [
        CheckoutEntry(checksum, size, relative)
        for (relative, _absolute), (checksum, size) in zip(files, sums, strict=True)
    ]
    sources = {entry.path: absolute for entry, (_r, absolute) in zip(entries, files, strict=True)}
    by_path = {entry.path: entry for entry in entries}
    definition = format_definition(entries)
    report = PackReport(files=len(entries), bytes=sum(e.size for e in entries))
    with ShamanClient(url, token, transport=transport) as client:
        for _round in range(_MAX_ROUNDS):
            report.rounds += 1
            wanted = client.requirements(definition)
            if not wanted:
                break
            unknown = [path for status, path in wanted if status == "file-unknown"]
            for _status, path in wanted:
                if path not in by_path:
                    raise ShamanClientError(f"Shaman asked for a file we did not offer: {path!r}")
            deferred_before = report.deferred
            _upload_round(
                client, [by_path[p] for p in unknown], sources, concurrency, progress, report
            )
            if report.deferred > deferred_before or len(unknown) < len(wanted):
                time.sleep(retry_wait)  # some files are in someone else's hands; let them work
        else:
            raise ShamanClientError(f"gave up after {_MAX_ROUNDS} rounds of uploads")
        if checkout_id:
            report.checkout_path = client.create_checkout(checkout_id, definition)
    report.seconds = time.monotonic() - started
    return report


def _upload_round(
    client: ShamanClient,
    entries: Sequence[CheckoutEntry],
    sources: dict[str, Path],
    concurrency: int,
    progress: Progress | None,
    report: PackReport,
) -> int:
    """Upload `entries` with `concurrency` threads; return how many were uploaded."""
    if progress is not None:
        progress.add_work(len(entries), sum(e.size for e in entries))
    queue = collections.deque(entries)
    lock = threading.Lock()
    uploaded = 0

    def worker() -> None:
        nonlocal uploaded
        while True:
            with lock:
                if not queue:
                    return
                entry = queue.popleft()
                can_defer = bool(queue)
            outcome = client.upload(
                entry, sources[entry.path], can_defer=can_defer, progress=progress
            )
            with lock:
                if outcome == UploadOutcome.UPLOADED:
                    uploaded += 1
                    report.uploaded_files += 1
                    report.uploaded_bytes += entry.size
                elif outcome == UploadOutcome.ALREADY_STORED:
                    report.already_stored += 1
                else:
                    report.deferred += 1

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(worker) for _ in range(max(1, concurrency))]
        for future in futures:
            future.result()
    return uploaded
