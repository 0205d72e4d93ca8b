"""The audit log read model: one row per event, queryable by actor, action, entity and tenant.

``action`` is the event's type id without its schema version (``prompts.prompt_created``); the
entity is read off the stream id (``prompt-<uuid>`` -> ``prompt``, ``<uuid>``).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from sqlalchemy import text

from domain.shared.events import Event, RecordedEvent
from infra.eventstore.postgres import PostgresTransaction

# ``changed`` travels as one JSON array per row (``text[]`` cannot hold ragged arrays) and is
# unpacked in SQL; ``data`` is the payload's JSON.
_INSERT = """
    INSERT INTO audit_log (position, event_id, stream_id, type_id, action, entity_type, entity_id,
                           tenant_id, actor, request_id, correlation_id, recorded_at, ip, user_agent,
                           changed, data)
    SELECT u.position, u.event_id, u.stream_id, u.type_id, u.action, u.entity_type, u.entity_id,
           u.tenant_id, u.actor, u.request_id, u.correlation_id, u.recorded_at, u.ip, u.user_agent,
           CASE WHEN u.changed IS NULL THEN NULL
                ELSE ARRAY(SELECT jsonb_array_elements_text(u.changed::jsonb)) END,
           u.data::jsonb
    FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::text[],
                $14::text[], $15::text[], $16::text[])
         AS u(position, event_id, stream_id, type_id, action, entity_type, entity_id, tenant_id, actor,
              request_id, correlation_id, recorded_at, ip, user_agent, changed, data)
    ON CONFLICT (position) DO NOTHING
"""

_encode = msgspec.json.encode


def changed_of(payload: Event) -> str | None:
    """The JSON list of fields an update touched, when the event names them."""
    changed = getattr(payload, "changed", None)
    return _encode(changed).decode() if isinstance(changed, list) else None


def entity_of(stream_id: str) -> tuple[str, str]:
    kind, sep, ident = stream_id.partition("-")
    return (kind, ident) if sep else ("stream", stream_id)


def action_of(type_id: str) -> str:
    return type_id.rsplit(".", 1)[0]


class AuditLogProjection:
    name = "audit_log"

    async def apply(self, tx: PostgresTransaction, events: Sequence[RecordedEvent]) -> None:
        entities = [entity_of(e.stream_id) for e in events]
        conn = await tx.events.driver()
        await conn.execute(
            _INSERT,
            [e.position for e in events],
            [e.event_id for e in events],
            [e.stream_id for e in events],
            [e.type_id for e in events],
            [action_of(e.type_id) for e in events],
            [k for k, _ in entities],
            [i for _, i in entities],
            [e.metadata.tenant_id for e in events],
            [e.metadata.actor for e in events],
            [e.metadata.request_id for e in events],
            [e.metadata.correlation_id for e in events],
            [e.recorded_at for e in events],
            [e.metadata.ip for e in events],
            [e.metadata.user_agent for e in events],
            [changed_of(e.payload) for e in events],
            [_encode(e.payload).decode() for e in events],
        )

    async def reset(self, tx: PostgresTransaction) -> None:
        await tx.session.execute(text("DELETE FROM audit_log"))
