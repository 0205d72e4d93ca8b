"""The events of a run's stream (CONTRACT.md, Streaming): one tagged union on ``type``.

Producers build payloads; the stream writer (infra.runs.stream) stamps the envelope every frame
repeats (``seq``, ``run_id``, ``created_at``) when it publishes, so the envelope fields default to
placeholders here. Terminal events are published by the run runner only, exactly once per run.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

NIL = uuid.UUID(int=0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RunEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope of every frame: its position in the run (from 1, no gaps), the run and the time."""

    seq: int = 0
    run_id: uuid.UUID = NIL
    created_at: datetime = EPOCH


class RunStarted(RunEvent, frozen=True, kw_only=True, tag="run.started"):
    kind: str = "chat"


class MessageStarted(RunEvent, frozen=True, kw_only=True, tag="message.started"):
    message_id: uuid.UUID
    role: str = "assistant"


class MessageDelta(RunEvent, frozen=True, kw_only=True, tag="message.delta"):
    message_id: uuid.UUID
    text: str


class MessageCompleted(RunEvent, frozen=True, kw_only=True, tag="message.completed"):
    message_id: uuid.UUID
    stop_reason: str | None = None


class ToolCallStarted(RunEvent, frozen=True, kw_only=True, tag="tool_call.started"):
    tool_call_id: str
    name: str


class ToolCallArgumentsDelta(RunEvent, frozen=True, kw_only=True, tag="tool_call.arguments.delta"):
    tool_call_id: str
    name: str
    text: str


class ToolCallCompleted(RunEvent, frozen=True, kw_only=True, tag="tool_call.completed"):
    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    result: Any = None
    is_error: bool = False


class ApprovalRequested(RunEvent, frozen=True, kw_only=True, tag="approval.requested"):
    approval_id: uuid.UUID
    tool_call_id: str
    name: str
    arguments: dict[str, Any]


class ApprovalDecided(RunEvent, frozen=True, kw_only=True, tag="approval.decided"):
    approval_id: uuid.UUID
    tool_call_id: str
    decision: str  # approve | deny | timeout
    reason: str | None = None


class Usage(RunEvent, frozen=True, kw_only=True, tag="usage"):
    input_tokens: int
    output_tokens: int
    cost: float | None = None


class StepStarted(RunEvent, frozen=True, kw_only=True, tag="step.started"):
    step_id: str
    agent_id: uuid.UUID | None = None
    agent_name: str | None = None


class StepCompleted(RunEvent, frozen=True, kw_only=True, tag="step.completed"):
    step_id: str
    agent_id: uuid.UUID | None = None
    agent_name: str | None = None


class RunProblem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem as carried by ``run.failed`` (``code`` is stable: switch on it)."""

    type: str = "about:blank"
    title: str
    status: int
    code: str
    detail: str | None = None


class RunCompleted(RunEvent, frozen=True, kw_only=True, tag="run.completed"):
    pass


class RunFailed(RunEvent, frozen=True, kw_only=True, tag="run.failed"):
    problem: RunProblem


class RunCancelled(RunEvent, frozen=True, kw_only=True, tag="run.cancelled"):
    pass


AnyRunEvent = (
    RunStarted
    | MessageStarted
    | MessageDelta
    | MessageCompleted
    | ToolCallStarted
    | ToolCallArgumentsDelta
    | ToolCallCompleted
    | ApprovalRequested
    | ApprovalDecided
    | Usage
    | StepStarted
    | StepCompleted
    | RunCompleted
    | RunFailed
    | RunCancelled
)

TERMINAL_TYPES: frozenset[str] = frozenset({"run.completed", "run.failed", "run.cancelled"})


def type_of(event: RunEvent) -> str:
    return str(type(event).__struct_config__.tag)


def is_terminal(event: RunEvent) -> bool:
    return type_of(event) in TERMINAL_TYPES


def problem(status: int, code: str, title: str, detail: str | None = None) -> RunProblem:
    kind = "https://liteskill.dev/problems/" + code.replace("_", "-")  # as api.problem.problem_type
    return RunProblem(type=kind, title=title, status=status, code=code, detail=detail)
