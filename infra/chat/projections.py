"""The conversations + messages read model, fed from the conversation streams.

Idempotence: each conversation row stores the stream ``version`` it reflects and an event is applied
only when its version is newer, so the same event applied twice (by the command that wrote it and
again by the runner, or after a crash) changes nothing. A deleted conversation stays as a tombstone
row (``status = 'deleted'``, content cleared) so a replayed ``created`` cannot resurrect it.
Timestamps come from the events' ``recorded_at``, so ``liteskill projections rebuild`` reproduces
the rows exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import bindparam, delete, exists, func, insert, literal, select, text, type_coerce, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from domain.chat import events as ev
from domain.shared.events import RecordedEvent
from infra.db.tables.chat import conversations as ct
from infra.db.tables.chat import messages as mt
from infra.eventstore.postgres import PostgresTransaction

Conn = AsyncSession | AsyncConnection

SEARCH_CHARS = 200_000
"""Text fed to the search vector per conversation (a tsvector is limited to 1 MB)."""


def _jsonable(value: msgspec.Struct | None) -> Any:
    return None if value is None else msgspec.to_builtins(value)


_SEARCH = text(
    """
    UPDATE conversations SET search = to_tsvector('simple'::regconfig, fed.text), search_chars = length(fed.text)
    FROM (SELECT left(coalesce(c.title, '') || ' ' || coalesce((
              SELECT string_agg(content, ' ' ORDER BY position) FROM messages
              WHERE conversation_id = :id AND in_branch
          ), ''), :chars) AS text
          FROM conversations c WHERE c.id = :id) AS fed
    WHERE id = :id
    """
)
_SEARCH_MORE = text(
    """
    UPDATE conversations
    SET search = coalesce(search, ''::tsvector) || to_tsvector('simple'::regconfig, left(:text, :chars - search_chars)),
        search_chars = search_chars + length(left(:text, :chars - search_chars))
    WHERE id = :id AND search_chars < :chars
    """
)


async def _refresh_search(conn: Conn, conversation_id: uuid.UUID) -> None:
    """Rebuild the vector from the title and the current branch (a title change, a truncation)."""
    await conn.execute(_SEARCH, {"id": conversation_id, "chars": SEARCH_CHARS})


async def _search_more(conn: Conn, conversation_id: uuid.UUID, text: str) -> None:
    """Add a new message's text to the vector, without reading the conversation's other messages
    again (a turn of a long conversation used to re-parse up to ``SEARCH_CHARS`` of text twice)."""
    if text:
        await conn.execute(_SEARCH_MORE, {"id": conversation_id, "text": text, "chars": SEARCH_CHARS})


async def _settle_status(conn: Conn, conversation_id: uuid.UUID) -> None:
    """``active`` when the current branch has messages, else ``created`` (after truncate/restore)."""
    has_messages = exists().where(mt.c.conversation_id == conversation_id, mt.c.in_branch.is_(True))
    await conn.execute(
        update(ct)
        .where(ct.c.id == conversation_id)
        .values(status=func.coalesce(select(literal("active")).where(has_messages).scalar_subquery(), "created"))
    )


# The statements every turn runs are built once; their columns come from the parameters given
# (building and keying an UPDATE anew costs ~100 µs of CPU, a turn runs several).
_INSERT_MESSAGE = insert(mt)
_UPDATE_MESSAGE = update(mt).where(mt.c.id == bindparam("message_id_"))
_CLAIM = (
    update(ct).where(ct.c.id == bindparam("conversation_id_"), ct.c.version < bindparam("version_")).returning(ct.c.id)
)


async def _insert_message(conn: Conn, conversation_id: uuid.UUID, at: datetime, **values: Any) -> None:
    row = {"conversation_id": conversation_id, "created_at": at, "updated_at": at, "in_branch": True, **values}
    await conn.execute(_INSERT_MESSAGE, row)


async def _update_message(conn: Conn, message_id: uuid.UUID, at: datetime, **values: Any) -> None:
    await conn.execute(_UPDATE_MESSAGE, {"message_id_": message_id, "updated_at": at, **values})


async def _change_call(
    conn: Conn, cid: uuid.UUID, message_id: uuid.UUID | None, tool_call_id: str, at: datetime, **changes: Any
) -> None:
    """Change one stored tool call of ``message_id`` (events written before tool calls named their
    message: the conversation's streaming message)."""
    which = mt.c.id == message_id if message_id is not None else mt.c.status == "streaming"
    query = select(mt.c.id, mt.c.tool_calls).where(mt.c.conversation_id == cid, which)
    row = (await conn.execute(query)).first()
    if row is None:
        return
    calls = [dict(c, **changes) if c.get("tool_call_id") == tool_call_id else c for c in row.tool_calls or []]
    await _update_message(conn, row.id, at, tool_calls=calls)


async def _apply_tool_call(conn: Conn, cid: uuid.UUID, p: Any, at: datetime) -> None:
    match p:
        case ev.ToolCallRequested():
            record = ev.requested_record(p)
            await conn.execute(
                update(mt)
                .where(mt.c.id == p.message_id)
                .values(
                    tool_calls=mt.c.tool_calls.op("||")(type_coerce([msgspec.to_builtins(record)], JSONB)),
                    updated_at=at,
                )
            )
        case ev.ToolCallApproved():
            await _change_call(
                conn, cid, p.message_id, p.tool_call_id, at, status="approved", decided_by=p.decided_by, reason=p.reason
            )
        case ev.ToolCallDenied():
            await _change_call(
                conn, cid, p.message_id, p.tool_call_id, at, status="denied", decided_by=p.decided_by, reason=p.reason
            )
        case ev.ToolCallCompleted():
            await _change_call(
                conn, cid, p.message_id, p.tool_call_id, at, status="completed", result=p.result, is_error=p.is_error
            )


async def _create(conn: Conn, e: RecordedEvent) -> None:
    p = e.payload
    assert isinstance(p, ev.ConversationCreated | ev.ConversationForked)
    copied = p.messages if isinstance(p, ev.ConversationForked) else []
    parent = p.parent_conversation_id if isinstance(p, ev.ConversationForked) else None
    forked_from = p.forked_from_message_id if isinstance(p, ev.ConversationForked) else None
    created = await conn.execute(
        pg_insert(ct)
        .values(
            id=p.conversation_id,
            tenant_id=p.tenant_id,
            owner_id=p.owner_id,
            title=p.title,
            system_prompt=p.system_prompt,
            model_id=p.model_id,
            tools=_jsonable(p.tools),
            status="active" if copied else "created",
            parent_conversation_id=parent,
            forked_from_message_id=forked_from,
            last_message_at=e.recorded_at if copied else None,
            created_at=e.recorded_at,
            updated_at=e.recorded_at,
            version=e.version,
        )
        .on_conflict_do_nothing(index_elements=[ct.c.id])
        .returning(ct.c.id)
    )
    if created.first() is None:
        return  # already applied (a tombstone stays one)
    for position, m in enumerate(copied):
        await _insert_message(
            conn,
            p.conversation_id,
            e.recorded_at,
            id=m.message_id,
            position=position,
            role=m.role,
            content=m.content,
            status=m.status,
            model_id=m.model_id,
            usage=_jsonable(m.usage),
            source_message_id=m.source_message_id,
            tool_calls=[msgspec.to_builtins(c) for c in m.tool_calls],
        )
    await _refresh_search(conn, p.conversation_id)


def _row_changes(p: Any, at: datetime) -> dict[str, Any]:
    """What ``p`` changes in its conversation's row, written with the version claim (one UPDATE)."""
    match p:
        case ev.TitleChanged():
            return {"title": p.title}
        case ev.SettingsChanged():
            return {"system_prompt": p.system_prompt, "model_id": p.model_id}
        case ev.ToolSettingsChanged():
            return {"tools": _jsonable(p.tools)}
        case ev.UserMessagePosted():
            return {"status": "active", "last_message_at": at}
        case ev.AssistantMessageStarted():
            return {"status": "running", "last_message_at": at}
        case ev.AssistantMessageCompleted() | ev.AssistantMessageFailed() | ev.AssistantMessageInterrupted():
            return {"status": "active"}
        case ev.ConversationArchivedEvent():
            return {"status": "archived"}
        case ev.ConversationDeleted():
            return {"status": "deleted", "title": None, "system_prompt": None, "search": None, "search_chars": 0}
    return {}


_REBUILDS_SEARCH = (ev.TitleChanged, ev.ConversationTruncated)
"""Events after which the search vector is rebuilt from the title and the current branch."""
_ADDS_TO_SEARCH = (
    ev.UserMessagePosted,
    ev.AssistantMessageCompleted,
    ev.AssistantMessageFailed,
    ev.AssistantMessageInterrupted,
)
"""Events whose message text is added to the search vector."""


async def _apply_one(conn: Conn, e: RecordedEvent) -> None:
    p = e.payload
    if isinstance(p, ev.ConversationCreated | ev.ConversationForked):
        await _create(conn, e)
        return
    cid: uuid.UUID = getattr(p, "conversation_id")  # noqa: B009 (every conversation event has it)
    at = e.recorded_at
    changes = {"version": e.version, "updated_at": at, **_row_changes(p, at)}
    claimed = await conn.execute(_CLAIM, {"conversation_id_": cid, "version_": e.version, **changes})
    if claimed.first() is None:
        return  # already applied (or the conversation's first event was never seen)
    match p:
        case ev.UserMessagePosted():
            await _insert_message(
                conn, cid, at, id=p.message_id, position=p.position, role="user", content=p.content, status="completed"
            )
        case ev.AssistantMessageStarted():
            await _insert_message(
                conn,
                cid,
                at,
                id=p.message_id,
                position=p.position,
                role="assistant",
                content="",
                status="streaming",
                run_id=p.run_id,
                model_id=p.model_id,
            )
        case ev.AssistantMessageCheckpointed():
            await _update_message(conn, p.message_id, at, content=p.content)
        case ev.AssistantMessageCompleted():
            await _update_message(
                conn,
                p.message_id,
                at,
                content=p.content,
                status="completed",
                usage=_jsonable(p.usage),
                finish_reason=p.finish_reason,
            )
        case ev.AssistantMessageFailed():
            await _update_message(
                conn,
                p.message_id,
                at,
                content=p.content,
                status="failed",
                usage=_jsonable(p.usage),
                error={"code": p.error_code, "detail": p.error_detail},
            )
        case ev.AssistantMessageInterrupted():
            await _update_message(
                conn,
                p.message_id,
                at,
                content=p.content,
                status="interrupted",
                usage=_jsonable(p.usage),
                finish_reason=p.reason,
            )
        case ev.ConversationTruncated():
            await conn.execute(
                update(mt)
                .where(mt.c.conversation_id == cid, mt.c.id.in_(p.removed_message_ids))
                .values(in_branch=False, updated_at=at)
            )
            await _settle_status(conn, cid)
        case ev.ConversationRestored():
            await _settle_status(conn, cid)
        case ev.ConversationDeleted():
            await conn.execute(delete(mt).where(mt.c.conversation_id == cid))
        case ev.ToolCallRequested() | ev.ToolCallApproved() | ev.ToolCallDenied() | ev.ToolCallCompleted():
            await _apply_tool_call(conn, cid, p, at)
    if isinstance(p, _REBUILDS_SEARCH):
        await _refresh_search(conn, cid)
    elif isinstance(p, _ADDS_TO_SEARCH):
        await _search_more(conn, cid, p.content)


def _is_conversation(e: RecordedEvent) -> bool:
    return e.stream_id.startswith(ev.STREAM_PREFIX) and isinstance(e.payload, ev.ConversationEvent)


async def project(conn: Conn, events: Sequence[RecordedEvent]) -> None:
    """Apply conversation events (others are skipped), in order; safe to repeat."""
    for e in events:
        if _is_conversation(e):
            await _apply_one(conn, e)


class ConversationsProjection:
    name = "conversations"

    async def apply(self, tx: PostgresTransaction, events: Sequence[RecordedEvent]) -> None:
        await project(tx.session, events)

    async def reset(self, tx: PostgresTransaction) -> None:
        await tx.session.execute(delete(mt))
        await tx.session.execute(delete(ct))
