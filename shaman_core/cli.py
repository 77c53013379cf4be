"""The ``shaman`` command: serve a store, pack a directory, collect garbage, manage JWT keys.

shaman serve --store DIR --checkouts DIR (--jwt-keys DIR | --no-auth) [--host H --port P]
shaman pack DIR URL [--checkout-id ID] [--token T] [--jobs N]
shaman gc --store DIR --checkouts DIR [--extra-checkouts DIR ...] [--max-age DAYS] [--delete]
shaman keys create DIR
shaman token mint --jwt-keys DIR --subject SUB [--hours H]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from shaman_core.errors import ShamanError

__all__ = ["main"]


def _number(
    kind: type[float] | type[int], least: float, most: float = math.inf, *, above: bool = False
) -> Any:
    """An argparse type: a finite number of `kind` from `least` (excluded when `above`) to
    `most`, or an error that says which numbers are taken."""
    noun = "whole number" if kind is int else "number"
    if above:
        wanted = f"a {noun} above {least:g}"
    elif math.isinf(most):
        wanted = f"a {noun} of {least:g} or more"
    else:
        wanted = f"a {noun} from {least:g} to {most:g}"

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give {wanted}") from None
        taken = least < value if above else least <= value  # NaN fails every comparison
        if not (taken and value <= most) or math.isinf(value):
            raise argparse.ArgumentTypeError(f"{text}: give {wanted}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shaman", description="Flamenco 2.x Shaman file store")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the Shaman endpoints with uvicorn")
    serve.add_argument("--store", required=True, help="file store directory")
    serve.add_argument("--checkouts", required=True, help="checkout root directory")
    auth = serve.add_mutually_exclusive_group(required=True)
    auth.add_argument("--jwt-keys", help="directory with *-public*.pem trusted keys")
    auth.add_argument("--no-auth", action="store_true", help="serve everyone without a token")
    serve.add_argument(
        "--serve-get-token",
        action="store_true",
        help="enable GET /get-token, which mints a token for anyone (BAT's fallback)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_number(int, 0, 65535), default=8083)
    serve.add_argument(
        "--gc-period-hours", type=_number(float, 0), default=24.0, help="0 disables GC"
    )
    serve.add_argument("--gc-max-age-days", type=_number(float, 0), default=31.0)

    pack = commands.add_parser("pack", help="upload a directory and create a checkout")
    pack.add_argument("directory")
    pack.add_argument("url", help="Shaman base URL, e.g. http://manager:8080/")
    pack.add_argument("--checkout-id", help="create this checkout when all files are there")
    pack.add_argument("--token", help="JWT (default: $SHAMAN_JWT_TOKEN)")
    pack.add_argument("--jobs", type=_number(int, 1), default=4, help="concurrent uploads")
    pack.add_argument("--no-progress", action="store_true")

    gc = commands.add_parser("gc", help="delete old blobs no checkout links to")
    gc.add_argument("--store", required=True)
    gc.add_argument("--checkouts", required=True)
    gc.add_argument("--extra-checkouts", nargs="*", default=[])
    gc.add_argument("--max-age-days", type=_number(float, 0), default=31.0)
    gc.add_argument("--delete", action="store_true", help="really delete (default: dry run)")

    keys = commands.add_parser("keys", help="JWT key pairs")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="create es256-private/public.pem in DIR")
    create.add_argument("directory")

    token = commands.add_parser("token", help="JWT tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    mint = token_commands.add_parser("mint", help="print a token signed with the private key")
    mint.add_argument("--jwt-keys", required=True)
    mint.add_argument("--subject", required=True)
    mint.add_argument("--hours", type=_number(float, 0, above=True), default=24.0)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from shaman_core.asgi import create_app
    from shaman_core.config import ShamanConfig
    from shaman_core.serving import (
        announce_open_files_limit,
        raise_open_files_limit,
        uvicorn_options,
    )

    announce_open_files_limit(raise_open_files_limit(), logging.getLogger("shaman_core"))
    config = ShamanConfig(
        store_dir=args.store,
        checkout_dir=args.checkouts,
        jwt_key_dir=args.jwt_keys,
        auth_disabled=args.no_auth,
        serve_get_token=args.serve_get_token,
        gc_period=args.gc_period_hours * 3600,
        gc_max_age=args.gc_max_age_days * 86400,
    )
    uvicorn.run(
        create_app(config), host=args.host, port=args.port, log_level="info", **uvicorn_options()
    )
    return 0


def _pack(args: argparse.Namespace) -> int:
    from shaman_core.checksums import ChecksumCache
    from shaman_core.client import pack
    from shaman_core.progress import Progress, ProgressBar, format_bytes

    token = args.token or os.environ.get("SHAMAN_JWT_TOKEN") or None
    progress = Progress() if args.no_progress else ProgressBar()
    cache = ChecksumCache()
    report = None
    try:
        report = pack(
            args.directory,
            args.url,
            checkout_id=args.checkout_id,
            token=token,
            concurrency=args.jobs,
            progress=progress,
            cache=cache,
        )
    finally:
        cache.close()
        if isinstance(progress, ProgressBar):
            progress.close(stopped=report is None)
    print(
        f"{report.files} files ({format_bytes(report.bytes)}): uploaded {report.uploaded_files} "
        f"({format_bytes(report.uploaded_bytes)}), {report.already_stored} already stored, "
        f"{report.deferred} deferred, {report.rounds} round(s), {report.seconds:.1f} s"
    )
    if report.checkout_path is not None:
        print(f"checkout: {report.checkout_path}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from shaman_core.gc import collect_garbage
    from shaman_core.progress import format_bytes
    from shaman_core.store import FileStore

    if not os.path.isdir(os.path.join(args.store, "stored")):
        raise ValueError(f"{args.store} is not a Shaman file store (no stored/ directory)")
    report = collect_garbage(
        FileStore(args.store, remove_stale=args.delete),
        [args.checkouts, *args.extra_checkouts],
        max_age=args.max_age_days * 86400,
        dry_run=not args.delete,
    )
    verb = "deleted" if args.delete else "would delete"
    for path in report.deleted:
        print(f"{verb} {path}")
    print(
        f"{report.old_blobs} old blobs, {report.still_used} still linked, "
        f"{report.kept_touched} touched meanwhile; {verb} {len(report.deleted)} "
        f"({format_bytes(report.bytes_freed)})"
    )
    return 0


def _keys(args: argparse.Namespace) -> int:
    from shaman_core.jwt import generate_key_pair

    private_path, public_path = generate_key_pair(args.directory)
    print(f"private key: {private_path}\npublic key: {public_path}")
    return 0


def _token(args: argparse.Namespace) -> int:
    from shaman_core.jwt import KeyStore, mint_token

    print(
        mint_token(KeyStore(args.jwt_keys), args.subject, lifetime=dt.timedelta(hours=args.hours))
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``shaman`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"serve": _serve, "pack": _pack, "gc": _gc, "keys": _keys, "token": _token}
    try:
        return handlers[args.command](args)
    except (ShamanError, ValueError, FileExistsError) as error:
        print(f"shaman: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
