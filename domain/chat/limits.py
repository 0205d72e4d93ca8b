"""The limits of a conversation's fields and the checks that apply them (pure); a broken rule raises
``InvalidConversation`` with the JSON Pointer of the field at fault."""

from __future__ import annotations

import uuid

from domain.chat.errors import InvalidConversation
from domain.chat.events import ToolSettings

TITLE_MAX = 200
SYSTEM_PROMPT_MAX = 100_000
CONTENT_MAX = 200_000
MCP_SERVERS_MAX = 50
TOOL_NAME_MAX = 200


def check_text(value: str | None, pointer: str, *, max_len: int, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise InvalidConversation(pointer, "Is required")
        return None
    if "\x00" in value:
        raise InvalidConversation(pointer, "Must not contain NUL characters")
    if required and not value.strip():
        raise InvalidConversation(pointer, "Must not be blank")
    if len(value) > max_len:
        raise InvalidConversation(pointer, f"Must be at most {max_len} characters")
    return value


def clean_title(title: str | None) -> str | None:
    """A trimmed title; blank means none."""
    check_text(title, "/title", max_len=TITLE_MAX)
    if title is None or not title.strip():
        return None
    return title.strip()


def clean_tools(tools: ToolSettings) -> ToolSettings:
    """Tool settings with duplicate server ids dropped (first wins)."""
    ids: list[uuid.UUID] = []
    for server_id in tools.mcp_server_ids:
        if server_id not in ids:
            ids.append(server_id)
    if len(ids) > MCP_SERVERS_MAX:
        raise InvalidConversation("/tools/mcp_server_ids", f"Must name at most {MCP_SERVERS_MAX} servers")
    return ToolSettings(mcp_server_ids=ids, approval=tools.approval)
