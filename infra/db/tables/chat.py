"""Read models of chat, filled by the conversations projection (infra/chat/projections.py).

The conversation event stream is the truth; these rows can be dropped and rebuilt from it. Both
carry the stream ``version`` they reflect so re-applying an event already seen is a no-op.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Index, Integer, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID

from infra.db.metadata import metadata

conversations = Table(
    "conversations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False),
    Column("owner_id", UUID(as_uuid=True), nullable=False),
    Column("title", Text, nullable=True),
    Column("system_prompt", Text, nullable=True),
    Column("model_id", UUID(as_uuid=True), nullable=True),
    # {"mcp_server_ids": [...], "approval": "auto" | "manual"}
    Column("tools", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("status", Text, nullable=False),  # created | active | running | archived
    Column("parent_conversation_id", UUID(as_uuid=True), nullable=True),
    Column("forked_from_message_id", UUID(as_uuid=True), nullable=True),
    Column("last_message_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),  # the stream version these columns reflect
    # Title plus the text of the current branch ('simple' configuration: no language stemming).
    Column("search", TSVECTOR, nullable=True),
    # How many characters of that text ``search`` was built from (at most SEARCH_CHARS).
    Column("search_chars", Integer, nullable=False, server_default=text("0")),
    Index("ix_conversations_tenant_id_owner_id", "tenant_id", "owner_id"),
    Index("ix_conversations_parent_conversation_id", "parent_conversation_id"),
    Index("ix_conversations_search", "search", postgresql_using="gin"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("conversation_id", UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("role", Text, nullable=False),  # user | assistant
    Column("content", Text, nullable=False, server_default=text("''")),
    Column("status", Text, nullable=False),  # streaming | completed | failed | interrupted
    Column("run_id", UUID(as_uuid=True), nullable=True),
    Column("model_id", UUID(as_uuid=True), nullable=True),
    Column("usage", JSONB, nullable=True),  # {input_tokens, output_tokens, cost}
    Column("error", JSONB, nullable=True),  # {code, detail} of a failed turn
    Column("finish_reason", Text, nullable=True),
    # The message's tool calls in order, each a domain.chat.events.ToolCallRecord as JSON.
    Column("tool_calls", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # Branch handling: truncation (edit, regenerate) takes messages off the current branch but keeps
    # them, so the history stays readable; only the current branch has in_branch = true.
    Column("in_branch", Boolean, nullable=False, server_default=text("true")),
    Column("source_message_id", UUID(as_uuid=True), nullable=True),  # the message a fork copied
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_messages_conversation_id_in_branch_position", "conversation_id", "in_branch", "position"),
)
