"""The ``liteskill`` command: serve, worker, migrate, projections rebuild, openapi."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import msgspec

from infra.settings import Settings, SettingsError, load_settings

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
        runtime = BackgroundRuntime(resolved)
        runtime.start()
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

    oa = sub.add_parser("openapi", help="write openapi/openapi.json from the app")
    oa.add_argument("--output")
    oa.add_argument("--check", action="store_true", help="fail if the committed document is stale")
    oa.set_defaults(func=cmd_openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
