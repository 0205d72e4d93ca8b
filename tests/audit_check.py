"""The audit invariant, checked on every request the test suite makes: a state-changing request
(POST, PUT, PATCH, DELETE) that succeeds must have appended at least one event carrying its
request id. The ``client`` fixture wraps the app in ``AuditedApp``; a test that makes an
unaudited change fails at teardown, naming the request.

Exempt, with the reason next to each: requests that change no audited state by design.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text

from api.context import UNCHANGED
from infra.db.engine import Database

EXEMPT: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/v1/auth/refresh$"), "token rotation within a session: the session's start is audited"),
    ("POST", re.compile(r"^/api/v1/auth/oidc/exchange$"), "audited by the callback that signed the user in"),
    ("POST", re.compile(r"^/api/v1/providers/[^/]+/test$"), "a read-only connection check: nothing changes"),
]


class AuditedApp:
    def __init__(self, app: Any, db: Database) -> None:
        self.app = app
        self.db = db
        self.changes: list[tuple[str, str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        seen: dict[str, Any] = {}

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-request-id":
                        seen["rid"] = value.decode()
                    if name.lower() == b"idempotent-replayed":
                        seen["replayed"] = True  # a replay repeats a change already audited
                if message["status"] < 300 and message["status"] != 202 and not _exempt(scope):
                    seen["check"] = True
            await send(message)

        await self.app(scope, receive, watch)
        unchanged = scope.get(UNCHANGED)  # api.context.mark_unchanged: an idempotent repeat
        if seen.get("check") and seen.get("rid") and seen.get("replayed") is None and not unchanged:
            self.changes.append((scope["method"], scope["path"], seen["rid"]))

    async def unaudited(self) -> list[str]:
        missing = []
        for method, path, rid in self.changes:
            async with self.db.read() as session:
                found = await session.scalar(
                    text("SELECT 1 FROM events WHERE metadata->>'request_id' = :rid LIMIT 1"), {"rid": rid}
                )
            if found is None:
                missing.append(f"{method} {path} (request {rid})")
        return missing


def _exempt(scope: Any) -> bool:
    return any(scope["method"] == m and p.match(scope["path"]) for m, p, _ in EXEMPT)
