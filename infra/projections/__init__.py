"""Read models fed by the event store (see ``runner`` for the guarantees)."""

from __future__ import annotations

from infra.chat.projections import ConversationsProjection
from infra.eventstore.postgres import PostgresTransaction
from infra.projections.audit import AuditLogProjection
from infra.projections.runner import Projection


def all_projections() -> list[Projection[PostgresTransaction]]:
    """Every Postgres read model, in the order the runner serves them."""
    return [AuditLogProjection(), ConversationsProjection()]
