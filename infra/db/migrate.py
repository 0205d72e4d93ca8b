"""Run Alembic programmatically: upgrade to head, check drift, report the current revision."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

_INI = Path(__file__).with_name("alembic.ini")


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(_INI))
    cfg.attributes["database_url"] = database_url
    return cfg


def _outside_loop(fn: Callable[[], None]) -> None:
    """Alembic's env runs its own event loop; from inside a running loop, run it on a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        fn()
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(fn).result()


def upgrade(database_url: str, revision: str = "head") -> None:
    _outside_loop(lambda: command.upgrade(alembic_config(database_url), revision))


def check(database_url: str) -> None:
    """Raise if the models hold changes no migration describes."""
    _outside_loop(lambda: command.check(alembic_config(database_url)))


def head_revisions() -> set[str]:
    script = ScriptDirectory.from_config(Config(str(_INI)))
    return set(script.get_heads())


async def current_revisions(connection: AsyncConnection) -> set[str]:
    def _get(sync_conn: object) -> set[str]:
        ctx = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
        return set(ctx.get_current_heads())

    return await connection.run_sync(_get)
