"""Every table module, imported so ``metadata`` is complete for Alembic and tests."""

from infra.db.metadata import metadata
from infra.db.tables import access, api_keys, eventstore, identity, llm, mcp, platform, secrets, worker  # noqa: F401

__all__ = ["metadata"]
