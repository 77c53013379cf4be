"""The Shaman HTTP endpoints as a Starlette app (the only module that imports Starlette).

``create_app(config)`` builds a standalone app; ``shaman_routes(shaman)`` gives the same routes
for an app that mounts Shaman at its root, as the manager does (BAT calls ``/files/…`` and
``/checkout/…`` relative to the Shaman URL). Handlers only translate HTTP: the rules live in
`shaman_core.store`, `shaman_core.checkout` and `shaman_core.cdf`, and every `ShamanError` is
turned into its status and a ``text/plain`` message in `_error_response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from shaman_core.allocator import tune_malloc_for_streaming
from shaman_core.body import BodyDecoder, body_decoder
from shaman_core.cdf import CheckoutEntry, DefinitionReader, parse_size
from shaman_core.checkout import format_requirements, requirements, validate_checkout_id
from shaman_core.config import Authenticator, Shaman, ShamanConfig
from shaman_core.errors import (
    DefinitionError,
    InvalidRequestError,
    ShamanError,
    UploadMismatchError,
)
from shaman_core.jwt import mint_token
from shaman_core.sanitise import sanitise_for_log
from shaman_core.store import BlobStatus, BlobUpload, WriteBuffer, validate_checksum

__all__ = ["create_app", "shaman_routes"]

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

# Go's server drains up to 256 KiB of a body left unread by an early reply and keeps the
# connection; larger (or chunked) bodies get "Connection: close" instead of being received.
_DRAIN_LIMIT = 256 * 1024
# Batches of received pieces that may wait for (or be in) hashing while the next is collected:
# 2 and 3 measured no faster than 1 on two cores, and each costs two more 4 MiB buffers.
_QUEUED_BATCHES = 1
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def create_app(
    config: ShamanConfig, *, run_gc: bool = True, authenticator: Authenticator | None = None
) -> Starlette:
    """A standalone Shaman ASGI app; with `run_gc` its lifespan runs the periodic GC.

    `authenticator` replaces the one the config describes (see `Shaman`).
    """
    shaman = Shaman(config, authenticator=authenticator)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(shaman.run_garbage_collector()) if run_gc else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = Starlette(routes=shaman_routes(shaman), lifespan=lifespan)
    app.state.shaman = shaman
    return app


def shaman_routes(shaman: Shaman) -> list[BaseRoute]:
    """The Shaman routes, for mounting into another Starlette app at its root.

    Serving uploads tunes the process's allocator (`tune_malloc_for_streaming`).
    """
    tune_malloc_for_streaming()
    guard = functools.partial(_authenticated, shaman)
    routes: list[BaseRoute] = [
        Route(
            "/files/{checksum}/{filesize}",
            guard(functools.partial(_files, shaman)),
            methods=["POST", "OPTIONS", "GET"],
        ),
        Route(
            "/checkout/requirements",
            guard(functools.partial(_requirements, shaman)),
            methods=["POST"],
        ),
        Route(
            "/checkout/create/{checkout_id}",
            guard(functools.partial(_create_checkout, shaman)),
            methods=["POST"],
        ),
        Route("/my-info", guard(_my_info), methods=["GET"]),
    ]
    if shaman.config.serve_get_token:
        routes.append(Route("/get-token", functools.partial(_get_token, shaman), methods=["GET"]))
    return routes


def _text(status: int, message: str | bytes, headers: dict[str, str] | None = None) -> Response:
    body = message if isinstance(message, bytes) else message.encode("utf-8", "surrogateescape")
    return PlainTextResponse(body, status_code=status, headers={**_NOSNIFF, **(headers or {})})


def _error_response(error: ShamanError) -> Response:
    return _text(error.status, f"{error.message}\n")


def _authenticated(shaman: Shaman, handler: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            subject = shaman.authenticator.authenticate(request.headers, request.cookies)
        except ShamanError as error:
            return _error_response(error)
        request.state.subject = subject
        try:
            response = await handler(request)
        except ShamanError as error:
            response = _error_response(error)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; just end the request
        except OSError as error:
            # The server's own storage failed (disk full, permissions): say so plainly.
            log.exception("I/O error serving %s %s", request.method, request.url.path)
            status = 507 if error.errno == errno.ENOSPC else 500
            response = _text(status, f"I/O error: {error.strerror or error}\n")
        if subject:
            response.headers["x-user-id-from-token"] = subject
        return response

    return endpoint


async def _my_info(request: Request) -> Response:
    subject = request.state.subject
    return _text(200, f"You are subject {subject}" if subject else "You are unknown to me")


async def _get_token(shaman: Shaman, request: Request) -> Response:
    if shaman.keys is None or shaman.keys.private_key is None:
        return _text(500, "error signing token: No private key loaded")
    token = mint_token(shaman.keys, "user-ID", lifetime=dt.timedelta(hours=24), audience="12345")
    return _text(200, token)


def _blob_address(request: Request) -> tuple[str, int]:
    checksum = request.path_params["checksum"]
    validate_checksum(checksum)
    size = parse_size(request.path_params["filesize"])
    if size is None:
        raise InvalidRequestError("invalid filesize")
    return checksum, size


async def _files(shaman: Shaman, request: Request) -> Response:
    checksum, size = _blob_address(request)
    if request.method == "OPTIONS":
        status = shaman.store.status(checksum, size)
        code = {BlobStatus.STORED: 200, BlobStatus.UPLOADING: 420}.get(status, 404)
        return Response(status_code=code)
    if request.method == "GET":
        return _download(shaman, checksum, size)
    return await _upload(shaman, request, checksum, size)


def _download(shaman: Shaman, checksum: str, size: int) -> Response:
    path = shaman.store.blob_path(checksum, size)
    try:
        actual_size = os.stat(path).st_size
    except OSError:
        return _text(404, "File Not Found\n")
    if actual_size != size:
        return _text(500, "File Size Incorrect\n")
    return FileResponse(
        path,
        media_type="application/binary",
        headers={"ETag": f"'{checksum}-{size}'", "X-Shaman-Checksum": checksum},
    )


def _early_reply(request: Request, status: int, message: str, *, location: bool) -> Response:
    headers: dict[str, str] = {}
    if location:
        path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        headers["Location"] = (path + (b"?" + query if query else b"")).decode("latin-1")
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit() or int(declared) > _DRAIN_LIMIT:
        headers["Connection"] = "close"
    return _text(status, message, headers)


async def _upload(shaman: Shaman, request: Request, checksum: str, size: int) -> Response:
    decoder = body_decoder(request.headers)
    store = shaman.store
    status = store.status(checksum, size)
    if status is BlobStatus.STORED:
        return _early_reply(request, 208, "File already stored\n", location=True)
    can_defer = request.headers.get("x-shaman-can-defer-upload") == "true"
    if status is BlobStatus.UPLOADING and can_defer:
        return _early_reply(request, 208, "File being uploaded, please defer\n", location=False)
    original = request.headers.get("x-shaman-original-filename")
    log.info(
        "receiving %s/%d (%s)",
        checksum,
        size,
        "-not specified-" if original is None else sanitise_for_log(original.encode("latin-1")),
    )
    loop = asyncio.get_running_loop()
    upload = await loop.run_in_executor(None, store.begin_upload, checksum, size)
    try:
        stored_meanwhile = await _receive(request, decoder, upload, loop)
        if stored_meanwhile:
            return _early_reply(request, 208, "File already stored\n", location=True)
        await loop.run_in_executor(None, upload.finish)
    except UploadMismatchError as error:
        if upload.received <= size:
            return _error_response(error)
        # The body is longer than promised: say so now rather than receive the rest.
        return _early_reply(request, 417, f"{error.message}\n", location=False)
    finally:
        upload.discard()
    return Response(status_code=204, headers=_NOSNIFF)


async def _receive(
    request: Request, decoder: BodyDecoder, upload: BlobUpload, loop: asyncio.AbstractEventLoop
) -> bool:
    """Stream the body into `upload`; True when another upload stored the blob meanwhile.

    Receiving, hashing and writing overlap. The event loop only collects the received pieces
    (no copy) until they fill a buffer; a worker thread copies them into a page-aligned buffer
    and hashes them (`BlobUpload.absorb`) while the loop collects the next ones, and another
    thread writes the buffer after that. The raw ASGI ``receive`` is read directly (no
    Starlette stream around it). Memory stays at `_QUEUED_BATCHES` + 1 aligned buffers and as
    many buffers' worth of received pieces, whatever the file size.
    """
    store = upload.store
    buffers = [upload.new_buffer() for _ in range(_QUEUED_BATCHES + 1)]
    capacity = buffers[0].capacity
    # The futures of the last batches (older ones are done), one per buffer, oldest first.
    absorbs: list[asyncio.Future[None]] = []
    writes: list[asyncio.Future[None]] = []
    batches = 0
    pieces: list[bytes | memoryview] = []
    collected = 0

    async def absorb(
        batch: list[bytes | memoryview],
        buffer: WriteBuffer,
        previous: asyncio.Future[None] | None,
        buffer_written: asyncio.Future[None] | None,
    ) -> None:
        if previous is not None:
            await previous  # the checksum takes the batches in order
        if buffer_written is not None:
            await buffer_written  # the buffer's last content is on disk
        buffer.clear()
        await loop.run_in_executor(None, upload.absorb, buffer, batch)

    async def write(
        buffer: WriteBuffer, absorbed: asyncio.Future[None], previous: asyncio.Future[None] | None
    ) -> None:
        await absorbed
        if previous is not None:
            await previous  # the buffers reach the file in order
        await loop.run_in_executor(None, upload.store_chunk, buffer)

    async def dispatch() -> bool:
        nonlocal batches, pieces, collected
        if len(absorbs) >= _QUEUED_BATCHES:
            await absorbs[-_QUEUED_BATCHES]  # a bounded number of batches wait for hashing
        if store.status(upload.checksum, upload.size, stored_only=True) is BlobStatus.STORED:
            return True
        upload.accept(collected)
        buffer = buffers[batches % len(buffers)]
        last_use = writes[0] if len(writes) == len(buffers) else None
        absorbed = asyncio.ensure_future(
            absorb(pieces, buffer, absorbs[-1] if absorbs else None, last_use)
        )
        written = asyncio.ensure_future(write(buffer, absorbed, writes[-1] if writes else None))
        absorbs.append(absorbed)
        writes.append(written)
        del absorbs[: -len(buffers)], writes[: -len(buffers)]
        batches += 1
        pieces, collected = [], 0
        return False

    async def feed(data: bytes | memoryview) -> bool:
        nonlocal collected
        while data:
            room = capacity - collected
            if len(data) <= room:
                pieces.append(data)
                collected += len(data)
                data = b""
            else:
                view = memoryview(data)
                pieces.append(view[:room])
                collected += room
                data = view[room:]
            if collected == capacity and await dispatch():
                return True
        return False

    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            for piece in decoder.decode(message.get("body", b"")):
                if await feed(piece):
                    return True
            if not message.get("more_body", False):
                break
        for piece in decoder.finish():
            if await feed(piece):
                return True
        if collected and await dispatch():
            return True
        for future in writes:
            await future
        return False
    finally:
        # Never leave a thread writing into a temp file that is about to be deleted.
        for future in [*absorbs, *writes]:
            with contextlib.suppress(Exception):
                await future


def _require_text_plain(request: Request) -> None:
    # Go demands exactly "text/plain"; a charset parameter is accepted here too.
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "text/plain":
        raise InvalidRequestError("Expecting text/plain content type")


async def _read_definition(shaman: Shaman, request: Request) -> list[bytes]:
    decoder = body_decoder(request.headers)
    limit = shaman.config.max_definition_bytes
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            for piece in decoder.decode(chunk):
                total += len(piece)
                if total > limit:
                    raise ShamanError(f"checkout definition larger than {limit} bytes", status=413)
                chunks.append(piece)
        chunks.extend(decoder.finish())
    except ClientDisconnect:
        raise ShamanError("ERROR context canceled\n") from None
    return chunks


def _parse_chunks(chunks: list[bytes]) -> list[CheckoutEntry]:
    reader = DefinitionReader()
    for chunk in chunks:
        reader.feed(chunk)
    return reader.finish()


async def _parse(shaman: Shaman, request: Request) -> list[CheckoutEntry]:
    chunks = await _read_definition(shaman, request)
    try:
        return await asyncio.to_thread(_parse_chunks, chunks)
    except DefinitionError as error:
        raise ShamanError(f"ERROR {error}\n") from None


async def _requirements(shaman: Shaman, request: Request) -> Response:
    _require_text_plain(request)
    body_decoder(request.headers)
    entries = await _parse(shaman, request)
    answer = await asyncio.to_thread(requirements, shaman.store, entries)
    return _text(200, format_requirements(answer))


async def _create_checkout(shaman: Shaman, request: Request) -> Response:
    _require_text_plain(request)
    body_decoder(request.headers)
    checkout_id = request.path_params["checkout_id"]
    validate_checkout_id(checkout_id)
    if os.path.lexists(shaman.checkouts.path_of(checkout_id)):
        return _text(409, f"checkout '{checkout_id}' already exists\n")
    entries = await _parse(shaman, request)
    relative = await asyncio.to_thread(shaman.checkouts.create, checkout_id, entries)
    return _text(200, relative)
