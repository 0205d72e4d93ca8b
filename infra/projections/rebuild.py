"""``liteskill projections rebuild``: replay read models from position 0."""

from __future__ import annotations

from collections.abc import Sequence

from infra.db.engine import Database, create_engine
from infra.eventstore.postgres import PostgresTransactionFactory
from infra.projections import all_projections
from infra.projections.runner import rebuild
from infra.settings import Settings


async def rebuild_all(settings: Settings, names: Sequence[str] | None = None) -> dict[str, int]:
    """Rebuild the named projections (all when ``names`` is empty); return events replayed per name."""
    projections = all_projections()
    known = {p.name for p in projections}
    unknown = set(names or ()) - known
    if unknown:
        raise SystemExit(f"unknown projections: {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    assert settings.database.url, "resolve the database URL first"
    db = Database(create_engine(settings.database.url))
    try:
        factory = PostgresTransactionFactory(db)
        counts: dict[str, int] = {}
        for projection in projections:
            if names and projection.name not in names:
                continue
            counts[projection.name] = await rebuild(factory, projection, batch=settings.eventstore.projection_batch)
        return counts
    finally:
        await db.dispose()
