"""Every error the worker client raises, as one tree.

::

    FlamencoClientError                 every error of this package
    ├── TransportError                  no answer from the manager: retry later, maybe elsewhere
    │   ├── ConnectError                the manager could not be reached (nothing was sent)
    │   ├── RequestTimeout              no answer in time (the request may have arrived)
    │   └── NetworkError                the connection broke while talking
    └── ManagerError                    the manager answered, but not with what was asked for
        ├── InvalidResponse             an expected status, but its body is not the document
        ├── UnexpectedStatus            a status code the endpoint catalogue does not list
        │   └── ServerError             5xx: the manager failed (transient)
        └── RequestRejected             a listed 4xx: the manager refused this request
            ├── BadRequest              400: the body was malformed
            ├── Unauthorized            401: unknown worker or wrong secret
            ├── RegistrationRefused     403: registration secret missing or wrong
            ├── TaskNotFound            404: no such task (or a malformed task ID)
            ├── NoTaskTypes             406: the worker supports no task types
            ├── TaskConflict            409: the task belongs to another worker
            ├── EmptyOutputList         422: ``/output-produced`` without paths
            └── TokenExpired            498: the user token for ``/logfile`` has expired

Transport errors and server errors are *transient*: the same request may succeed later, and the
client retries them (see :class:`~flamenco_worker_client.retry.RetryPolicy`). The others are
the manager's final word on that request. :class:`ManagerError` carries the endpoint, the status
code and the body text, so that a log line can say exactly what happened.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ConnectError",
    "EmptyOutputList",
    "FlamencoClientError",
    "InvalidResponse",
    "ManagerError",
    "NetworkError",
    "NoTaskTypes",
    "RegistrationRefused",
    "RequestRejected",
    "RequestTimeout",
    "ServerError",
    "TaskConflict",
    "TaskNotFound",
    "TokenExpired",
    "TransportError",
    "Unauthorized",
    "UnexpectedStatus",
]

_BODY_EXCERPT = 200


class FlamencoClientError(Exception):
    """Base of every error raised by :mod:`flamenco_worker_client`."""

    transient: bool = False
    """Whether the same request may succeed when sent again later."""
    retry_after: float | None = None
    """Seconds the manager asked the client to wait before trying again (its ``Retry-After``
    header), when it said."""


class TransportError(FlamencoClientError):
    """The manager gave no answer: it could not be reached, or the connection failed."""

    transient = True

    def __init__(self, endpoint: str, message: str) -> None:
        self.endpoint = endpoint
        """Name of the endpoint that was called (as in the catalogue)."""
        super().__init__(f"{endpoint}: {message}")


class ConnectError(TransportError):
    """The manager could not be reached; the request was not sent."""


class RequestTimeout(TransportError):
    """The manager did not answer in time; the request may have reached it."""


class NetworkError(TransportError):
    """The connection broke while the request or the answer was under way."""


class ManagerError(FlamencoClientError):
    """The manager answered, but not with what the request asked for."""

    def __init__(self, endpoint: str, status_code: int, body: str, message: str = "") -> None:
        self.endpoint = endpoint
        """Name of the endpoint that was called (as in the catalogue)."""
        self.status_code = status_code
        """The HTTP status of the answer."""
        self.body = body
        """The answer's body as text (possibly empty)."""
        detail = message or body.strip()[:_BODY_EXCERPT] or "(empty body)"
        super().__init__(f"{endpoint}: {status_code} {detail}")


class InvalidResponse(ManagerError):
    """The status code was one the endpoint sends, but the body is not its document."""


class UnexpectedStatus(ManagerError):
    """The manager answered with a status code the endpoint catalogue does not list."""


class ServerError(UnexpectedStatus):
    """The manager failed (5xx); worth trying again later."""

    transient = True

    def __init__(
        self,
        endpoint: str,
        status_code: int,
        body: str,
        message: str = "",
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(endpoint, status_code, body, message)
        self.retry_after = retry_after


class RequestRejected(ManagerError):
    """The manager refused the request with one of the endpoint's documented 4xx codes."""


class BadRequest(RequestRejected):
    """400: the manager could not decode the request body."""


class Unauthorized(RequestRejected):
    """401: the worker is unknown to the manager, or its secret is wrong."""


class RegistrationRefused(RequestRejected):
    """403 from ``/register-worker``: the registration secret is missing or wrong."""


class TaskNotFound(RequestRejected):
    """404: the manager knows no such task."""


class NoTaskTypes(RequestRejected):
    """406 from ``/task``: the worker signed on without task types."""


class TaskConflict(RequestRejected):
    """409 from a task update: the task is assigned to another worker."""


class EmptyOutputList(RequestRejected):
    """422 from ``/output-produced``: the list of paths was empty."""


class TokenExpired(RequestRejected):
    """498 from ``/logfile``: the user token has expired."""
