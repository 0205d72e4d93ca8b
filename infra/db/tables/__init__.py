"""Every table module, imported so ``metadata`` is complete for Alembic and tests."""

from infra.db.metadata import metadata
from infra.db.tables import (  # noqa: F401
    access,
    api_keys,
    chat,
    eventstore,
    identity,
    llm,
    mcp,
    platform,
    runs,
    secrets,
    worker,
)

__all__ = ["metadata"]
