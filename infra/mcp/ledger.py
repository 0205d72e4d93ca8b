"""The tool-call ledger: every call the MCP gateway makes becomes a ``tool_calls`` row and an
``mcp.tool_called.v1`` audit event (stream ``tool_call-<call id>``), written in one short transaction.

The row keeps the arguments (values under secret-looking keys such as ``password`` or ``api_key``
replaced by ``"[redacted]"``, and a very large object replaced by a truncated preview) and a summary
of the result cut to ``SUMMARY_CHARS``; the event names only the server, the tool and the outcome.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import insert

from domain.mcp.events import ToolCalled, tool_call_stream
from domain.shared.events import EventMetadata
from infra.db.engine import Database
from infra.db.tables.mcp import tool_calls
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import record
from infra.mcp.calls import ToolCallRecord

SUMMARY_CHARS = 500
MAX_ARGUMENTS_BYTES = 16 * 1024
REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[-_]?key|authori[sz]ation|credential|private[-_]?key", re.I)


def redact(value: Any) -> Any:
    """``value`` with every value under a secret-looking key replaced by ``"[redacted]"``."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def stored_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of a call's arguments: redacted, and at most ``MAX_ARGUMENTS_BYTES``."""
    clean = redact(arguments)
    encoded = json.dumps(clean, default=str)
    if len(encoded.encode()) <= MAX_ARGUMENTS_BYTES:
        return dict(json.loads(encoded))
    return {"_truncated": True, "preview": encoded[:SUMMARY_CHARS]}


def summary(text: str, structured: dict[str, Any] | None) -> str:
    """At most ``SUMMARY_CHARS`` characters of the result (its text, else its structured content)."""
    body = text if text else (json.dumps(structured, default=str) if structured is not None else "")
    return body if len(body) <= SUMMARY_CHARS else body[: SUMMARY_CHARS - 1] + "…"


class DbRecorder:
    """Writes each tool call to ``tool_calls`` and the audit trail in one write transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, call: ToolCallRecord) -> None:
        result = call.result
        principal = call.principal
        actor = f"api_key:{principal.api_key_id}" if principal.api_key_id else principal.actor
        meta = EventMetadata(
            tenant_id=str(principal.tenant_id),
            actor=actor,
            request_id=call.context.request_id,
            correlation_id=str(call.context.run_id or call.context.conversation_id or "") or None,
        )
        async with self.db.write() as session:
            await session.execute(
                insert(tool_calls).values(
                    call_id=call.call_id,
                    tenant_id=principal.tenant_id,
                    user_id=principal.user_id,
                    server_id=call.server_id,
                    server_name=call.server_name,
                    tool=call.tool,
                    arguments=stored_arguments(call.arguments),
                    result_summary=summary(result.text, result.structured),
                    status=result.status,
                    is_error=result.is_error,
                    duration_ms=result.duration_ms,
                    conversation_id=call.context.conversation_id,
                    run_id=call.context.run_id,
                )
            )
            await record(
                PostgresEventStore(session),
                tool_call_stream(call.call_id),
                ToolCalled(
                    call_id=call.call_id,
                    mcp_server_id=call.server_id,
                    server_name=call.server_name,
                    tool=call.tool,
                    status=result.status,
                    is_error=result.is_error,
                    duration_ms=result.duration_ms,
                    conversation_id=call.context.conversation_id,
                    run_id=call.context.run_id,
                ),
                meta,
            )
