"""What a chat request holds: messages (system, user, assistant, tool results; text and images),
tool definitions and sampling options. Provider adapters translate these; nothing here names a
provider or an SDK type."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class TextPart(msgspec.Struct, frozen=True, tag="text", tag_field="type"):
    text: str


class ImagePart(msgspec.Struct, frozen=True, tag="image", tag_field="type"):
    """An image as bytes (``data`` with ``media_type``) or as a URL the provider fetches."""

    media_type: str = "image/png"
    data: bytes | None = None
    url: str | None = None


ContentPart = TextPart | ImagePart


class ToolCall(msgspec.Struct, frozen=True):
    """A call the model asked for; ``arguments`` is the parsed JSON object."""

    id: str
    name: str
    arguments: dict[str, Any]


class SystemMessage(msgspec.Struct, frozen=True, tag="system", tag_field="role"):
    content: str


class UserMessage(msgspec.Struct, frozen=True, tag="user", tag_field="role"):
    content: list[ContentPart]

    @classmethod
    def text(cls, text: str) -> UserMessage:
        return cls(content=[TextPart(text)])


class AssistantMessage(msgspec.Struct, frozen=True, tag="assistant", tag_field="role"):
    content: str = ""
    tool_calls: list[ToolCall] = []


class ToolResultMessage(msgspec.Struct, frozen=True, tag="tool", tag_field="role"):
    """The result of one tool call, answering ``tool_call_id``."""

    tool_call_id: str
    content: str
    is_error: bool = False


Message = SystemMessage | UserMessage | AssistantMessage | ToolResultMessage


class ToolDefinition(msgspec.Struct, frozen=True):
    name: str
    description: str = ""
    input_schema: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})


class NamedTool(msgspec.Struct, frozen=True):
    """Force the model to call this tool."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedTool


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One model call. ``model`` is the provider's own model id (the model's ``upstream_id``)."""

    model: str
    messages: list[Message]
    tools: list[ToolDefinition] = []
    tool_choice: ToolChoice = "auto"
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] = []

    @property
    def system(self) -> str | None:
        """The system messages joined (providers that take the system prompt apart use this)."""
        parts = [m.content for m in self.messages if isinstance(m, SystemMessage)]
        return "\n\n".join(parts) if parts else None
