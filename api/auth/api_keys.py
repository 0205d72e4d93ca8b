"""/api/v1/api-keys: the caller's personal API keys (create, list, revoke).

The full key is in the creation response only; lists show its public prefix. A key that is not the
caller's answers exactly like a missing one (404 ``api_key_not_found``). Creating a key needs a
signed-in session: a key cannot mint further keys (it could otherwise outlive its own revocation or
widen its scopes). The create route does not take an Idempotency-Key: a replay would have to keep
the plaintext key in the replay store.

Scopes narrow what a key may do (``domain.shared.scopes``); the vocabulary is the set of resources
the routes declare, and anything else is refused at creation (400 ``unknown_scope``). A key created
without ``scopes`` is stored with ``["*"]``; keys stored with an empty list (from before scopes were
enforced) act as ``*`` too.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from msgspec import Meta

from api.auth.scopes import vocabulary
from api.context import event_metadata
from api.errors import ApiError
from api.pagination import CursorParam, IdCursor, LimitParam, Page, decode_cursor, page_response, paginate
from api.problem import FieldError
from api.services import Services
from domain.shared import scopes
from domain.shared.clock import utcnow
from domain.shared.principal import Principal
from infra.identity import api_keys as keys

NAME_MAX = 100
SCOPES_MAX = 50

KeyName = Annotated[str, Meta(min_length=1, max_length=NAME_MAX, description="A label for the key.")]
Scope = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:*-]+$")]
Scopes = Annotated[
    list[Scope],
    Meta(
        min_length=1,
        max_length=SCOPES_MAX,
        description=(
            "What the key may do: `<resource>:read`, `<resource>:write`, `<resource>:*`, `*:read`, `*:write` or `*`"
            ' (default `["*"]`); duplicates are dropped.'
        ),
    ),
]
ExpiresAt = Annotated[datetime, Meta(tz=True, description="When the key stops working; in the future.")]
ApiKeyId = Annotated[uuid.UUID, PathParameter(description="The API key's id (UUID).")]

_NOT_FOUND = {404: ResponseSpec(None, description="No API key of the caller with this id (`api_key_not_found`).")}


class ApiKeyCreate(msgspec.Struct, kw_only=True):
    name: KeyName
    expires_at: ExpiresAt | None = None
    scopes: Scopes = msgspec.field(default_factory=lambda: [scopes.ALL])


class ApiKey(msgspec.Struct, kw_only=True):
    """A personal API key, without its secret."""

    id: uuid.UUID
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str
    """The public part of the key (``lsk_<prefix>_...``), to tell keys apart."""
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class CreatedApiKey(ApiKey, kw_only=True):
    """A new key. ``key`` is shown this once and cannot be read again."""

    key: str


class ApiKeyList(Page[ApiKey], kw_only=True):
    """A page of the caller's keys, newest first."""

    data: list[ApiKey]  # restated: Litestar's schema generation loses a subclassed generic's parameter


def _to_schema(k: keys.ApiKey) -> ApiKey:
    return ApiKey(
        id=k.id,
        name=k.name,
        prefix=k.prefix,
        scopes=k.scopes,
        created_at=k.created_at,
        expires_at=k.expires_at,
        last_used_at=k.last_used_at,
    )


def _invalid(pointer: str, detail: str) -> ApiError:
    return ApiError(
        400,
        "validation_error",
        "The request is not valid.",
        errors=[FieldError(detail=detail, code="invalid", pointer=pointer)],
    )


def _check_scopes(requested: list[str], resources: frozenset[str]) -> None:
    unknown = [
        FieldError(
            detail=f"Unknown scope {scope!r}: use <resource>:read|write|* or *:read|write or *, resources "
            + ", ".join(sorted(resources))
            + ".",
            code="unknown_scope",
            pointer=f"/scopes/{i}",
        )
        for i, scope in enumerate(requested)
        if not scopes.is_known(scope, resources)
    ]
    if unknown:
        raise ApiError(400, "unknown_scope", "The request names scopes that do not exist.", errors=unknown)


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ["auth"]
    opt = {"scope": "api_keys"}

    @post(
        "",
        operation_id="CreateApiKey",
        summary="Create a personal API key (the key is shown once)",
        status_code=201,
        response_headers=[ResponseHeader(name="Location", description="The new key's URL.", documentation_only=True)],
        responses={
            403: ResponseSpec(None, description="Keys are created from a signed-in session (`session_required`).")
        },
    )
    async def create_api_key(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[ApiKeyCreate],
    ) -> Response[CreatedApiKey]:
        if principal.session_id is None:
            raise ApiError(403, "session_required", "Create API keys while signed in, not with another API key.")
        name = data.name.strip()
        if not name:
            raise _invalid("/name", "The name must not be blank.")
        if data.expires_at is not None and data.expires_at <= utcnow():
            raise _invalid("/expires_at", "The expiry must be in the future.")
        _check_scopes(data.scopes, vocabulary(request.app))
        async with services.db.write() as session:
            created = await keys.create(
                session, principal, name, data.scopes, data.expires_at, event_metadata(request, principal)
            )
        body = CreatedApiKey(key=created.key, **msgspec.structs.asdict(_to_schema(created.api_key)))
        location = f"{request.url.path.rstrip('/')}/{created.api_key.id}"
        return Response(body, status_code=201, headers={"Location": location, "Cache-Control": "no-store"})

    @get("", operation_id="ListApiKeys", summary="List the caller's API keys, newest first")
    async def list_api_keys(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
    ) -> Response[ApiKeyList]:
        before = decode_cursor(cursor, IdCursor).id if cursor is not None else None
        async with services.db.read() as session:
            rows = await keys.list_keys(session, principal, limit=limit + 1, before=before)
        page, has_more, next_cursor = paginate(rows, limit, lambda k: IdCursor(k.id))
        body = ApiKeyList(data=[_to_schema(k) for k in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @delete(
        "/{key_id:str}",
        operation_id="RevokeApiKey",
        summary="Revoke one of the caller's API keys",
        status_code=204,
        responses=_NOT_FOUND,
    )
    async def revoke_api_key(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        key_id: ApiKeyId,
    ) -> None:
        async with services.db.write() as session:
            await keys.revoke(session, principal, key_id, event_metadata(request, principal))
