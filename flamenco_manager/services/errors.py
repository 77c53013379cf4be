"""What services raise when a request cannot be done; the web layer turns each into a status.

::

    ServiceError        base; ``message`` is meant for the client
    ├── NotFound        the worker, task or job does not exist
    ├── Conflict        someone else holds it (a task of another worker, an ID in use)
    ├── Forbidden       not allowed for this caller
    ├── UnknownWorker   the authenticated worker is not (or no longer) in the database
    ├── Invalid         the request breaks a rule (a status that may not be reported, ...)
    └── StorageFailure  the disk or database failed; nothing was changed
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "ServiceError",
    "StorageFailure",
    "UnknownWorker",
]


class ServiceError(Exception):
    """A request that cannot be done; ``message`` says why, for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    """The worker, task or job does not exist."""


class Conflict(ServiceError):
    """Someone else holds what the request is about."""


class Forbidden(ServiceError):
    """The caller may not do this."""


class UnknownWorker(ServiceError):
    """The worker the credentials name does not exist (any more).

    Credentials are checked against a cache, so a worker deleted by another process (or between
    the check and the handler) still gets this far. For the caller this is a failed login: the
    real worker re-registers only when ``/sign-on`` answers 401.
    """

    def __init__(self, message: str, worker_id: str) -> None:
        super().__init__(message)
        self.worker_id = worker_id


class Invalid(ServiceError):
    """The request breaks a rule of the protocol."""


class StorageFailure(ServiceError):
    """The disk or the database failed; nothing was changed."""
