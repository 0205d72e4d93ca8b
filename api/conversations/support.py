"""What the conversation routes share: the entity name, parameters and response specs, turning
read-model rows into responses, field-rule problems, and checking the model and MCP servers a
conversation names."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
from litestar import Response
from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, QueryParameter
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.conversations.schemas import (
    Conversation,
    ConversationTools,
    Message,
    MessageError,
    MessageToolCall,
    MessageUsage,
)
from api.errors import ApiError
from api.etag import etag
from api.problem import FieldError
from domain.chat.errors import ConversationNotFound, InvalidConversation
from domain.chat.events import ToolSettings
from domain.shared.events import Event
from domain.shared.principal import Principal
from infra.access import acl
from infra.db.tables.chat import conversations as ct
from infra.db.tables.llm import models
from infra.db.tables.mcp import mcp_servers
from infra.mcp.servers import ENTITY as MCP_ENTITY

ENTITY = "conversation"
Q_MAX = 200

ConversationId = Annotated[uuid.UUID, PathParameter(description="The conversation's id (UUID).")]
SearchParam = Annotated[
    str | None,
    QueryParameter(
        name="q", max_length=Q_MAX, description="Full-text search over titles and message text (all words must match)."
    ),
]
ArchivedParam = Annotated[
    bool, QueryParameter(name="archived", description="Include archived conversations (hidden by default).")
]

ETAG_HEADER = ResponseHeader(
    name="ETag", description="Strong ETag of the conversation's version.", documentation_only=True
)
NOT_FOUND = {404: ResponseSpec(None, description="No conversation with this id (`conversation_not_found`).")}
FORBIDDEN = {403: ResponseSpec(None, description="Your role on the conversation does not allow this (`forbidden`).")}
PRECONDITION = {412: ResponseSpec(None, description="If-Match does not name the current version.")}
CONFLICT = {
    409: ResponseSpec(
        None,
        description="A turn is running (`conversation_busy`), the conversation is archived"
        " (`conversation_archived`) or not archived (`conversation_not_archived`).",
    )
}


class PositionCursor(msgspec.Struct, array_like=True, frozen=True):
    position: int


class VersionCursor(msgspec.Struct, array_like=True, frozen=True):
    version: int


def conversation_schema(row: Row[Any]) -> Conversation:
    return Conversation(
        id=row.id,
        title=row.title,
        system_prompt=row.system_prompt,
        model_id=row.model_id,
        tools=msgspec.convert(row.tools or {}, ConversationTools),
        status=row.status,
        owner_id=row.owner_id,
        parent_conversation_id=row.parent_conversation_id,
        forked_from_message_id=row.forked_from_message_id,
        last_message_at=row.last_message_at,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def message_schema(row: Row[Any]) -> Message:
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        position=row.position,
        role=row.role,
        content=row.content,
        status=row.status,
        run_id=row.run_id,
        model_id=row.model_id,
        usage=None if row.usage is None else msgspec.convert(row.usage, MessageUsage),
        error=None if row.error is None else msgspec.convert(row.error, MessageError),
        finish_reason=row.finish_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        tool_calls=msgspec.convert(row.tool_calls or [], list[MessageToolCall]),
    )


def with_etag(
    conversation: Conversation, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response[Conversation]:
    return Response(
        conversation, status_code=status_code, headers={"ETag": etag(conversation.version), **(headers or {})}
    )


def checked(fn: Callable[[], Sequence[Event]]) -> Sequence[Event]:
    """Run a decide function, turning a broken field rule into a 400 with its JSON Pointer."""
    try:
        return fn()
    except InvalidConversation as exc:
        raise ApiError(
            400,
            "validation_error",
            "The request is not valid.",
            errors=[FieldError(detail=exc.detail, code="invalid", pointer=exc.pointer)],
        ) from None


def tool_settings(body: ConversationTools) -> ToolSettings:
    return ToolSettings(mcp_server_ids=list(body.mcp_server_ids), approval=body.approval)


async def check_model(session: AsyncSession, principal: Principal, model_id: uuid.UUID) -> None:
    kind = await session.scalar(
        select(models.c.kind).where(models.c.id == model_id, models.c.tenant_id == principal.tenant_id)
    )
    if kind != "chat":
        raise ApiError(
            422,
            "model_not_found",
            "model_id must name a chat model of your tenant.",
            errors=[FieldError(detail="No chat model with this id", code="model_not_found", pointer="/model_id")],
        )


async def check_tools(session: AsyncSession, principal: Principal, tools: ToolSettings) -> None:
    if not tools.mcp_server_ids:
        return
    found = set(
        await session.scalars(
            select(mcp_servers.c.id).where(
                mcp_servers.c.id.in_(tools.mcp_server_ids),
                mcp_servers.c.tenant_id == principal.tenant_id,
                acl.visible_ids_clause(principal, MCP_ENTITY, mcp_servers.c.id),
            )
        )
    )
    for index, server_id in enumerate(tools.mcp_server_ids):
        if server_id not in found:
            raise ApiError(
                422,
                "mcp_server_not_found",
                "Every tools.mcp_server_ids entry must name an MCP server you can see.",
                errors=[
                    FieldError(
                        detail="No MCP server with this id",
                        code="mcp_server_not_found",
                        pointer=f"/tools/mcp_server_ids/{index}",
                    )
                ],
            )


async def conversation_row(session: AsyncSession, conversation_id: uuid.UUID) -> Row[Any]:
    row = (await session.execute(select(ct).where(ct.c.id == conversation_id, ct.c.status != "deleted"))).one_or_none()
    if row is None:
        raise ConversationNotFound()
    return row
