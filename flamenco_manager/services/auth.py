"""Worker secrets and registration tokens.

Secrets are stored as scrypt hashes. Checking one costs milliseconds on purpose, which the Go
manager paid (as bcrypt) on every request and which became its bottleneck; here a successful check
is remembered as a fast SHA-256 digest of the presented credentials, so a worker pays the slow hash
once per process and per :data:`CACHE_SECONDS`, and any other secret still goes through scrypt.
The ``Authorization`` header those credentials came in is remembered with them: the worker's next
requests, which send the same header, are recognised by one dictionary lookup, without decoding
it or hashing it again.

The cost is N = 2**12 (4 MiB, about 16 ms): worker secrets are 64 random characters made by the
worker, so the hash has only to make a stolen database useless, which it does at any cost; what a
higher cost buys is a manager swamped when a thousand workers reconnect to freshly started
processes, each of which verifies every secret once (measured at N = 2**14: time-outs in the first
minute with 1,000 workers on two processes). Hashes made with other parameters still verify: each
hash records its own.

Each scrypt allocates its memory on the thread that runs it. Run on the request thread pool, a
burst of registrations had dozens at once, and the allocator kept every thread's arena afterwards;
they run on a few threads of their own instead (:data:`HASHING_THREADS`), which bounds that memory
and costs no throughput, as scrypt is CPU-bound anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import jwt

__all__ = [
    "REGISTRATION_CLOCK_SKEW",
    "RegistrationRefused",
    "WorkerAuthenticator",
    "check_registration_token",
    "hash_secret",
    "verify_secret",
]

_SCRYPT_N: Final = 2**12
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
CACHE_SECONDS: Final = 600.0
CACHE_SIZE: Final = 20_000
REGISTRATION_CLOCK_SKEW: Final = 60.0
"""Seconds by which a worker's clock may differ from the manager's when it signs a registration."""
HASHING_THREADS: Final = min(4, os.cpu_count() or 1)
"""Threads computing scrypt hashes; callers wait for them."""
_hashing = ThreadPoolExecutor(HASHING_THREADS, thread_name_prefix="scrypt")


def _scrypt(secret: bytes, salt: bytes, n: int, r: int, p: int, dklen: int = 64) -> bytes:
    return _hashing.submit(hashlib.scrypt, secret, salt=salt, n=n, r=r, p=p, dklen=dklen).result()


def hash_secret(secret: str) -> str:
    """A salted scrypt hash of a worker secret, as ``scrypt$N$r$p$salt$hash``."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches a hash made by :func:`hash_secret`."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(
            secret.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


_Verified = tuple[bytes, float, str | None]


class WorkerAuthenticator:
    """Checks worker credentials, remembering recent successes.

    ``lookup`` gives the stored hash of a worker ID, or ``None`` for an unknown worker.
    """

    def __init__(self, lookup: Callable[[str], str | None]) -> None:
        self._lookup = lookup
        # By worker: the credentials' digest, the end of their verification, and the header they
        # came in once remembered.
        self._verified: OrderedDict[str, _Verified] = OrderedDict()
        # The remembered headers: header -> (worker, end of the verification). Read without the
        # lock (a dict lookup is atomic); written with it.
        self._headers: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def remembered_header(self, authorization: str) -> str | None:
        """The worker whose credentials came in this exact ``Authorization`` header, verified
        recently and :meth:`remember_header`-ed; ``None`` otherwise (the header must then be
        decoded and checked)."""
        entry = self._headers.get(authorization)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def remember_header(self, authorization: str, worker_id: str, secret: str) -> None:
        """Remember the header in which ``worker_id`` and ``secret`` came, once they have been
        verified (:meth:`is_remembered` or :meth:`authenticate` said yes): until that
        verification expires, :meth:`remembered_header` recognises it. Nothing happens when
        they are no longer remembered (forgotten meanwhile)."""
        fingerprint = _fingerprint(worker_id, secret)
        with self._lock:
            cached = self._verified.get(worker_id)
            if cached is None or not hmac.compare_digest(cached[0], fingerprint):
                return
            self._drop_header(cached)
            self._verified[worker_id] = (cached[0], cached[1], authorization)
            self._headers[authorization] = (worker_id, cached[1])

    def is_remembered(self, worker_id: str, secret: str) -> bool:
        """Whether these credentials were verified recently: a check without I/O or hashing cost.

        Callers use it to answer most requests without leaving the event loop, and call
        :meth:`authenticate` (which may hash and read the database) only when it says no.
        """
        fingerprint = _fingerprint(worker_id, secret)
        with self._lock:
            cached = self._verified.get(worker_id)
            if (
                cached is not None
                and cached[1] > time.monotonic()
                and hmac.compare_digest(cached[0], fingerprint)
            ):
                self._verified.move_to_end(worker_id)
                return True
        return False

    def authenticate(self, worker_id: str, secret: str) -> bool:
        """Whether ``secret`` is the secret of ``worker_id``."""
        if self.is_remembered(worker_id, secret):
            return True
        fingerprint = _fingerprint(worker_id, secret)
        now = time.monotonic()
        stored = self._lookup(worker_id)
        if stored is None or not verify_secret(secret, stored):
            return False
        self._remember(worker_id, fingerprint, now)
        return True

    def remember(self, worker_id: str, secret: str) -> None:
        """Take ``secret`` as verified for ``worker_id`` (it just registered with it)."""
        self._remember(worker_id, _fingerprint(worker_id, secret), time.monotonic())

    def _remember(self, worker_id: str, fingerprint: bytes, now: float) -> None:
        with self._lock:
            # A new verification: the header is remembered again with it (remember_header).
            self._drop_header(self._verified.get(worker_id))
            self._verified[worker_id] = (fingerprint, now + CACHE_SECONDS, None)
            self._verified.move_to_end(worker_id)
            while len(self._verified) > CACHE_SIZE:
                self._drop_header(self._verified.popitem(last=False)[1])

    def forget(self, worker_id: str) -> None:
        """Drop what is remembered of a worker (it was forgotten or registered again)."""
        with self._lock:
            self._drop_header(self._verified.pop(worker_id, None))

    def _drop_header(self, verified: _Verified | None) -> None:
        if verified is not None and verified[2] is not None:
            self._headers.pop(verified[2], None)


def _fingerprint(worker_id: str, secret: str) -> bytes:
    return hashlib.sha256(f"{worker_id}\0{secret}".encode()).digest()


class RegistrationRefused(Exception):
    """A registration lacks the token the registration secret requires; the message says why."""


def check_registration_token(authorization: str, registration_secret: str) -> None:
    """Check the Bearer token of a registration against the pre-shared secret.

    With an empty secret registration is open. Otherwise the token must be signed with the
    secret by an HMAC algorithm, and its ``exp``, ``iat`` and ``nbf`` claims, when present, must
    hold now; ``iat`` may lie up to :data:`REGISTRATION_CLOCK_SKEW` ahead. The real worker sends
    float timestamps; they are accepted. It stamps ``iat`` with its own clock, so without the
    leeway a worker whose clock runs a second ahead could never register (it exits on the 403).
    """
    key = registration_secret.strip()
    if not key:
        return
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RegistrationRefused("Missing Bearer token for registration")
    try:
        claims = jwt.decode(
            token.strip(),
            key,
            algorithms=["HS256", "HS384", "HS512"],
            # ``iat`` is checked below, with leeway; PyJWT would give it the same as ``exp``.
            options={"require": [], "verify_aud": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise RegistrationRefused("Invalid Bearer token for registration") from None
    issued = claims.get("iat")
    if issued is not None and (
        not isinstance(issued, int | float) or issued > time.time() + REGISTRATION_CLOCK_SKEW
    ):
        raise RegistrationRefused("Invalid Bearer token for registration")
