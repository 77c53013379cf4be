"""``flamenco-manager``: run the manager, and manage it from the command line.

``flamenco-manager serve`` starts it with its embedded defaults: data in ``./flamenco-data``,
SQLite, listening on ``0.0.0.0:8080``. Every setting can be given as a flag, an environment
variable or in ``flamenco-manager.toml``; ``flamenco-manager serve --help`` lists them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from flamenco_manager import __version__, user_cli
from flamenco_manager.config import (
    ConfigError,
    Settings,
    add_setting_flags,
    load_settings,
    parse_duration,
    setting_names,
    settings_to_json,
)
from flamenco_manager.log_format import configure_logging

__all__ = ["main"]

# Workers poll every few seconds; a keep-alive shorter than that makes every poll race the
# server closing the idle connection (the Go manager kept idle connections for 600 s).
KEEP_ALIVE_SECONDS: Final = 120
STRONG_SECRET_BYTES: Final = 32
"""Below this, ``serve`` warns that the worker registration secret is short (RFC 7518 §3.2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flamenco-manager",
        description="The Flamenco 2.x render-farm manager: workers, jobs, Shaman, dashboard.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the manager",
        description="Run the manager. Settings come from defaults, then the TOML file, then "
        "FLAMENCO_* environment variables, then these flags.",
    )
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML settings file (default: flamenco-manager.toml in the data directory, if any)",
    )
    add_setting_flags(serve.add_argument)

    token = commands.add_parser("token", help="user tokens").add_subparsers(
        dest="token_command", required=True, metavar="ACTION"
    )
    create = token.add_parser(
        "create",
        help="print a new user token (the last line of the output)",
        description="Sign a token for a user or a pipeline with the manager's key pair; it "
        "works on the user API, /logfile, the dashboard and Shaman.",
    )
    create.add_argument("--data-dir", type=Path, help="the manager's data directory")
    create.add_argument("--name", required=True, help="who the token is for")
    create.add_argument(
        "--expires",
        default="720h",
        metavar="DURATION",
        help="how long the token is valid, e.g. 12h, 720h, 8760h (default: 720h, 30 days)",
    )
    revoke = token.add_parser(
        "revoke",
        help="revoke a user token",
        description="Refuse a token from now on (within seconds on a running manager): give "
        "the token itself, or its ID (the jti claim).",
    )
    revoke.add_argument("--data-dir", type=Path, help="the manager's data directory")
    revoke.add_argument("--database", help="the database URL, when not the default")
    revoke.add_argument("token", metavar="TOKEN_OR_ID", help="the token, or its ID")
    backup = commands.add_parser(
        "backup",
        help="copy the database, token keys and settings, while the manager runs",
        description="Write a consistent copy of the SQLite database (taken while the manager "
        "goes on serving), the key pair that signs user tokens and the settings file into a "
        "new directory. A PostgreSQL database is left to pg_dump. Task logs and the Shaman "
        "store are plain files: copy them with rsync.",
    )
    backup.add_argument("--data-dir", type=Path, help="the manager's data directory")
    backup.add_argument("--database", help="the database URL, when not the default")
    backup.add_argument("--config", type=Path, metavar="FILE", help="the TOML settings file")
    backup.add_argument("destination", type=Path, help="a new (or empty) directory")
    user_cli.add_commands(commands)
    return parser


def load(args: argparse.Namespace) -> Settings:
    """The settings from the command line, the environment and the TOML file."""
    flags: dict[str, Any] = {
        key: value
        for key, value in vars(args).items()
        if key in setting_names() and value is not None
    }
    return load_settings(config_file=getattr(args, "config", None), overrides=flags)


def create_token(settings: Settings, name: str, expires: str) -> None:
    """Print a user token signed with the manager's key pair (made if it does not exist)."""
    from flamenco_manager.services.users import check_token_request, ensure_key_pair, issue_token

    lifetime = parse_duration(expires)
    check_token_request(name, lifetime)  # before a key pair is made for nothing
    if not settings.jwt_key_dir.is_dir():
        # Right before a first serve; otherwise a mistyped data directory: say which.
        print(
            f"{settings.jwt_key_dir} has no key pair: made a new one; only a manager serving "
            f"{settings.data_dir} accepts this token",
            file=sys.stderr,
        )
    keys = ensure_key_pair(settings.jwt_key_dir)
    token = issue_token(keys, name, lifetime)
    print(f"Token for {name!r}, valid for {lifetime}, signed with {settings.jwt_key_dir}:")
    print(token)


def revoke_token(settings: Settings, token_or_id: str) -> None:
    """Add a token to the manager's denylist."""
    from flamenco_manager.services.tokens import TokenRevocations
    from flamenco_manager.storage.database import Database

    if not settings.database and not (settings.data_dir / "flamenco-manager.sqlite").exists():
        # A mistyped data directory: revoking there would make a new database, and change
        # nothing for the farm.
        raise ConfigError(
            f"no manager database in {settings.data_dir}: is --data-dir (or --database) right?"
        )
    database = Database.open(settings.database_url)
    try:
        identifier, new = TokenRevocations(database).revoke(token_or_id)
    finally:
        database.close()
    print(f"Revoked token {identifier}." if new else f"Token {identifier} was already revoked.")


def backup(settings: Settings, destination: Path, config_file: Path | None) -> None:
    """Copy what a farm cannot do without into ``destination`` (see ``backup --help``)."""
    import shutil

    from sqlalchemy.engine import make_url

    from flamenco_manager.config import CONFIG_FILE_NAME
    from flamenco_manager.storage.backup import BackupError, copy_sqlite

    if destination.exists() and any(destination.iterdir()):
        raise ConfigError(f"{destination} is not empty: back up into a new directory")
    url = make_url(settings.database_url)
    try:
        if url.get_backend_name() == "sqlite":
            source = Path(url.database or "")
            size = copy_sqlite(source, destination / source.name)
            print(f"database: {source} -> {destination / source.name} ({size:,} bytes, checked)")
        else:
            print(f"database: {url.get_backend_name()}, not copied: back it up with pg_dump")
    except BackupError as exc:
        raise ConfigError(str(exc)) from None
    if settings.jwt_key_dir.is_dir():
        shutil.copytree(settings.jwt_key_dir, destination / settings.jwt_key_dir.name)
        print(f"token keys: {settings.jwt_key_dir} -> {destination / settings.jwt_key_dir.name}")
    config = config_file or settings.data_dir / CONFIG_FILE_NAME
    if config.is_file():
        shutil.copy2(config, destination / config.name)
        print(f"settings: {config} -> {destination / config.name}")


def url_host(host: str) -> str:
    """The host of a listening address as a link to it writes it: ``localhost`` for every
    address, an IPv6 address in brackets."""
    if host in ("0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def shown_database(url: str) -> str:
    """A database URL fit for a log: without its password and its query string (where
    libpq's ``password`` and ``sslpassword`` may be)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(a database URL that does not parse)"
    return parsed.set(query={}).render_as_string(hide_password=True)


def login_url(settings: Settings, manager: Any, host: str, port: int) -> str:
    """A dashboard link that logs the operator in (a token valid for a day), or the plain URL."""
    base = f"http://{host}:{port}"
    if settings.no_auth:
        return f"{base}/"
    token = manager.mint_user_token("operator", timedelta(hours=24))
    return f"{base}/login?token={token}"


def dashboard_greeting(
    settings: Settings, manager: Any, host: str, port: int, terminal: bool
) -> str:
    """Where the dashboard is, the line ``serve`` prints when it starts.

    On a terminal, a login link (:func:`login_url`). Anywhere else (a systemd unit's journal, a
    file) the plain address and how to make a token: the link carries an operator token valid
    for a day, which must not be kept where logs are kept and read.
    """
    if terminal or settings.no_auth:
        return f"Open the dashboard: {login_url(settings, manager, host, port)}"
    return (
        f"Open the dashboard: http://{host}:{port}/ and log in with a token made by "
        f"flamenco-manager token create --data-dir {shlex.quote(str(settings.data_dir))} "
        "--name NAME (no login link: standard output is not a terminal, and the link holds "
        "a token)"
    )


def serve(settings: Settings) -> None:
    """Run the manager until interrupted."""
    import uvicorn

    from flamenco_manager.manager import Manager
    from flamenco_manager.web.app import SETTINGS_VARIABLE, create_app
    from shaman_core.serving import (
        announce_open_files_limit,
        raise_open_files_limit,
        uvicorn_options,
    )

    configure_logging(settings.log_level)
    log = logging.getLogger("flamenco_manager")
    # A socket per connected worker: the usual soft limit of 1,024 drops a big farm's workers.
    announce_open_files_limit(raise_open_files_limit(), log)
    host, port = settings.listen_host_port
    if settings.processes > 1 and settings.database_url.startswith("sqlite"):
        raise ConfigError(
            "SQLite serves one process: use PostgreSQL (--database postgresql://…) "
            "for --processes above 1"
        )
    manager = Manager(settings)
    secret = settings.worker_registration_secret.strip().encode()
    if not secret:
        log.warning("worker registration is open: any machine that reaches the manager can join")
    elif len(secret) < STRONG_SECRET_BYTES:
        # Workers sign their registration with it (HS256): a token seen on the network lets
        # a short secret be guessed offline.
        log.warning(
            "the worker registration secret is short: a registration token seen on the "
            "network lets it be guessed; use 32 bytes or more",
            extra={"secret_bytes": len(secret)},
        )
    shown_host = url_host(host)
    log.info(
        "manager starting",
        extra={
            "url": f"http://{shown_host}:{port}/",
            "data_dir": str(settings.data_dir.resolve()),
            "database": shown_database(settings.database_url),
        },
    )
    print(dashboard_greeting(settings, manager, shown_host, port, sys.stdout.isatty()), flush=True)
    if settings.processes > 1:
        # The parent has migrated the schema; the children each build their own manager.
        manager.close()
        os.environ[SETTINGS_VARIABLE] = settings_to_json(settings)
        uvicorn.run(
            "flamenco_manager.web.app:app_from_environment",
            factory=True,
            workers=settings.processes,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=10,
            # uvloop, and an HTTP protocol that streams Shaman uploads without extra copies.
            **uvicorn_options(),
        )
        return
    try:
        uvicorn.run(
            create_app(manager, serving=True),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=10,
            # uvloop, and an HTTP protocol that streams Shaman uploads without extra copies.
            **uvicorn_options(),
        )
    finally:
        manager.close()  # when the app never started (the port taken, say); closing is idempotent


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flamenco-manager`` command."""
    args = _parser().parse_args(argv)
    if args.command in user_cli.COMMANDS:
        return user_cli.run(args)
    settings: Settings | None = None
    try:
        settings = load(args)
        if args.command == "serve":
            serve(settings)
        elif args.command == "backup":
            backup(settings, args.destination, args.config)
        elif args.command == "token" and args.token_command == "revoke":
            revoke_token(settings, args.token)
        elif args.command == "token":
            create_token(settings, args.name, args.expires)
    except (ConfigError, ValueError) as exc:
        print(f"flamenco-manager: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        problem = None if settings is None else _start_problem(exc, settings)
        if problem is None:
            raise
        print(f"flamenco-manager: {problem}", file=sys.stderr)
        return 1
    return 0


def _start_problem(error: Exception, settings: Settings) -> str | None:
    """What an error of opening the data directory or the database says to an operator, or
    ``None`` for an error that is not one of those (a traceback is then the message)."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    if isinstance(error, DBAPIError):
        return f"cannot use the database {shown_database(settings.database_url)}: {error.orig}"
    if isinstance(error, CommandError):
        return (
            f"the database {shown_database(settings.database_url)} has a schema this version "
            f"does not know (made by a newer flamenco-manager?): {error}"
        )
    if isinstance(error, OSError):
        return f"cannot use {error.filename or settings.data_dir}: {error.strerror or error}"
    return None


if __name__ == "__main__":
    sys.exit(main())
