"""Every table module, imported so ``metadata`` is complete for Alembic and tests."""

from infra.db.metadata import metadata

__all__ = ["metadata"]
