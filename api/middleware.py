"""ASGI middleware that wraps the whole app: request ids, access logs, and the JSON-only body rule.

It runs outside routing so that even unknown routes get a request id and a log line.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from infra.logging import request_id_var

access_log = logging.getLogger("liteskill.access")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContextMiddleware:
    """Accept or generate ``X-Request-ID``, echo it, and log one structured line per request."""

    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_ID.match(candidate):
                    rid = candidate
                break
        if rid is None:
            rid = uuid.uuid4().hex
        scope["request_id"] = rid  # type: ignore[typeddict-unknown-key]
        token = request_id_var.set(rid)
        header = (b"x-request-id", rid.encode())
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]  # type: ignore[typeddict-item]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if self.log_requests:
                access_log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            request_id_var.reset(token)


def install(app: Any, *, log_requests: bool) -> None:
    """Wrap a Litestar app's ASGI handler (inside its own __call__, outside routing)."""
    app.asgi_handler = RequestContextMiddleware(app.asgi_handler, log_requests=log_requests)
