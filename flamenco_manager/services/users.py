"""User tokens: the manager's ES256 key pair, made on first start, and tokens signed with it."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from flamenco_protocol.ids import ObjectId
from shaman_core.jwt import PRIVATE_KEY_NAME, KeyStore, generate_key_pair, mint_token

__all__ = ["check_token_request", "ensure_key_pair", "issue_token"]

log = logging.getLogger(__name__)


def ensure_key_pair(key_dir: Path) -> KeyStore:
    """The key store in ``key_dir``, with a new key pair when there is none yet."""
    if not (key_dir / PRIVATE_KEY_NAME).exists():
        try:
            generate_key_pair(key_dir)
            log.info("created the key pair for user tokens", extra={"key_dir": str(key_dir)})
        except FileExistsError:
            pass  # Another process made it first.
    return KeyStore(key_dir)


def check_token_request(name: str, lifetime: timedelta) -> None:
    """Raise :class:`ValueError` unless a token can be made for ``name`` and ``lifetime``."""
    if not name.strip():
        raise ValueError("a token needs a name")
    if lifetime <= timedelta(0):
        raise ValueError("a token's lifetime must be positive")


def issue_token(keys: KeyStore, name: str, lifetime: timedelta) -> str:
    """A token naming ``name`` (a person or a pipeline), valid for ``lifetime``."""
    check_token_request(name, lifetime)
    # A token ID, so that the token can be revoked (flamenco-manager token revoke).
    return mint_token(
        keys, name.strip(), lifetime=lifetime, extra_claims={"jti": str(ObjectId.new())}
    )
