"""Configuration of a Shaman instance and the service object built from it."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import attrs

from shaman_core.checkout import CheckoutBuilder
from shaman_core.gc import GCReport, collect_garbage, run_periodically
from shaman_core.jwt import JWTAuthenticator, KeyStore
from shaman_core.store import FileStore

__all__ = ["AllowEveryone", "Authenticator", "Shaman", "ShamanConfig"]

DAY = 24 * 3600.0


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path))


def _absolute_all(paths: object) -> tuple[Path, ...]:
    if not isinstance(paths, list | tuple):
        raise TypeError("extra_checkout_dirs must be a list or tuple of paths")
    return tuple(_absolute(p) for p in paths)


@attrs.frozen
class ShamanConfig:
    """Everything a Shaman needs; paths are made absolute when the config is built.

    Authentication: give `jwt_key_dir` (a directory with ``*-public*.pem`` trusted keys and
    optionally ``es256-private.pem``) or set `auth_disabled` to serve everyone; one of the two is
    required so that an open store is always a deliberate choice. `serve_get_token` enables the
    Go test route ``GET /get-token``, which mints a 24 h token for anyone who asks (BAT uses it
    when ``SHAMAN_JWT_TOKEN`` is unset); it needs the private key.

    Garbage collection: every `gc_period` seconds (0 disables it) blobs older than `gc_max_age`
    seconds that no symlink under `checkout_dir` or `extra_checkout_dirs` points at are deleted.
    """

    store_dir: Path = attrs.field(converter=_absolute)
    checkout_dir: Path = attrs.field(converter=_absolute)
    jwt_key_dir: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(_absolute)
    )
    auth_disabled: bool = False
    serve_get_token: bool = False
    jwt_leeway: float = 0.0
    extra_checkout_dirs: tuple[Path, ...] = attrs.field(default=(), converter=_absolute_all)
    gc_period: float = DAY
    gc_max_age: float = 31 * DAY
    create_waits_for_uploads: float = 10.0
    max_definition_bytes: int = 256 * 1024 * 1024

    def __attrs_post_init__(self) -> None:
        if self.jwt_key_dir is None and not self.auth_disabled:
            raise ValueError("set jwt_key_dir, or auth_disabled=True to serve without auth")
        for name in ("gc_period", "gc_max_age"):
            seconds = getattr(self, name)
            if not 0 <= seconds < math.inf:  # NaN fails every comparison
                raise ValueError(
                    f"{name} must be a finite number of seconds, 0 or more, not {seconds}"
                )


class Authenticator(Protocol):
    """Decides who sends a request: returns the subject, or raises `TokenError`."""

    def authenticate(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str:
        """The authenticated subject ("" when unknown)."""
        ...


class AllowEveryone:
    """The authenticator used when auth is disabled: every request passes, subject unknown."""

    def authenticate(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str:
        """Always "" (no subject)."""
        return ""


class Shaman:
    """A running Shaman: its store, checkout builder, authenticator and GC, from a config.

    Opening it creates the store and checkout directories and removes crash leftovers. An
    `authenticator` given here replaces the one the config describes (the manager passes its
    own, so that Shaman accepts the manager's tokens).
    """

    def __init__(self, config: ShamanConfig, *, authenticator: Authenticator | None = None) -> None:
        self.config = config
        self.store = FileStore(config.store_dir)
        self.checkouts = CheckoutBuilder(
            self.store, config.checkout_dir, wait_for_uploads=config.create_waits_for_uploads
        )
        self.keys: KeyStore | None = None
        self.authenticator: Authenticator
        if authenticator is not None:
            # The host application (the manager) decides who may use its Shaman.
            self.authenticator = authenticator
        elif config.auth_disabled:
            self.authenticator = AllowEveryone()
        else:
            assert config.jwt_key_dir is not None
            self.keys = KeyStore(config.jwt_key_dir)
            self.authenticator = JWTAuthenticator(self.keys, leeway=config.jwt_leeway)

    @property
    def checkout_roots(self) -> tuple[Path, ...]:
        """Every tree whose symlinks keep blobs alive."""
        return (self.config.checkout_dir, *self.config.extra_checkout_dirs)

    def collect_garbage(self, *, dry_run: bool = False) -> GCReport:
        """Run one GC sweep now (see `shaman_core.gc.collect_garbage`)."""
        return collect_garbage(
            self.store, self.checkout_roots, max_age=self.config.gc_max_age, dry_run=dry_run
        )

    async def run_garbage_collector(self) -> None:
        """Sweep every `gc_period` seconds until cancelled; returns at once when disabled."""
        if self.config.gc_period <= 0:
            return
        await run_periodically(
            self.store,
            self.checkout_roots,
            max_age=self.config.gc_max_age,
            period=self.config.gc_period,
        )
