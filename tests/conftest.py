"""Session-wide real services and per-test isolation (truncate tables, flush Redis)."""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import msgspec
import pytest
from litestar import Litestar
from redis.asyncio import Redis
from sqlalchemy import text

from api.app import create_app
from api.services import Services
from infra.db.engine import Database, create_engine
from infra.db.tables import metadata
from infra.settings import Settings, load_settings
from tests import services as svc
from tests.audit_check import AuditedApp


def pytest_configure(config: pytest.Config) -> None:
    """The controlling process names this run; xdist workers inherit the name."""
    if not hasattr(config, "workerinput"):
        os.environ.setdefault(svc.RUN_VARIABLE, uuid.uuid4().hex[:12])
    os.environ.setdefault("XDG_RUNTIME_DIR", str(svc.test_data() / "xdg"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The controlling process stops this run's PostgreSQL and removes its data: a run leaves
    nothing behind."""
    if hasattr(session.config, "workerinput"):
        return
    data = svc.test_data()
    if (data / "postgres" / "postmaster.pid").exists():
        svc.start_postgres().stop()
    shutil.rmtree(data, ignore_errors=True)


def _worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    pg = svc.start_postgres()
    template = svc.template_database(pg)
    return svc.worker_database(pg, template, _worker_id())


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    vk = svc.start_valkey(_worker_id())
    yield vk.url
    vk.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    # A fixed test master key: nothing is generated into the working directory.
    base = load_settings(
        {"LITESKILL_ENV": "test", "LITESKILL_MASTER_KEY": base64.b64encode(b"t" * 32).decode()}, dotenv=None
    )
    return msgspec.structs.replace(
        base,
        database=msgspec.structs.replace(base.database, url=database_url, pool_size=5),
        redis=msgspec.structs.replace(base.redis, url=redis_url),
    )


@pytest.fixture(scope="session")
async def database(settings: Settings) -> AsyncIterator[Database]:
    assert settings.database.url
    db = Database(create_engine(settings.database.url, pool_size=10, max_overflow=20))
    yield db
    await db.dispose()


_TABLES = [t.name for t in reversed(metadata.sorted_tables)]


@pytest.fixture
async def db(database: Database) -> AsyncIterator[Database]:
    """The session database, emptied before the test (every table but Alembic's)."""
    if _TABLES:
        async with database.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY CASCADE"))
    return database


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    assert settings.redis.url
    client = Redis.from_url(settings.redis.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def services(settings: Settings, db: Database, redis: Redis) -> Services:
    return Services(settings=settings, db=db, redis=redis)


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    return create_app(settings, services=services)


@pytest.fixture
async def client(app: Litestar, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client on the test's own event loop (Litestar's AsyncTestClient runs the app
    on another loop, which breaks adapters shared with the test). Every successful state-changing
    request it makes must be audited (tests/audit_check.py): the test fails otherwise."""
    audited = AuditedApp(app, database)
    transport = httpx.ASGITransport(app=audited)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
        yield c
    missing = await audited.unaudited()
    assert not missing, f"state-changing requests that appended no audit event: {missing}"
