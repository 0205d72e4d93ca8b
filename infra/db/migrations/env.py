"""Alembic environment: async engine, pgvector-aware rendering, a lock timeout on every migration."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from infra.db.engine import create_engine
from infra.db.tables import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("LITESKILL_DATABASE_URL")
    if not url:
        raise SystemExit("LITESKILL_DATABASE_URL is not set (or run `liteskill migrate`)")
    return str(url)


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Autogenerate renders pgvector columns as sa.VECTOR, which does not exist.
    if type_ == "type" and obj.__class__.__module__.startswith("pgvector"):
        autogen_context.imports.add("from pgvector.sqlalchemy import VECTOR")
        return f"VECTOR({obj.dim})"
    return False


def _run(connection: Connection) -> None:
    # A migration waiting on a lock must fail fast rather than stall live traffic behind it.
    connection.execute(text("SET lock_timeout = '5s'"))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_item=render_item,  # type: ignore[arg-type]
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_engine(_url(), pool_size=1, max_overflow=0)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
asyncio.run(_main())
