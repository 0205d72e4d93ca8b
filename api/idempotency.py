"""``Idempotency-Key``: a retried POST (or PATCH/DELETE) replays the first response instead of acting twice.

Applied per route as ASGI middleware (``@post(..., middleware=[idempotent()])``), inside Litestar's
exception handling, so the handler's problem responses are seen as responses and errors raised
here become problem+json like any other. A request carrying the header:

1. reserves ``(scope, key)`` with one committed ``INSERT ... ON CONFLICT`` (an expired row is
   taken over in the same statement), fingerprinted by method, path with query, and the SHA-256 of
   the body (JSON bodies canonicalised, so key order and whitespace do not matter);
2. runs the handler, streaming its response to the client while keeping a copy;
3. stores the response (state ``completed``, kept ``idempotency_ttl_s``) or releases the key.

A repeat with the same fingerprint replays the stored status, headers and body with
``Idempotent-Replayed: true``; another fingerprint is 422 ``idempotency_key_reused``; a repeat
while the first is running is 409 ``idempotency_in_flight`` with ``Retry-After``.

What is stored: every response below 400, and 400/413/422, which depend only on the request itself
(its body): retrying those unchanged can only fail the same way. Anything that depends on state or
time (401, 403, 404, 408, 409, 412, 415, 428, 429, every 5xx, an exception, a cancelled request)
releases the key so the client can retry with it once the cause is fixed. A crash between the
handler's commit and storing the response leaves an in-flight row that expires after a short lease
(``lease_s``); a retry after that runs again, the residual risk of any idempotency layer that does
not share the handler's transaction. Responses larger than ``max_body`` are not kept (key released).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, cast

import msgspec
from litestar import Request
from litestar.middleware import DefineMiddleware
from litestar.params import HeaderParameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from api.errors import ApiError
from api.problem import FieldError
from api.services import Services
from infra.db.engine import Database
from infra.db.tables.platform import idempotency_keys as t

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_MAX = 255
IN_FLIGHT_LEASE_S = 300
MAX_STORED_BODY = 1_048_576
DEFAULT_METHODS = frozenset({"POST", "PATCH", "DELETE"})

_retry = {"Retry-After": "1"}
_STORED_STATUSES = frozenset({400, 413, 422})
# Per-connection or per-response facts that a replay must not repeat (the outer request-id
# middleware adds the new request's own X-Request-ID).
_UNSTORED_HEADERS = frozenset(
    {b"content-length", b"date", b"server", b"x-request-id", b"set-cookie", b"connection", b"transfer-encoding"}
)

IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name=HEADER,
        min_length=1,
        max_length=KEY_MAX,
        description="Makes the request safe to retry: the same key and body replay the first response for 24 h.",
    ),
]

ScopeOf = Callable[[Scope], str]


def anonymous_scope(scope: Scope) -> str:
    """Until authentication lands every caller shares one key space; then scope by principal."""
    return "anonymous"


def fingerprint(body: bytes) -> str:
    """SHA-256 of the body; JSON is canonicalised (sorted keys, no whitespace) first."""
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted") if body else b""
    except (msgspec.DecodeError, msgspec.EncodeError):
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def should_store(status: int) -> bool:
    return status < 400 or status in _STORED_STATUSES


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class IdempotencyMiddleware:
    """See the module docstring. ``scope_of`` maps the ASGI scope to the key's owner."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        scope_of: ScopeOf = anonymous_scope,
        methods: frozenset[str] = DEFAULT_METHODS,
        lease_s: int = IN_FLIGHT_LEASE_S,
        max_body: int = MAX_STORED_BODY,
    ) -> None:
        self.app = app
        self.scope_of = scope_of
        self.methods = methods
        self.lease_s = lease_s
        self.max_body = max_body

    async def __call__(self, asgi_scope: Scope, receive: Receive, send: Send) -> None:
        scope = cast("dict[str, Any]", asgi_scope)
        if scope["type"] != "http" or scope["method"] not in self.methods:
            await self.app(asgi_scope, receive, send)
            return
        key = _header(scope, HEADER.lower().encode())
        if key is None:
            await self.app(asgi_scope, receive, send)
            return
        if not 1 <= len(key) <= KEY_MAX:
            raise ApiError(
                400,
                "validation_error",
                "The request is not valid.",
                errors=[FieldError(detail=f"Must be 1 to {KEY_MAX} characters", code="invalid", parameter=HEADER)],
            )
        services = cast("Services", scope["app"].state.services)
        db = services.db
        # Read (and cache in the scope) the body the handler will parse.
        body = await Request[Any, Any, Any](asgi_scope, receive).body()
        owner = self.scope_of(asgi_scope)
        query = scope.get("query_string", b"").decode("latin-1")
        path = str(scope["path"]) + (f"?{query}" if query else "")
        request = (str(scope["method"]), path, fingerprint(body))

        reserved_at = await self._reserve(db, owner, key, request)
        if reserved_at is None:
            await self._answer_existing(db, owner, key, request, send)
            return

        status: int | None = None
        headers: list[list[str]] = []
        chunks: list[bytes] = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() not in _UNSTORED_HEADERS:
                        headers.append([name.decode("latin-1"), value.decode("latin-1")])
            elif message["type"] == "http.response.body" and size <= self.max_body:
                chunk = message.get("body", b"")
                size += len(chunk)
                chunks.append(chunk)
            await send(message)

        try:
            await self.app(asgi_scope, receive, capture)
        except BaseException:
            await asyncio.shield(self._release(db, owner, key, reserved_at))
            raise
        if status is None or not should_store(status) or size > self.max_body:
            await self._release(db, owner, key, reserved_at)
            return
        await self._complete(db, owner, key, reserved_at, status, headers, b"".join(chunks), services)

    async def _reserve(self, db: Database, owner: str, key: str, request: tuple[str, str, str]) -> datetime | None:
        """Take the key (or an expired row of it); the reservation's ``created_at``, or ``None`` if taken."""
        method, path, digest = request
        stmt = insert(t).values(
            scope=owner,
            key=key,
            request_method=method,
            request_path=path,
            request_hash=digest,
            state="in_flight",
            created_at=func.clock_timestamp(),
            expires_at=func.now() + timedelta(seconds=self.lease_s),
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[t.c.scope, t.c.key],
            set_={
                "request_method": stmt.excluded.request_method,
                "request_path": stmt.excluded.request_path,
                "request_hash": stmt.excluded.request_hash,
                "state": "in_flight",
                "response_status": None,
                "response_headers": None,
                "response_body": None,
                "created_at": stmt.excluded.created_at,
                "expires_at": stmt.excluded.expires_at,
            },
            where=t.c.expires_at <= func.now(),
        ).returning(t.c.created_at)
        async with db.write() as session:
            reserved: datetime | None = (await session.execute(upsert)).scalar_one_or_none()
        return reserved

    async def _answer_existing(
        self, db: Database, owner: str, key: str, request: tuple[str, str, str], send: Send
    ) -> None:
        async with db.read() as session:
            row = (
                await session.execute(
                    select(
                        t.c.request_method,
                        t.c.request_path,
                        t.c.request_hash,
                        t.c.state,
                        t.c.response_status,
                        t.c.response_headers,
                        t.c.response_body,
                    ).where(t.c.scope == owner, t.c.key == key)
                )
            ).one_or_none()
        if row is None:
            # Released between our insert and this read: the client may simply retry now.
            raise ApiError(
                409, "idempotency_in_flight", "A request with this key just finished; retry.", headers=_retry
            )
        if (row.request_method, row.request_path, row.request_hash) != request:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request (method, path or body).",
            )
        if row.state != "completed" or row.response_status is None:
            raise ApiError(
                409,
                "idempotency_in_flight",
                "A request with this Idempotency-Key is still being processed; retry later.",
                headers=_retry,
            )
        body: bytes = row.response_body or b""
        raw_headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in row.response_headers or []]
        raw_headers += [(b"content-length", str(len(body)).encode()), (REPLAYED_HEADER.lower().encode(), b"true")]
        await send({"type": "http.response.start", "status": row.response_status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _complete(
        self,
        db: Database,
        owner: str,
        key: str,
        reserved_at: datetime,
        status: int,
        headers: list[list[str]],
        body: bytes,
        services: Services,
    ) -> None:
        ttl = timedelta(seconds=services.settings.idempotency_ttl_s)
        try:
            async with db.write() as session:
                await session.execute(
                    update(t)
                    .where(_mine(owner, key, reserved_at))
                    .values(
                        state="completed",
                        response_status=status,
                        response_headers=headers,
                        response_body=body,
                        expires_at=func.now() + ttl,
                    )
                )
        except Exception:  # the response is already sent; the in-flight lease frees the key later
            log.exception("could not store an idempotent response", extra={"key": key})

    async def _release(self, db: Database, owner: str, key: str, reserved_at: datetime) -> None:
        try:
            async with db.write() as session:
                await session.execute(delete(t).where(_mine(owner, key, reserved_at)))
        except Exception:
            log.exception("could not release an idempotency key", extra={"key": key})


def _mine(owner: str, key: str, reserved_at: datetime) -> Any:
    """Our own reservation only: after our lease expired another request may have taken the key."""
    return and_(t.c.scope == owner, t.c.key == key, t.c.state == "in_flight", t.c.created_at == reserved_at)


def idempotent(
    *,
    scope_of: ScopeOf = anonymous_scope,
    methods: frozenset[str] = DEFAULT_METHODS,
    lease_s: int = IN_FLIGHT_LEASE_S,
) -> DefineMiddleware:
    """Route middleware honouring ``Idempotency-Key``; add ``idempotency_key: IdempotencyKeyHeader = None``
    to the handler's signature so the header is documented in OpenAPI."""
    return DefineMiddleware(IdempotencyMiddleware, scope_of=scope_of, methods=methods, lease_s=lease_s)
