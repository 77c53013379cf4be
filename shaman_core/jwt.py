"""ES256 JSON Web Tokens: key directories, verification, key pairs and minting.

Shared by the Shaman endpoints and the manager's user authentication. The rules kept here
(spec/shaman.md §3.1):

* the token comes from the ``jwtToken`` cookie when present and non-empty, else from an
  ``Authorization`` header starting with ``Bearer `` (any case);
* only ES256 is accepted: ``alg: none``, HMAC algorithms (including an HS256 token "signed" with
  one of our public keys) and every other algorithm are refused before any key is tried;
* the signature must verify against one of the trusted public keys; then ``exp`` (expired: 498),
  ``nbf`` and ``iat`` (not yet valid: 401) are checked with an optional leeway;
* the token needs a string ``sub`` claim, which becomes the authenticated subject.

A key directory holds trusted public keys in every ``*-public*.pem`` file (several PEM blocks per
file allowed, public keys or X.509 certificates, P-256 only) and optionally the private key
``es256-private.pem`` used to mint tokens. Files that cannot be read are skipped with a warning.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shaman_core.errors import TokenError

__all__ = [
    "JWTAuthenticator",
    "KeyStore",
    "VerifiedToken",
    "generate_key_pair",
    "mint_token",
    "token_from_request",
]

log = logging.getLogger(__name__)

PRIVATE_KEY_NAME = "es256-private.pem"
PUBLIC_KEY_NAME = "es256-public.pem"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)
_REQUIRED = "JWT token authorization required"
_CACHE_SIZE = 4096


@attrs.frozen
class VerifiedToken:
    """A token that passed verification: its `subject` (``sub``), claims and raw text."""

    subject: str
    claims: Mapping[str, Any]
    raw: str


def token_from_request(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
    """The token a request carries (cookie ``jwtToken`` first, then ``Authorization: Bearer``)."""
    cookie = cookies.get("jwtToken")
    if cookie:
        return cookie
    authorization = headers.get("authorization", "")
    if len(authorization) >= 7 and authorization[:7].lower() == "bearer ":
        return authorization[7:]
    return None


class KeyStore:
    """The keys in one key directory; `reload` re-reads them (a missing directory gives none)."""

    def __init__(self, key_dir: str | os.PathLike[str]) -> None:
        self.key_dir = Path(key_dir)
        self.public_keys: list[ec.EllipticCurvePublicKey] = []
        self.private_key: ec.EllipticCurvePrivateKey | None = None
        self.reload()

    def reload(self) -> None:
        """Read the trusted public keys and the optional private key again."""
        public_keys: list[ec.EllipticCurvePublicKey] = []
        if self.key_dir.is_dir():
            for path in sorted(self.key_dir.glob("*-public*.pem")):
                try:
                    public_keys.extend(_load_public_keys(path.read_bytes()))
                except (OSError, ValueError) as error:
                    log.warning("skipping public key file %s: %s", path, error)
        self.public_keys = public_keys
        self.private_key = None
        private_path = self.key_dir / PRIVATE_KEY_NAME
        if private_path.is_file():
            try:
                key = serialization.load_pem_private_key(private_path.read_bytes(), None)
            except (OSError, ValueError, TypeError) as error:
                log.warning("skipping private key %s: %s", private_path, error)
            else:
                if isinstance(key, ec.EllipticCurvePrivateKey) and _is_p256(key.curve):
                    self.private_key = key
                else:
                    log.warning("skipping private key %s: not a P-256 EC key", private_path)
        if not self.public_keys:
            log.warning("no trusted public keys in %s: every token will be refused", self.key_dir)


def _is_p256(curve: ec.EllipticCurve) -> bool:
    return isinstance(curve, ec.SECP256R1)


def _load_public_keys(data: bytes) -> list[ec.EllipticCurvePublicKey]:
    keys: list[ec.EllipticCurvePublicKey] = []
    for match in _PEM_BLOCK.finditer(data):
        block = match.group(0)
        if match.group(1) == b"CERTIFICATE":
            key: object = x509.load_pem_x509_certificate(block).public_key()
        else:
            key = serialization.load_pem_public_key(block)
        if not isinstance(key, ec.EllipticCurvePublicKey) or not _is_p256(key.curve):
            raise ValueError("not a P-256 EC public key")
        keys.append(key)
    if not keys:
        raise ValueError("no PEM block found")
    return keys


class JWTAuthenticator:
    """Verifies ES256 tokens against a `KeyStore`.

    `leeway` (seconds) tolerates clock skew on ``exp``/``nbf``/``iat``; Go used none, which
    is the default. Verified tokens are cached (the expiry is still checked on every use), so a
    client sending the same token on every request pays for the signature check once.
    """

    def __init__(self, keys: KeyStore, *, leeway: float = 0.0) -> None:
        self.keys = keys
        self.leeway = leeway
        self._cache: dict[str, VerifiedToken] = {}

    def authenticate(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str:
        """Return the subject of the request's token or raise `TokenError` (401/498)."""
        token = token_from_request(headers, cookies)
        if token is None:
            raise TokenError(f"{_REQUIRED}: Authentication token is required")
        return self.verify(token).subject

    def verify(self, token: str) -> VerifiedToken:
        """Verify `token`; raise `TokenError` with status 401, or 498 when it expired."""
        cached = self._cache.get(token)
        if cached is not None:
            expires = cached.claims.get("exp")
            if isinstance(expires, int | float) and time.time() > expires + self.leeway:
                raise TokenError("JWT token expired", status=498)
            return cached
        verified = self._verify_uncached(token)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = verified
        return verified

    def _verify_uncached(self, token: str) -> VerifiedToken:
        if token.count(".") != 2:
            raise TokenError(f"{_REQUIRED}: token is malformed")
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.InvalidTokenError as error:
            raise TokenError(f"{_REQUIRED}: token is malformed: {error}") from None
        algorithm = header.get("alg")
        if algorithm != "ES256":
            raise TokenError(f"{_REQUIRED}: signing method {algorithm} is invalid")
        for key in self.keys.public_keys:
            try:
                claims = pyjwt.decode(
                    token,
                    key,
                    algorithms=["ES256"],
                    leeway=self.leeway,
                    options={"verify_aud": False, "verify_iss": False},
                )
            except pyjwt.InvalidSignatureError:
                continue
            except pyjwt.ExpiredSignatureError:
                raise TokenError("JWT token expired", status=498) from None
            except pyjwt.InvalidTokenError as error:
                raise TokenError(f"{_REQUIRED}: {error}") from None
            subject = claims.get("sub")
            if not isinstance(subject, str):
                raise TokenError(f"{_REQUIRED}: token has no string 'sub' claim")
            return VerifiedToken(subject=subject, claims=claims, raw=token)
        raise TokenError(f"{_REQUIRED}: signature is not valid for any of our keys")


def generate_key_pair(key_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Create a P-256 key pair in `key_dir`: ``es256-private.pem`` (mode 0600) and
    ``es256-public.pem``. Refuses to overwrite an existing private key (`FileExistsError`).
    """
    directory = Path(key_dir)
    directory.mkdir(parents=True, exist_ok=True)
    private_key = ec.generate_private_key(ec.SECP256R1())
    private_path = directory / PRIVATE_KEY_NAME
    public_path = directory / PUBLIC_KEY_NAME
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "EC PRIVATE KEY", as Go reads it
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as private_file:
        private_file.write(private_pem)
    public_path.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def mint_token(
    private_key: ec.EllipticCurvePrivateKey | KeyStore,
    subject: str,
    *,
    lifetime: dt.timedelta = dt.timedelta(hours=24),
    audience: str | Sequence[str] | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """Sign an ES256 token for `subject`, valid from now for `lifetime`."""
    if isinstance(private_key, KeyStore):
        if private_key.private_key is None:
            raise ValueError(f"No private key loaded from {private_key.key_dir}")
        private_key = private_key.private_key
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": now,
        "exp": now + int(lifetime.total_seconds()),
    }
    if audience is not None:
        claims["aud"] = audience
    if extra_claims:
        claims.update(extra_claims)
    return pyjwt.encode(claims, private_key, algorithm="ES256", headers={"typ": "JWT"})
