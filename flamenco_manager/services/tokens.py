"""Revoking user tokens, and the authenticator that refuses revoked ones.

A token is named by its ``jti`` claim (every token ``token create`` signs has one) or, for a
token without one, by the SHA-256 of its text. Revoking adds that ID to a denylist in the
database, so every manager process sharing the database refuses it: each process re-reads the
(small) list at most every :data:`RELOAD_SECONDS`, and at once after revoking in-process.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import jwt

from flamenco_manager.storage import tokens as token_store
from flamenco_manager.storage.database import Database
from shaman_core.errors import TokenError
from shaman_core.jwt import JWTAuthenticator, token_from_request

from .context import Clock, utc_now

__all__ = ["RELOAD_SECONDS", "RevocationCheckingAuthenticator", "TokenRevocations", "token_id"]

RELOAD_SECONDS: Final = 5.0
"""How stale a process's copy of the denylist may be."""
_TOKEN_ID: Final = re.compile(r"[0-9a-fA-F]{24}|[0-9a-fA-F]{64}")


def token_id(token: str, claims: Mapping[str, Any] | None = None) -> str:
    """The ID a token is revoked by: its ``jti``, or the SHA-256 of its text."""
    if claims is None:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            claims = {}
    jti = claims.get("jti")
    if isinstance(jti, str) and jti and len(jti) <= 64:
        return jti
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRevocations:
    """The denylist of revoked tokens."""

    def __init__(self, database: Database, clock: Clock = utc_now) -> None:
        self.database = database
        self.clock = clock
        self._ids: frozenset[str] = frozenset()
        self._loaded = float("-inf")
        self._lock = threading.Lock()

    def revoke(self, token_or_id: str) -> tuple[str, bool]:
        """Revoke a token, given as its text or its ID; the ID, and whether it was new."""
        text = token_or_id.strip()
        if not text:
            raise ValueError("give the token, or its ID, to revoke")
        claims: dict[str, Any] = {}
        if text.count(".") == 2:
            try:
                claims = jwt.decode(text, options={"verify_signature": False})
            except jwt.PyJWTError:
                raise ValueError("this is not a token (it cannot be decoded)") from None
            identifier = token_id(text, claims)
        elif _TOKEN_ID.fullmatch(text):
            identifier = text.lower()
        else:
            raise ValueError(
                "this is neither a token nor a token ID (24 or 64 hexadecimal characters)"
            )
        expires = claims.get("exp")
        subject = claims.get("sub")
        with self.database.transaction() as connection:
            new = token_store.revoke(
                connection,
                identifier,
                subject if isinstance(subject, str) else "",
                self.clock(),
                datetime.fromtimestamp(expires, UTC) if isinstance(expires, int | float) else None,
            )
        self._loaded = float("-inf")
        return identifier, new

    def is_revoked(self, identifier: str) -> bool:
        """Whether the token with this ID was revoked (as of at most a few seconds ago)."""
        now = time.monotonic()
        if now - self._loaded > RELOAD_SECONDS:
            with self._lock:
                if now - self._loaded > RELOAD_SECONDS:
                    with self.database.transaction() as connection:
                        self._ids = frozenset(token_store.revoked_ids(connection))
                    self._loaded = now
        return identifier in self._ids


class RevocationCheckingAuthenticator:
    """A :class:`~shaman_core.jwt.JWTAuthenticator` that also refuses revoked tokens (401)."""

    def __init__(self, inner: JWTAuthenticator, revocations: TokenRevocations) -> None:
        self.inner = inner
        self.revocations = revocations

    def authenticate(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str:
        """The subject of the request's token; :class:`TokenError` if missing, bad or revoked."""
        token = token_from_request(headers, cookies)
        if token is None:
            return self.inner.authenticate(headers, cookies)  # Raises: no token.
        verified = self.inner.verify(token)
        if self.revocations.is_revoked(token_id(token, verified.claims)):
            raise TokenError("JWT token authorization required: the token has been revoked")
        return verified.subject
