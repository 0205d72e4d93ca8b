"""The ``liteskill`` command: serve, worker, migrate, projections rebuild, admin create, keys rotate, openapi."""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import gc
import getpass
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from infra.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from infra.identity.accounts import Account

log = logging.getLogger("liteskill")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"liteskill: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _logging(settings: Settings) -> None:
    from infra.logging import configure_logging

    configure_logging(settings.log_level, json=settings.log_json)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


def _declare_env_providers(settings: Settings) -> None:
    """Upsert the providers LITESKILL_OPENAI_API_KEY & co. declare (see infra.llm.env_providers)."""
    from infra.db.engine import Database, create_engine
    from infra.llm.env_providers import declare_env_providers

    assert settings.database.url, "resolve the database URL first"

    async def run() -> dict[str, str]:
        assert settings.database.url
        db = Database(create_engine(settings.database.url, pool_size=1, max_overflow=0))
        try:
            return await declare_env_providers(db, settings)
        finally:
            await db.dispose()

    declared = asyncio.run(run())
    if declared:
        log.info("providers from the environment", extra={"providers": declared})


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from infra.db import migrate
    from infra.embedded.runtime import EmbeddedServices
    from infra.worker.runtime import BackgroundRuntime

    settings = _settings()
    http = msgspec.structs.replace(
        settings.http,
        host=args.host or settings.http.host,
        port=args.port or settings.http.port,
        workers=args.workers or settings.http.workers,
    )
    settings = msgspec.structs.replace(settings, http=http)
    _logging(settings)
    # uvicorn shuts down on SIGINT/SIGTERM, restores the previous handlers and re-raises the signal.
    # Ours turns that into an exception, so the finally below stops the worker and embedded servers.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_stop)
    services = EmbeddedServices(settings)
    runtime: BackgroundRuntime | None = None
    try:
        resolved = services.start()
        assert resolved.database.url
        assert resolved.redis.url
        if services.postgres is not None:
            # An embedded database is ours to keep current; an external one is migrated by its operator.
            migrate.upgrade(resolved.database.url)
        _declare_env_providers(resolved)
        # Child processes (uvicorn workers) read the resolved servers from the environment.
        os.environ["LITESKILL_DATABASE_URL"] = resolved.database.url
        os.environ["LITESKILL_REDIS_URL"] = resolved.redis.url
        if resolved.worker.embedded:
            runtime = BackgroundRuntime(resolved)
            runtime.start()
        log.info("serving", extra={"host": http.host, "port": http.port, "workers": http.workers})
        uvicorn.run(
            "api.asgi:create",
            factory=True,
            host=http.host,
            port=http.port,
            workers=http.workers,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    except _Stop:
        pass
    finally:
        if runtime is not None:
            runtime.stop()
        services.stop()
        log.info("stopped")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from infra.embedded.runtime import EmbeddedServices
    from infra.worker.runtime import BackgroundRuntime

    settings = _settings()
    _logging(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedServices(settings) as resolved:
        _declare_env_providers(resolved)
        runtime = BackgroundRuntime(resolved)
        runtime.start()
        gc.collect()
        gc.freeze()  # start-up's objects out of the collector's sight, as in the app's lifespan
        log.info("worker running")
        try:
            stop.wait()
        finally:
            runtime.stop()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from infra.db import migrate
    from infra.embedded.runtime import EmbeddedServices

    settings = _settings()
    _logging(settings)
    with EmbeddedServices(
        msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, url="redis://unused"))
    ) as resolved:
        assert resolved.database.url
        migrate.upgrade(resolved.database.url)
        if args.check:
            migrate.check(resolved.database.url)
    print("migrations at head")
    return 0


def cmd_projections_rebuild(args: argparse.Namespace) -> int:
    from infra.embedded.runtime import EmbeddedServices
    from infra.projections.rebuild import rebuild_all

    settings = _settings()
    _logging(settings)
    with EmbeddedServices(settings) as resolved:
        counts = asyncio.run(rebuild_all(resolved, names=args.name or None))
    for name, count in counts.items():
        print(f"{name}: {count} events replayed")
    return 0


def _database_only(settings: Settings) -> Settings:
    """Settings for a command that needs PostgreSQL only: no embedded Valkey is started."""
    return msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, url="redis://unused"))


ADMIN_PASSWORD_ENV = "LITESKILL_ADMIN_PASSWORD"  # noqa: S105 (a variable name, not a password)


def _admin_password(args: argparse.Namespace) -> str:
    password: str | None = args.admin_password
    if password:
        return password
    if not sys.stdin.isatty():
        print(f"liteskill: set {ADMIN_PASSWORD_ENV} or run in a terminal to type the password", file=sys.stderr)
        raise SystemExit(2)
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        print("liteskill: the passwords do not match", file=sys.stderr)
        raise SystemExit(2)
    return first


async def create_admin(settings: Settings, email: str, password: str, name: str | None) -> tuple[Account, bool]:
    """Create an admin account; return it and whether it was the instance's first account.

    The account goes through ``Accounts.register`` (policy checks, Argon2, the registration lock and
    its audit event), so on an empty instance it becomes the admin exactly as the first HTTP
    registration would; on a populated one the new user is raised to admin in the same transaction.
    The session registration opens is revoked at once: the shell gets no tokens.
    """
    from sqlalchemy import update

    from domain.shared.events import EventMetadata
    from infra.db.engine import Database, create_engine
    from infra.db.tables.identity import users
    from infra.identity.accounts import Accounts
    from infra.identity.keys import access_token_signer
    from infra.identity.passwords import PasswordHasher

    assert settings.database.url, "resolve the database URL first"
    db = Database(create_engine(settings.database.url, pool_size=1, max_overflow=0))
    try:
        async with db.write() as session:
            accounts = Accounts(session, PasswordHasher(), access_token_signer(settings))
            meta = EventMetadata(actor="system", user_agent="liteskill-cli")
            tokens = await accounts.register(email, password, name, meta, ip=None, agent="liteskill-cli")
            account = tokens.account
            first = account.role == "admin"
            if not first:
                await session.execute(update(users).where(users.c.id == account.id).values(role="admin"))
                account = dataclasses.replace(account, role="admin")
            await accounts.revoke(
                tokens.session_id, account.id, "logout", msgspec.structs.replace(meta, tenant_id=str(account.tenant_id))
            )
        return account, first
    finally:
        await db.dispose()


def cmd_admin_create(args: argparse.Namespace) -> int:
    from domain.shared.errors import DomainError
    from infra.db import migrate
    from infra.embedded.runtime import EmbeddedServices

    password = _admin_password(args)
    settings = _settings()
    _logging(settings)
    services = EmbeddedServices(_database_only(settings))
    with services as resolved:
        assert resolved.database.url
        if services.postgres is not None:
            migrate.upgrade(resolved.database.url)  # a fresh embedded instance has no schema yet
        try:
            account, first = asyncio.run(create_admin(resolved, args.email, password, args.name))
        except DomainError as exc:
            print(f"liteskill: {exc.detail} ({exc.code})", file=sys.stderr)
            return 1
    how = "first account" if first else "promoted to admin"
    print(f"created admin {account.email} ({account.id}, {how})")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from infra.embedded.runtime import EmbeddedServices
    from infra.secrets.envelope import new_data_key_bytes
    from infra.secrets.service import master_key_path, rotate_master_key

    settings = _settings()
    _logging(settings)
    new_key = new_data_key_bytes()
    with EmbeddedServices(_database_only(settings)) as resolved:
        try:
            count = asyncio.run(rotate_master_key(resolved, new_key))
        except SettingsError as exc:
            print(f"liteskill: {exc}", file=sys.stderr)
            return 2
    print(f"re-wrapped {count} data keys under the new master key")
    if settings.master_key is not None:
        print("The master key comes from LITESKILL_MASTER_KEY: set it to this new value before the next start.")
        print("It is shown once; the old key no longer opens the data keys. Access tokens issued so far stop working.")
        print(f"LITESKILL_MASTER_KEY={base64.b64encode(new_key).decode('ascii')}")
    else:
        print(f"the new master key is in {master_key_path(resolved)}")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from api.app import create_app
    from api.openapi import COMMITTED_PATH, build_document, render

    base = load_settings({})
    settings = msgspec.structs.replace(
        base,
        database=msgspec.structs.replace(base.database, url="postgresql://unused/unused"),
        redis=msgspec.structs.replace(base.redis, url="redis://unused"),
    )
    content = render(build_document(create_app(settings)))
    target = Path(args.output) if args.output else COMMITTED_PATH
    if args.check:
        if not target.is_file() or target.read_bytes() != content:
            print(f"{target} is out of date: run `liteskill openapi`", file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    print(f"wrote {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liteskill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (starts embedded services when none are configured)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("worker", help="run a background worker (Dramatiq actors, outbox relay, projections)").set_defaults(
        func=cmd_worker
    )

    mig = sub.add_parser("migrate", help="upgrade the database schema to head")
    mig.add_argument("--check", action="store_true", help="also fail if models and migrations differ")
    mig.set_defaults(func=cmd_migrate)

    proj = sub.add_parser("projections", help="projection maintenance")
    proj_sub = proj.add_subparsers(dest="projection_command", required=True)
    rebuild = proj_sub.add_parser("rebuild", help="replay every event from zero into fresh read models")
    rebuild.add_argument("--name", action="append", help="only this projection (repeatable)")
    rebuild.set_defaults(func=cmd_projections_rebuild)

    admin = sub.add_parser("admin", help="administration from the shell")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser(
        "create", help=f"create an admin account (password from {ADMIN_PASSWORD_ENV} or typed twice)"
    )
    create.add_argument("--email", required=True)
    create.add_argument("--name")
    create.set_defaults(func=cmd_admin_create)

    keys = sub.add_parser("keys", help="master key maintenance")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("rotate", help="generate a new master key and re-wrap every data key").set_defaults(
        func=cmd_keys_rotate
    )

    oa = sub.add_parser("openapi", help="write openapi/openapi.json from the app")
    oa.add_argument("--output")
    oa.add_argument("--check", action="store_true", help="fail if the committed document is stale")
    oa.set_defaults(func=cmd_openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Taken out of the environment before any command loads settings: it is no setting (unknown
    # LITESKILL_ variables are refused) and child processes (embedded PostgreSQL) must not inherit it.
    args.admin_password = os.environ.pop(ADMIN_PASSWORD_ENV, None)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
