"""Typed clients for every worker endpoint: :class:`Client` (blocking) and :class:`AsyncClient`.

Both build their requests with the same :class:`~flamenco_worker_client.calls.RequestCore`
and read the answers with the same :meth:`Call.interpret`; they differ only in how a request
travels. Each method returns the endpoint's document or one of the result types of
:mod:`~flamenco_worker_client.results`, and raises one of
:mod:`~flamenco_worker_client.exceptions` for everything else.

Endpoint paths are joined to the root of the manager URL, as the real worker does: the manager
serves the worker protocol at the root of its host and port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Final, Self, TypeVar
from urllib.parse import urlsplit

import httpx

from flamenco_protocol import (
    MayKeepRunningResponse,
    TaskUpdate,
    Worker,
    WorkerRegistration,
    WorkerSignonDoc,
)

from . import exceptions as exc
from .calls import Call, RequestCore
from .credentials import Credentials
from .results import FetchResult, StatusResult
from .retry import RetryPolicy

__all__ = ["DEFAULT_TIMEOUT", "USER_AGENT", "AsyncClient", "Client", "manager_root"]

T = TypeVar("T")

USER_AGENT: Final = "flamenco-sdk-worker/0.1.0"
"""The ``User-Agent`` the clients send; the manager shows it as the worker's software."""

DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=5.0)
"""Per request: 5 s to connect, 10 s for each read and write."""


def manager_root(manager_url: str) -> str:
    """The scheme, host and port of ``manager_url``: where the worker endpoints live.

    :raises ValueError: the URL is not an absolute ``http``/``https`` URL.
    """
    parts = urlsplit(manager_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) manager URL: {manager_url!r}")
    try:
        parts.port  # noqa: B018 -- urlsplit checks the port only when it is read
    except ValueError as error:
        raise ValueError(f"bad port in manager URL {manager_url!r}: {error}") from None
    return f"{parts.scheme}://{parts.netloc}"


def _transport_error(name: str, error: httpx.TransportError) -> exc.TransportError:
    detail = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return exc.ConnectError(name, detail)
    if isinstance(error, httpx.TimeoutException):
        return exc.RequestTimeout(name, detail)
    return exc.NetworkError(name, detail)


class _ClientBase:
    """What both clients hold: the request core, the retry policy and the client options."""

    def __init__(
        self,
        manager_url: str,
        *,
        credentials: Credentials | None,
        registration_secret: str,
        timeout: float | httpx.Timeout,
        retry: RetryPolicy,
        user_agent: str,
    ) -> None:
        self.manager_url = manager_root(manager_url)
        self._core = RequestCore(credentials, registration_secret)
        self.retry = retry
        """How transient failures are retried."""
        self._options: dict[str, object] = {
            "base_url": self.manager_url,
            "timeout": timeout,
            "headers": {"User-Agent": user_agent},
            "follow_redirects": True,
        }

    @property
    def credentials(self) -> Credentials | None:
        """The worker's login, used on every endpoint but registration."""
        return self._core.credentials

    @credentials.setter
    def credentials(self, credentials: Credentials | None) -> None:
        self._core.credentials = credentials

    @property
    def core(self) -> RequestCore:
        """The request builder; ``send(core.<endpoint>(...))`` is what every method does."""
        return self._core


class Client(_ClientBase):
    """A blocking client for the worker endpoints of a Flamenco manager.

    Use it as a context manager, or call :meth:`close`. ``transport`` lets tests and embedders
    plug in any httpx transport (``httpx.MockTransport``, ``httpx.WSGITransport``, respx).
    """

    def __init__(
        self,
        manager_url: str,
        *,
        credentials: Credentials | None = None,
        registration_secret: str = "",
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        user_agent: str = USER_AGENT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            manager_url,
            credentials=credentials,
            registration_secret=registration_secret,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            user_agent=user_agent,
        )
        self._http = httpx.Client(transport=transport, **self._options)  # type: ignore[arg-type]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying transient failures, and return its result."""
        delays = self.retry.delays()
        while True:
            try:
                return self._send_once(call)
            except exc.FlamencoClientError as error:
                delay = next(delays, None)
                if delay is None or not self.retry.should_retry(error, call.repeatable):
                    raise
                time.sleep(self.retry.wait(delay, error))

    def _send_once(self, call: Call[T]) -> T:
        try:
            response = self._http.send(call.build_request(self._http))
        except httpx.TransportError as error:
            raise _transport_error(call.endpoint.name, error) from error
        return call.interpret(response)

    def register_worker(self, registration: WorkerRegistration) -> Worker:
        """Register a new worker; the answer's ``id`` is its user name from now on."""
        return self.send(self._core.register_worker(registration))

    def sign_on(self, sign_on: WorkerSignonDoc) -> None:
        """Tell the manager the worker (re)starts, with its current nickname and task types."""
        self.send(self._core.sign_on(sign_on))

    def sign_off(self) -> None:
        """Tell the manager the worker stops; it queues the worker's tasks again."""
        self.send(self._core.sign_off())

    def fetch_task(self) -> FetchResult:
        """Ask for a task: a ``Task``, ``NoTask`` or ``StatusChangeRequested``."""
        return self.send(self._core.fetch_task())

    def update_task(self, task_id: str, update: TaskUpdate) -> None:
        """Report on a task; :class:`TaskConflict` when another worker holds it."""
        self.send(self._core.update_task(task_id, update))

    def return_task(self, task_id: str) -> None:
        """Give a task back to the queue."""
        self.send(self._core.return_task(task_id))

    def may_i_run(self, task_id: str) -> MayKeepRunningResponse:
        """Whether the worker may keep running the task."""
        return self.send(self._core.may_i_run(task_id))

    def status_change(self) -> StatusResult:
        """Whether a status change is pending."""
        return self.send(self._core.status_change())

    def ack_status_change(self, status: str) -> None:
        """Tell the manager the worker took ``status``."""
        self.send(self._core.ack_status_change(status))

    def output_produced(self, paths: Sequence[str]) -> None:
        """Tell the manager a command wrote these files."""
        self.send(self._core.output_produced(paths))

    def task_log(self, job_id: str, task_id: str, user_token: str) -> str:
        """A task's log, with a user's token (this endpoint is not worker-authenticated)."""
        return self.send(self._core.task_log(job_id, task_id, user_token))


class AsyncClient(_ClientBase):
    """The asyncio twin of :class:`Client`: the same methods, awaited."""

    def __init__(
        self,
        manager_url: str,
        *,
        credentials: Credentials | None = None,
        registration_secret: str = "",
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        user_agent: str = USER_AGENT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            manager_url,
            credentials=credentials,
            registration_secret=registration_secret,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            user_agent=user_agent,
        )
        self._http = httpx.AsyncClient(transport=transport, **self._options)  # type: ignore[arg-type]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying transient failures, and return its result."""
        delays = self.retry.delays()
        while True:
            try:
                return await self._send_once(call)
            except exc.FlamencoClientError as error:
                delay = next(delays, None)
                if delay is None or not self.retry.should_retry(error, call.repeatable):
                    raise
                await asyncio.sleep(self.retry.wait(delay, error))

    async def _send_once(self, call: Call[T]) -> T:
        try:
            response = await self._http.send(call.build_request(self._http))
        except httpx.TransportError as error:
            raise _transport_error(call.endpoint.name, error) from error
        return call.interpret(response)

    async def register_worker(self, registration: WorkerRegistration) -> Worker:
        """Register a new worker; the answer's ``id`` is its user name from now on."""
        return await self.send(self._core.register_worker(registration))

    async def sign_on(self, sign_on: WorkerSignonDoc) -> None:
        """Tell the manager the worker (re)starts, with its current nickname and task types."""
        await self.send(self._core.sign_on(sign_on))

    async def sign_off(self) -> None:
        """Tell the manager the worker stops; it queues the worker's tasks again."""
        await self.send(self._core.sign_off())

    async def fetch_task(self) -> FetchResult:
        """Ask for a task: a ``Task``, ``NoTask`` or ``StatusChangeRequested``."""
        return await self.send(self._core.fetch_task())

    async def update_task(self, task_id: str, update: TaskUpdate) -> None:
        """Report on a task; :class:`TaskConflict` when another worker holds it."""
        await self.send(self._core.update_task(task_id, update))

    async def return_task(self, task_id: str) -> None:
        """Give a task back to the queue."""
        await self.send(self._core.return_task(task_id))

    async def may_i_run(self, task_id: str) -> MayKeepRunningResponse:
        """Whether the worker may keep running the task."""
        return await self.send(self._core.may_i_run(task_id))

    async def status_change(self) -> StatusResult:
        """Whether a status change is pending."""
        return await self.send(self._core.status_change())

    async def ack_status_change(self, status: str) -> None:
        """Tell the manager the worker took ``status``."""
        await self.send(self._core.ack_status_change(status))

    async def output_produced(self, paths: Sequence[str]) -> None:
        """Tell the manager a command wrote these files."""
        await self.send(self._core.output_produced(paths))

    async def task_log(self, job_id: str, task_id: str, user_token: str) -> str:
        """A task's log, with a user's token (this endpoint is not worker-authenticated)."""
        return await self.send(self._core.task_log(job_id, task_id, user_token))
