"""Translating a provider-neutral ``ChatRequest`` into the parameters of Bedrock's Converse API."""

from __future__ import annotations

import base64
from typing import Any

from domain.llm.messages import (
    AssistantMessage,
    ChatRequest,
    ImagePart,
    NamedTool,
    SystemMessage,
    TextPart,
    ToolResultMessage,
    UserMessage,
)


class UnsupportedContent(ValueError):
    """Something in the request Bedrock's Converse API cannot take."""


_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _image_block(part: ImagePart) -> dict[str, Any]:
    media_type = part.media_type.lower()
    data = part.data
    url = part.url
    if data is None and url is not None and url.startswith("data:"):
        header, _, encoded = url.partition(",")
        if not header.endswith(";base64"):
            raise UnsupportedContent("image data URLs must be base64")
        media_type = header[5:].removesuffix(";base64").lower() or media_type
        data = base64.b64decode(encoded)
    fmt = _IMAGE_FORMATS.get(media_type)
    if fmt is None:
        raise UnsupportedContent(f"Bedrock does not take {part.media_type} images (png, jpeg, gif, webp)")
    if data is not None:
        source: dict[str, Any] = {"bytes": data}
    elif url is not None and url.startswith("s3://"):
        source = {"s3Location": {"uri": url}}
    else:
        raise UnsupportedContent("Bedrock takes images as bytes or s3:// URLs, not web URLs")
    return {"image": {"format": fmt, "source": source}}


def _uses_tools(request: ChatRequest) -> bool:
    return any(
        isinstance(m, ToolResultMessage) or (isinstance(m, AssistantMessage) and m.tool_calls) for m in request.messages
    )


def _messages(request: ChatRequest) -> list[dict[str, Any]]:
    """Converse messages alternate user/assistant: consecutive messages of one role (several
    tool results, a tool result then user text) become one message."""
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for m in request.messages:
        if isinstance(m, SystemMessage):
            continue
        if isinstance(m, UserMessage):
            blocks: list[dict[str, Any]] = []
            for part in m.content:
                if isinstance(part, TextPart):
                    if part.text:
                        blocks.append({"text": part.text})
                else:
                    blocks.append(_image_block(part))
            add("user", blocks)
        elif isinstance(m, AssistantMessage):
            blocks = [{"text": m.content}] if m.content else []
            blocks.extend({"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}} for c in m.tool_calls)
            add("assistant", blocks)
        else:
            result = {
                "toolUseId": m.tool_call_id,
                "content": [{"text": m.content}],
                "status": "error" if m.is_error else "success",
            }
            add("user", [{"toolResult": result}])
    return turns


def _tool_config(request: ChatRequest) -> dict[str, Any] | None:
    """Bedrock has no "none" tool choice: then tools are left out, unless the conversation holds
    tool calls (Converse requires a toolConfig then), when they go without a toolChoice. A
    conversation with tool calls but no tool definitions gets minimal specs for the names used."""
    history = _uses_tools(request)
    tools: list[dict[str, Any]] = []
    for tool in request.tools:
        spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": tool.input_schema}}
        if tool.description:
            spec["description"] = tool.description
        tools.append({"toolSpec": spec})
    if not tools and history:
        names = dict.fromkeys(c.name for m in request.messages if isinstance(m, AssistantMessage) for c in m.tool_calls)
        tools = [{"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object"}}}} for n in names]
        if not tools:
            return None
        return {"tools": tools}
    if not tools or (request.tool_choice == "none" and not history):
        return None
    config: dict[str, Any] = {"tools": tools}
    choice = request.tool_choice
    if isinstance(choice, NamedTool):
        config["toolChoice"] = {"tool": {"name": choice.name}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    return config  # "auto" is Bedrock's default (and not every model accepts it spelled out)


def converse_params(request: ChatRequest) -> dict[str, Any]:
    """The ``converse_stream`` keyword arguments for ``request`` (raises UnsupportedContent)."""
    params: dict[str, Any] = {"modelId": request.model, "messages": _messages(request)}
    system = request.system
    if system:
        params["system"] = [{"text": system}]
    inference: dict[str, Any] = {}
    if request.max_tokens is not None:
        inference["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.stop:
        inference["stopSequences"] = list(request.stop)
    if inference:
        params["inferenceConfig"] = inference
    tool_config = _tool_config(request)
    if tool_config is not None:
        params["toolConfig"] = tool_config
    return params
