"""Running a conversation command inside the caller's write transaction: load the aggregate, decide,
append, and apply the new events to the read model in the same transaction.

Read-your-writes: because the command projects its own events before it commits, a client that
creates or changes a conversation and reads it straight away sees the change; the projection runner
re-applies the same events later and skips them (the rows carry the stream version), and a rebuild
from zero produces the same rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from domain.chat.conversation import CONVERSATION, ConversationState
from domain.chat.events import stream_id
from domain.shared.aggregate import Loaded, load, save_snapshot_quietly
from domain.shared.events import Event, EventMetadata, NewEvent, RecordedEvent
from infra.chat.projections import project
from infra.db.tables.chat import conversations
from infra.eventstore.postgres import PostgresEventStore

SNAPSHOT_EVERY = 100

Conn = AsyncSession | AsyncConnection


@dataclass(frozen=True, slots=True)
class Applied:
    state: ConversationState
    version: int
    events: tuple[RecordedEvent, ...]
    """The events projected (this command's, after any the read model had not seen yet)."""


async def load_conversation(session: Conn, conversation_id: uuid.UUID) -> Loaded[ConversationState]:
    return await load(PostgresEventStore(session), stream_id(conversation_id), CONVERSATION)


async def append(
    session: Conn,
    conversation_id: uuid.UUID,
    loaded: Loaded[ConversationState],
    events: Sequence[Event],
    meta: EventMetadata,
) -> Applied:
    """Append ``events`` after ``loaded`` (a concurrent writer makes this a 409 conflict) and project
    them. No events: nothing is written and the state is returned as it was."""
    if not events:
        return Applied(loaded.state, loaded.version, ())
    store = PostgresEventStore(session)
    sid = stream_id(conversation_id)
    appended = await store.append_recorded(sid, loaded.version, [NewEvent(payload=e, metadata=meta) for e in events])
    version = appended[-1].version
    # Project from the read model's own version, not just this command's events: an event appended by
    # a writer that did not project (a worker using the plain aggregate executor) would otherwise be
    # skipped for good by the version guard once a later event is applied.
    projected = await session.scalar(select(conversations.c.version).where(conversations.c.id == conversation_id))
    behind = min(projected or 0, loaded.version)
    recorded = tuple(appended)
    if behind < loaded.version:
        recorded = (*await store.read_stream(sid, from_version=behind + 1, limit=loaded.version - behind), *appended)
    await project(session, recorded)
    state = CONVERSATION.fold(loaded.state, events)
    if version - loaded.snapshot_version >= SNAPSHOT_EVERY:
        await save_snapshot_quietly(store, sid, CONVERSATION, version, state)
    return Applied(state, version, recorded)
