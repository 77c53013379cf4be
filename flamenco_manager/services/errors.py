"""What services raise when a request cannot be done; the web layer turns each into a status.

::

    ServiceError        base; ``message`` is meant for the client
    ├── NotFound        the worker, task or job does not exist
    ├── Conflict        someone else holds it (a task of another worker, an ID in use)
    ├── Forbidden       not allowed for this caller (refused registration, vanished worker)
    ├── Invalid         the request breaks a rule (a status that may not be reported, ...)
    └── StorageFailure  the disk or database failed; nothing was changed
"""

from __future__ import annotations

__all__ = ["Conflict", "Forbidden", "Invalid", "NotFound", "ServiceError", "StorageFailure"]


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


class Invalid(ServiceError):
    """The request breaks a rule of the protocol."""


class StorageFailure(ServiceError):
    """The disk or the database failed; nothing was changed."""
