"""The audit log read model: one row per event, queryable by actor, action, entity and tenant.

``action`` is the event's type id without its schema version (``prompts.prompt_created``); the
entity is read off the stream id (``prompt-<uuid>`` -> ``prompt``, ``<uuid>``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT, TIMESTAMP, UUID
from sqlalchemy.types import Text

from domain.shared.events import RecordedEvent
from infra.eventstore.postgres import PostgresTransaction

_INSERT = text(
    """
    INSERT INTO audit_log (position, event_id, stream_id, type_id, action, entity_type, entity_id,
                           tenant_id, actor, request_id, correlation_id, recorded_at)
    SELECT * FROM unnest(:position, :event_id, :stream_id, :type_id, :action, :entity_type, :entity_id,
                         :tenant_id, :actor, :request_id, :correlation_id, :recorded_at)
    ON CONFLICT (position) DO NOTHING
    """
).bindparams(
    bindparam("position", type_=ARRAY(BIGINT)),
    bindparam("event_id", type_=ARRAY(UUID(as_uuid=True))),
    *(
        bindparam(name, type_=ARRAY(Text))
        for name in (
            "stream_id",
            "type_id",
            "action",
            "entity_type",
            "entity_id",
            "tenant_id",
            "actor",
            "request_id",
            "correlation_id",
        )
    ),
    bindparam("recorded_at", type_=ARRAY(TIMESTAMP(timezone=True))),
)


def entity_of(stream_id: str) -> tuple[str, str]:
    kind, sep, ident = stream_id.partition("-")
    return (kind, ident) if sep else ("stream", stream_id)


def action_of(type_id: str) -> str:
    return type_id.rsplit(".", 1)[0]


class AuditLogProjection:
    name = "audit_log"

    async def apply(self, tx: PostgresTransaction, events: Sequence[RecordedEvent]) -> None:
        entities = [entity_of(e.stream_id) for e in events]
        await tx.session.execute(
            _INSERT,
            {
                "position": [e.position for e in events],
                "event_id": [e.event_id for e in events],
                "stream_id": [e.stream_id for e in events],
                "type_id": [e.type_id for e in events],
                "action": [action_of(e.type_id) for e in events],
                "entity_type": [k for k, _ in entities],
                "entity_id": [i for _, i in entities],
                "tenant_id": [e.metadata.tenant_id for e in events],
                "actor": [e.metadata.actor for e in events],
                "request_id": [e.metadata.request_id for e in events],
                "correlation_id": [e.metadata.correlation_id for e in events],
                "recorded_at": [e.recorded_at for e in events],
            },
        )

    async def reset(self, tx: PostgresTransaction) -> None:
        await tx.session.execute(text("DELETE FROM audit_log"))
