"""Engine and session factories; write and read sessions are distinct types.

A write session is a unit of work: the edge (an HTTP request or an actor run) opens one, runs a
command, and commits on success or rolls back on any error. Services never commit. A read
session runs in a READ ONLY transaction, so a query path cannot write by accident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


class WriteSession(AsyncSession):
    """A session whose transaction the edge commits once, at the end of the command."""


class ReadSession(AsyncSession):
    """A session inside a READ ONLY transaction."""


def async_url(url: str) -> str:
    """Turn any postgres URL into the SQLAlchemy asyncpg form."""
    parts = urlsplit(url)
    scheme = "postgresql+asyncpg"
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def plain_url(url: str) -> str:
    """The libpq/asyncpg form of a URL (no SQLAlchemy driver suffix)."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10, echo: bool = False) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping: with asyncpg it costs three round trips per checkout (BEGIN, ping,
        # ROLLBACK). A dropped connection fails its first statement and SQLAlchemy invalidates it
        # (the request fails once with a 503-class error); recycling bounds idle connection age.
        pool_pre_ping=False,
        pool_recycle=1800,
        echo=echo,
        # JSON columns are encoded by msgspec at the edges; asyncpg gets text.
        connect_args={"server_settings": {"application_name": "liteskill"}},
    )


class Database:
    """Owns the engine and hands out write and read sessions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._write = async_sessionmaker(engine, class_=WriteSession, expire_on_commit=False, autoflush=False)
        self._read = async_sessionmaker(engine, class_=ReadSession, expire_on_commit=False, autoflush=False)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteSession]:
        """One transaction: commit if the block succeeds, roll back if it raises."""
        async with self._write() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadSession]:
        async with self._read() as session, session.begin():
            from sqlalchemy import text

            await session.execute(text("SET TRANSACTION READ ONLY"))
            yield session

    @asynccontextmanager
    async def read_statement(self) -> AsyncIterator[ReadSession]:
        """A session for ONE read-only statement, run outside a transaction (autocommit): one round
        trip instead of four (BEGIN, SET TRANSACTION READ ONLY, the query, COMMIT). For hot
        single-query paths (resolving the caller of every request); several statements here would
        not share a snapshot, so use ``read`` for anything more."""
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            async with ReadSession(bind=conn, expire_on_commit=False, autoflush=False) as session:
                yield session

    def write_session(self) -> WriteSession:
        """An unstarted write session for edges that manage the transaction themselves."""
        return self._write()

    def read_session(self) -> ReadSession:
        return self._read()

    async def dispose(self) -> None:
        await self.engine.dispose()
