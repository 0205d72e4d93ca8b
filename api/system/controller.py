"""GET /health, /ready and /openapi.json."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from sqlalchemy import text

from api.errors import ApiError
from api.services import Services

log = logging.getLogger(__name__)


class Health(msgspec.Struct, kw_only=True):
    status: str = "ok"


class ReadinessChecks(msgspec.Struct, kw_only=True):
    database: str
    redis: str
    migrations: str


class Readiness(msgspec.Struct, kw_only=True):
    status: str
    checks: ReadinessChecks


@functools.cache
def _heads() -> frozenset[str]:
    """The migrations' heads, read once (alembic loads with the first readiness check)."""
    from infra.db.migrate import head_revisions

    return frozenset(head_revisions())


async def _check_database(services: Services) -> tuple[str, str]:
    from infra.db.migrate import current_revisions

    try:
        heads = _heads()
        async with services.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            current = await current_revisions(conn)
        return "ok", ("ok" if current == heads else f"at {sorted(current) or 'none'}, head is {sorted(heads)}")
    except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
        log.warning("database not ready: %s", exc)
        return "unreachable", "unknown"


async def _check_redis(services: Services) -> str:
    try:
        await services.redis.ping()
        return "ok"
    except Exception as exc:  # noqa: BLE001
        log.warning("redis not ready: %s", exc)
        return "unreachable"


class SystemController(Controller):
    path = ""
    tags = ["system"]

    @get("/health", operation_id="GetHealth", summary="Liveness")
    async def health(self) -> Health:
        return Health()

    @get("/ready", operation_id="GetReadiness", summary="Readiness: database, Redis, migrations at head")
    async def ready(self, services: NamedDependency[Services]) -> Readiness:
        (db, migrations), redis = await asyncio.wait_for(
            asyncio.gather(_check_database(services), _check_redis(services)), timeout=5
        )
        checks = ReadinessChecks(database=db, redis=redis, migrations=migrations)
        if db != "ok" or redis != "ok" or migrations != "ok":
            failing = [f"{k}: {v}" for k, v in msgspec.structs.asdict(checks).items() if v != "ok"]
            raise ApiError(503, "not_ready", "Not ready: " + "; ".join(failing))
        return Readiness(status="ready", checks=checks)

    @get("/openapi.json", operation_id="GetOpenAPI", summary="This API's OpenAPI 3.1 document", include_in_schema=False)
    async def openapi(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        from api.openapi import document_bytes

        return Response(document_bytes(request.app), media_type="application/json")
