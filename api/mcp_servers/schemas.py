"""Request and response bodies of /api/v1/mcp-servers. Headers, the bearer token and stdio
environment values are accepted, never returned: responses name them only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from api.pagination import Page

Transport = Literal["streamable_http", "sse", "stdio"]
Approval = Literal["auto", "manual", "deny"]
Name = Annotated[str, Meta(min_length=1, max_length=200, description="Display name, unique in the tenant.")]
Url = Annotated[
    str,
    Meta(
        min_length=8,
        max_length=2000,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://",
        description="The server's endpoint: https (plain http only to allow-listed hosts).",
    ),
]
Secret = Annotated[str, Meta(min_length=1, max_length=8000)]
HeaderName = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
Headers = Annotated[dict[HeaderName, Secret], Meta(max_length=50, description="HTTP headers sent (write-only).")]
EnvName = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Env = Annotated[dict[EnvName, Secret], Meta(max_length=100, description="Environment of the program (write-only).")]
Command = Annotated[str, Meta(min_length=1, max_length=1000, description="The program a stdio server runs.")]
Arg = Annotated[str, Meta(max_length=4000)]
Args = Annotated[list[Arg], Meta(max_length=100)]
ToolName = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_./-]+$")]
AllowedTools = Annotated[
    list[ToolName], Meta(max_length=500, description="Tool names usable from this server (null: all).")
]
ToolApproval = Annotated[
    dict[ToolName, Approval], Meta(max_length=500, description="Per-tool overrides of `approval`.")
]
TimeoutS = Annotated[int, Meta(ge=1, le=600, description="How long one tool call may take, in seconds.")]


class McpServer(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["mcp_server"] = "mcp_server"
    name: str
    transport: Transport
    url: str | None
    header_names: list[str]
    has_bearer_token: bool
    credential_host: str | None
    """The host headers and the bearer token are sent to, and nowhere else."""
    command: str | None
    args: list[str]
    env_names: list[str]
    enabled: bool
    approval: Approval
    """Whether calling this server's tools needs approval: ``auto``, ``manual`` or ``deny``; the
    stricter of this and a conversation's setting wins."""
    tool_approval: dict[str, Approval]
    allowed_tools: list[str] | None
    call_timeout_s: int
    version: int
    created_at: datetime
    updated_at: datetime


class McpServerCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``url`` (and optionally ``headers``, ``bearer_token``) for ``streamable_http`` and ``sse``;
    ``command`` (and optionally ``args``, ``env``) for ``stdio``, which only instance admins may use."""

    name: Name
    transport: Transport
    url: Url | None = None
    headers: Headers | None = None
    bearer_token: Secret | None = None
    command: Command | None = None
    args: Args = msgspec.field(default_factory=list)
    env: Env | None = None
    enabled: bool = True
    approval: Approval = "manual"
    tool_approval: ToolApproval = msgspec.field(default_factory=dict)
    allowed_tools: AllowedTools | None = None
    call_timeout_s: TimeoutS = 60


class McpServerUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields left out keep their value; ``null`` clears. ``headers``, ``env`` and ``tool_approval``
    replace the whole map. Changing between HTTP and stdio clears the old transport's fields."""

    name: Name | UnsetType = UNSET
    transport: Transport | UnsetType = UNSET
    url: Url | UnsetType | None = UNSET
    headers: Headers | UnsetType | None = UNSET
    bearer_token: Secret | UnsetType | None = UNSET
    command: Command | UnsetType | None = UNSET
    args: Args | UnsetType = UNSET
    env: Env | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET
    approval: Approval | UnsetType = UNSET
    tool_approval: ToolApproval | UnsetType = UNSET
    allowed_tools: AllowedTools | UnsetType | None = UNSET
    call_timeout_s: TimeoutS | UnsetType = UNSET


class McpServerList(Page[McpServer], kw_only=True):
    data: list[McpServer]  # restated: Litestar's schema generation loses a subclassed generic's parameter


class McpTool(msgspec.Struct, kw_only=True):
    object: Literal["mcp_tool"] = "mcp_tool"
    name: str
    qualified_name: str
    """The name models see when this server's tools are offered to them."""
    title: str | None
    description: str
    input_schema: dict[str, Any]
    annotations: dict[str, Any]
    approval: Approval
    """The server's policy for this tool (a conversation may make it stricter)."""


class McpToolList(Page[McpTool], kw_only=True):
    """Every tool the server offers (after ``allowed_tools``), in one page."""

    data: list[McpTool]
