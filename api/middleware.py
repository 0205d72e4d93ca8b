"""ASGI middleware that wraps the whole app: request ids, access logs, and the JSON-only body rule.

It runs outside routing so that even unknown routes get a request id and a log line.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, cast

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.ratelimit import response_headers
from infra.logging import request_id_var

access_log = logging.getLogger("liteskill.access")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContextMiddleware:
    """Accept or generate ``X-Request-ID``, echo it, and log one structured line per request."""

    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, asgi_scope: Scope, receive: Receive, send: Send) -> None:
        scope = cast("dict[str, Any]", asgi_scope)
        if scope["type"] != "http":
            await self.app(asgi_scope, receive, send)
            return
        rid: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_ID.match(candidate):
                    rid = candidate
                break
        if rid is None:
            rid = os.urandom(16).hex()
        scope["request_id"] = rid
        token = request_id_var.set(rid)
        header = (b"x-request-id", rid.encode())
        status = 500
        started = time.perf_counter()

        replacing = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, replacing
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if status >= 400 and not _is_problem(headers):
                    # Defence in depth: an error body produced outside our handlers (a framework
                    # page, a plugin) is replaced, so every error a client sees is problem+json.
                    replacing = True
                    return
                message["headers"] = [*headers, header, *response_headers(scope, headers)]
            elif replacing:
                if not message.get("more_body", False):
                    body = _fallback_problem(status, rid, scope["path"])
                    await send(
                        {
                            "type": "http.response.start",
                            "status": status,
                            "headers": [
                                (b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode()),
                                header,
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send(message)

        try:
            await self.app(asgi_scope, receive, send_wrapper)
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


def _is_problem(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.startswith(b"application/problem+json")
    return False


def _fallback_problem(status: int, rid: str, path: str) -> bytes:
    from http import HTTPStatus

    from api.errors import STATUS_CODES
    from api.problem import make_problem

    problem = make_problem(status, STATUS_CODES.get(status, "error"))
    problem = msgspec.structs.replace(problem, request_id=rid, instance=path)
    return msgspec.json.encode(problem) if HTTPStatus(status) else b""


def install(app: Any, *, log_requests: bool) -> None:
    """Wrap a Litestar app's ASGI handler (inside its own __call__, outside routing)."""
    app.asgi_handler = RequestContextMiddleware(app.asgi_handler, log_requests=log_requests)
