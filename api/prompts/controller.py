"""/api/v1/prompts: CRUD over the prompt library, the proof of the platform's HTTP building blocks.

Each change runs in one write transaction that updates the row and appends its audit event to the
prompt's stream (``prompt-<id>``, expected version = the row's version before the change), so a
failed command leaves neither. Row locks (``FOR UPDATE``) make the If-Match check exact.

Access follows the prompt's ACL: the creator is its owner; viewers read, editors patch, owners delete.
A prompt the caller has no role on answers exactly like a missing one (404 ``prompt_not_found``).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET
from sqlalchemy import Row, insert, select, update
from sqlalchemy import delete as sql_delete

from api.context import event_metadata
from api.errors import ApiError
from api.etag import IfMatchHeader, IfNoneMatchHeader, check_if_match, etag, is_not_modified
from api.idempotency import IdempotencyKeyHeader, idempotent
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.problem import FieldError
from api.prompts.schemas import Prompt, PromptCreate, PromptList, PromptUpdate
from api.services import Services
from domain.prompts import events as ev
from domain.prompts.model import PromptFields, PromptNotFound, Violation, apply_changes, normalize, validate
from domain.shared.clock import utcnow
from domain.shared.events import Event, NewEvent
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.access import acl
from infra.db.engine import WriteSession
from infra.db.tables.platform import prompts as t
from infra.eventstore.postgres import PostgresEventStore

PromptId = Annotated[uuid.UUID, PathParameter(description="The prompt's id (UUID).")]
TagFilter = Annotated[str | None, QueryParameter(name="tag", description="Only prompts carrying this tag.")]

_ETAG_HEADER = ResponseHeader(name="ETag", description="Strong ETag of the prompt's version.", documentation_only=True)
_NOT_FOUND = {404: ResponseSpec(None, description="No prompt with this id (`prompt_not_found`).")}
_FORBIDDEN = {403: ResponseSpec(None, description="Your role on the prompt does not allow this (`forbidden`).")}
_PRECONDITION = {412: ResponseSpec(None, description="If-Match does not name the current version.")}


def _to_schema(row: Row[Any]) -> Prompt:
    return Prompt(
        id=row.id,
        name=row.name,
        description=row.description,
        body=row.body,
        tags=list(row.tags),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _raise_invalid(violations: list[Violation]) -> None:
    if violations:
        errors = [FieldError(detail=v.detail, code="invalid", pointer=v.pointer) for v in violations]
        raise ApiError(400, "validation_error", "The request is not valid.", errors=errors)


def caller_scope(scope: Any) -> str:
    """Idempotency keys belong to the presented credential, so two callers' keys never meet."""
    credential = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), "")
    return "bearer:" + hashlib.sha256(credential.encode()).hexdigest()[:32] if credential else "anonymous"


async def _append(
    session: WriteSession,
    request: Request[Any, Any, Any],
    principal: Principal,
    prompt_id: uuid.UUID,
    before: int,
    event: Event,
) -> None:
    await PostgresEventStore(session).append(
        ev.stream_id(prompt_id), before, [NewEvent(payload=event, metadata=event_metadata(request, principal))]
    )


async def _lock(session: WriteSession, prompt_id: uuid.UUID) -> Row[Any]:
    row = (await session.execute(select(t).where(t.c.id == prompt_id).with_for_update())).one_or_none()
    if row is None:
        raise PromptNotFound()
    return row


def _with_etag(prompt: Prompt, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[Prompt]:
    return Response(prompt, status_code=status_code, headers={"ETag": etag(prompt.version), **(headers or {})})


class PromptController(Controller):
    path = "/prompts"
    tags = ["prompts"]
    opt = {"scope": "prompts"}

    @post(
        "",
        operation_id="CreatePrompt",
        summary="Create a prompt",
        status_code=201,
        middleware=[idempotent(scope_of=caller_scope)],
        # One documented header only: Litestar keeps response headers in a frozenset, so two would
        # come out in a per-process order and break the byte-stable OpenAPI file. ETag is sent too.
        response_headers=[
            ResponseHeader(name="Location", description="The new prompt's URL.", documentation_only=True)
        ],
        responses={
            409: ResponseSpec(None, description="The Idempotency-Key is still in flight (`idempotency_in_flight`)."),
            422: ResponseSpec(None, description="The Idempotency-Key was used for another request."),
        },
    )
    async def create_prompt(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[PromptCreate],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[Prompt]:
        fields = PromptFields(name=data.name, description=data.description, body=data.body, tags=data.tags)
        _raise_invalid(validate(fields))
        fields = normalize(fields)
        prompt_id, now = new_id(), utcnow()
        async with services.db.write() as session:
            await session.execute(
                insert(t).values(
                    id=prompt_id,
                    tenant_id=principal.tenant_id,
                    created_by=principal.user_id,
                    name=fields.name,
                    description=fields.description,
                    body=fields.body,
                    tags=fields.tags,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
            created = ev.PromptCreated(prompt_id=prompt_id, version=1, **msgspec.structs.asdict(fields))
            await _append(session, request, principal, prompt_id, 0, created)
            await acl.add_owner(session, principal, "prompt", prompt_id, event_metadata(request, principal))
        prompt = Prompt(id=prompt_id, version=1, created_at=now, updated_at=now, **msgspec.structs.asdict(fields))
        location = f"{request.url.path.rstrip('/')}/{prompt_id}"
        return _with_etag(prompt, 201, {"Location": location})

    @get("", operation_id="ListPrompts", summary="List prompts, newest first")
    async def list_prompts(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
        tag: TagFilter = None,
    ) -> Response[PromptList]:
        visible = acl.visible_ids_clause(principal, "prompt", t.c.id)
        query = select(t).where(visible).order_by(t.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(t.c.id < decode_cursor(cursor, IdCursor).id)
        if tag is not None:
            query = query.where(t.c.tags.contains([tag]))
        async with services.db.read() as session:
            rows = (await session.execute(query)).all()
        page, has_more, next_cursor = paginate(rows, limit, lambda r: IdCursor(r.id))
        body = PromptList(data=[_to_schema(r) for r in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get(
        "/{prompt_id:str}",
        operation_id="GetPrompt",
        summary="Get a prompt",
        response_headers=[_ETAG_HEADER],
        responses={304: ResponseSpec(None, description="Not modified (If-None-Match)."), **_NOT_FOUND},
    )
    async def get_prompt(
        self,
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        prompt_id: PromptId,
        if_none_match: IfNoneMatchHeader = None,
    ) -> Response[Prompt]:
        async with services.db.read() as session:
            await acl.require(session, principal, "prompt", prompt_id, "read", PromptNotFound)
            row = (await session.execute(select(t).where(t.c.id == prompt_id))).one_or_none()
        if row is None:
            raise PromptNotFound()
        if is_not_modified(if_none_match, row.version):
            not_modified: Response[Any] = Response(None, status_code=304, headers={"ETag": etag(row.version)})
            return not_modified
        return _with_etag(_to_schema(row))

    @patch(
        "/{prompt_id:str}",
        operation_id="UpdatePrompt",
        summary="Change some fields of a prompt",
        response_headers=[_ETAG_HEADER],
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION},
    )
    async def update_prompt(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        prompt_id: PromptId,
        data: JSONBody[PromptUpdate],
        if_match: IfMatchHeader = None,
    ) -> Response[Prompt]:
        """Fields left out keep their value. A change that alters nothing keeps the version (no event)."""
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not UNSET}
        async with services.db.write() as session:
            await acl.require(session, principal, "prompt", prompt_id, "update", PromptNotFound)
            row = await _lock(session, prompt_id)
            check_if_match(if_match, row.version)
            current = PromptFields(name=row.name, description=row.description, body=row.body, tags=list(row.tags))
            fields, changed, violations = apply_changes(current, changes)
            _raise_invalid(violations)
            if not changed:
                return _with_etag(_to_schema(row))
            version, now = row.version + 1, utcnow()
            values = msgspec.structs.asdict(fields)
            await session.execute(
                update(t).where(t.c.id == prompt_id).values(version=version, updated_at=now, **values)
            )
            updated = ev.PromptUpdated(prompt_id=prompt_id, changed=changed, version=version, **values)
            await _append(session, request, principal, prompt_id, row.version, updated)
        return _with_etag(Prompt(id=prompt_id, version=version, created_at=row.created_at, updated_at=now, **values))

    @delete(
        "/{prompt_id:str}",
        operation_id="DeletePrompt",
        summary="Delete a prompt",
        status_code=204,
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION},
    )
    async def delete_prompt(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        prompt_id: PromptId,
        if_match: IfMatchHeader = None,
    ) -> None:
        async with services.db.write() as session:
            await acl.require(session, principal, "prompt", prompt_id, "delete", PromptNotFound)
            row = await _lock(session, prompt_id)
            check_if_match(if_match, row.version)
            await session.execute(sql_delete(t).where(t.c.id == prompt_id))
            await acl.remove_all(session, "prompt", prompt_id)
            deleted = ev.PromptDeleted(prompt_id=prompt_id, version=row.version)
            await _append(session, request, principal, prompt_id, row.version, deleted)
