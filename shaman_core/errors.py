"""The exceptions raised by `shaman_core`.

Every error carries the HTTP status that the Shaman endpoints answer it with, so that the ASGI
adapter converts them at one place::

    ShamanError                 base; .status (HTTP status hint), .message
    ├── DefinitionError         a checkout definition (CDF) line is invalid (400)
    ├── InvalidRequestError     a bad checksum, size, checkout ID or body (400)
    ├── UploadMismatchError     received bytes differ from the declared size/checksum (417)
    ├── CheckoutExistsError     the checkout ID is taken (409)
    ├── MissingFilesError       a checkout names blobs that are not stored (400)
    ├── CheckoutConflictError   the checkout cannot be laid out as asked (400)
    ├── GarbageCollectionError  a sweep could not scan a checkout tree; nothing deleted
    └── TokenError              a JWT is missing, malformed, badly signed (401) or expired (498)
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CheckoutConflictError",
    "CheckoutExistsError",
    "DefinitionError",
    "GarbageCollectionError",
    "InvalidRequestError",
    "MissingFilesError",
    "ShamanError",
    "TokenError",
    "UploadMismatchError",
]


class ShamanError(Exception):
    """Base of every Shaman error; `status` is the HTTP status the endpoints answer with."""

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class DefinitionError(ShamanError):
    """A checkout definition is invalid; `line` is the 1-based physical line number, if any."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(reason if line is None else f"invalid line {line}: {reason}")


class InvalidRequestError(ShamanError):
    """A request parameter or body is unusable (bad checksum, size, checkout ID, encoding)."""


class UploadMismatchError(ShamanError):
    """The uploaded bytes do not match the declared size or checksum."""

    status = 417


class CheckoutExistsError(ShamanError):
    """A checkout with this ID already exists; checkouts are never overwritten."""

    status = 409


class MissingFilesError(ShamanError):
    """A checkout definition names blobs that are not in the store (or still uploading)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        super().__init__("".join(f"file-unknown {path}\n" for path in self.paths))


class CheckoutConflictError(ShamanError):
    """The checkout cannot be laid out: a path clashes with another, or a parent is a symlink."""


class GarbageCollectionError(ShamanError):
    """A garbage-collection sweep could not scan everything it needs; it deleted nothing."""

    status = 500


class TokenError(ShamanError):
    """A JWT was refused: 401 for missing/malformed/badly signed tokens, 498 when expired."""

    status = 401
