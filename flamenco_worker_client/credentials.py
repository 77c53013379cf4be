"""A worker's credentials: making them, keeping them on disk, and the registration token.

A worker registers once with a secret it made itself; the manager answers with the worker's ID.
The pair is the worker's HTTP Basic login from then on, so it is kept in a file only its owner
can read (mode 0600), written atomically so that a crash never leaves half a file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import string
import time
from pathlib import Path
from typing import Final

import attrs

from flamenco_protocol import ObjectId
from flamenco_protocol.errors import InvalidObjectId

__all__ = [
    "CredentialStore",
    "Credentials",
    "CredentialsFileError",
    "generate_secret",
    "registration_token",
]

SECRET_LENGTH: Final = 64
_SECRET_ALPHABET: Final = string.ascii_letters + string.digits
_TOKEN_LIFETIME_SECONDS: Final = 15 * 60


@attrs.frozen
class Credentials:
    """A worker's login: the ID the manager gave it and the secret it registered with."""

    worker_id: ObjectId
    """The worker ID, the Basic-auth user name."""
    secret: str = attrs.field(repr=False)
    """The secret, the Basic-auth password. Kept out of ``repr`` so it stays out of logs."""


class CredentialsFileError(ValueError):
    """The credentials file exists but cannot be read as credentials."""


def generate_secret() -> str:
    """A fresh worker secret: 64 characters from ``[A-Za-z0-9]``, from the system's RNG."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def registration_token(registration_secret: str, now: float | None = None) -> str:
    """The Bearer token for ``/register-worker`` when the manager has a registration secret.

    An HS256 JWT with ``iat`` = now and ``exp`` = now + 15 minutes, both as float Unix times
    (as the real worker sends them), signed with the whitespace-trimmed secret.
    """
    issued = time.time() if now is None else now
    header = {"typ": "JWT", "alg": "HS256"}
    claims = {"exp": issued + _TOKEN_LIFETIME_SECONDS, "iat": issued}
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    key = registration_secret.strip().encode()
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


@attrs.define
class CredentialStore:
    """Credentials kept as JSON in one file with mode 0600."""

    path: Path
    """The credentials file."""

    def load(self) -> Credentials | None:
        """The stored credentials, or ``None`` when there are none yet.

        :raises CredentialsFileError: the file exists but does not hold credentials.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            worker_id, secret = data["worker_id"], data["worker_secret"]
            if not isinstance(secret, str) or not secret:
                raise TypeError("worker_secret must be a non-empty string")
            return Credentials(ObjectId(worker_id), secret)
        except (ValueError, KeyError, TypeError, InvalidObjectId) as exc:
            raise CredentialsFileError(f"{self.path} holds no valid credentials: {exc}") from None

    def save(self, credentials: Credentials) -> None:
        """Write the credentials atomically; the file is readable by its owner only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        payload = json.dumps(
            {"worker_id": str(credentials.worker_id), "worker_secret": credentials.secret},
            indent=2,
        )
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # The mode given to open() is filtered by the umask; make sure it is exactly 0600.
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(payload + "\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise

    def forget(self) -> None:
        """Remove the stored credentials, if any."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
