"""Facts about the current request that commands record: its id and the audit metadata of events."""

from __future__ import annotations

from typing import Any

from litestar import Request

from domain.shared.events import EventMetadata
from domain.shared.principal import Principal


def request_id(request: Request[Any, Any, Any]) -> str | None:
    rid = dict(request.scope).get("request_id")
    return rid if isinstance(rid, str) else None


def event_metadata(request: Request[Any, Any, Any], principal: Principal | None = None) -> EventMetadata:
    """Who did it, from where, within which request: the metadata every event of a command carries."""
    return EventMetadata(
        request_id=request_id(request),
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        actor=principal.actor if principal else None,
        tenant_id=str(principal.tenant_id) if principal else None,
    )


UNCHANGED = "liteskill.unchanged"


def mark_unchanged(request: Request[Any, Any, Any]) -> None:
    """This successful state-changing request changed nothing (an idempotent repeat), so it
    appended no audit event on purpose. The test suite's audit check (tests/audit_check.py)
    expects an event from every other successful change."""
    request.scope[UNCHANGED] = True  # type: ignore[literal-required]
