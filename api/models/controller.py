"""/api/v1/models: chat, embedding and rerank models served by a provider, shared through the ACL
(entity ``model``). Creating one needs at least editor on its provider; the creator owns it.
Using a model (``infra.llm.registry``) needs viewer on it."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET
from sqlalchemy import delete as sql_delete
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from api.access.acl_routes import acl_controller
from api.context import event_metadata
from api.errors import ApiError
from api.etag import IfMatchHeader, check_if_match, etag
from api.idempotency import IdempotencyKeyHeader, idempotent
from api.models.schemas import Capabilities, Model, ModelCreate, ModelKind, ModelList, ModelUpdate, Pricing
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.problem import FieldError
from api.prompts.controller import caller_scope
from api.services import Services
from domain.llm import provider_events as ev
from domain.shared.clock import utcnow
from domain.shared.errors import Conflict
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.access import acl
from infra.db.tables.llm import models as t
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import record
from infra.llm import providers as prov
from infra.llm.registry import ModelNotFound, load_model

ModelId = Annotated[uuid.UUID, PathParameter(description="The model's id (UUID).")]
KindFilter = Annotated[ModelKind | None, QueryParameter(name="kind", description="Only models of this kind.")]
ProviderFilter = Annotated[
    uuid.UUID | None, QueryParameter(name="provider_id", description="Only models of this provider.")
]

_NOT_FOUND = {404: ResponseSpec(None, description="No model with this id visible to you (`model_not_found`).")}
_FORBIDDEN = {403: ResponseSpec(None, description="Your role does not allow this (`forbidden`).")}
_PRECONDITION = {412: ResponseSpec(None, description="If-Match does not name the current version.")}
_NAME_TAKEN = "model_name_taken"


def to_schema(row: Any) -> Model:
    return Model(
        id=row.id,
        provider_id=row.provider_id,
        name=row.name,
        upstream_id=row.upstream_id,
        kind=row.kind,
        context_window=row.context_window,
        max_output_tokens=row.max_output_tokens,
        dimensions=row.dimensions,
        pricing=msgspec.convert(row.pricing, Pricing, strict=False) if row.pricing else None,
        capabilities=msgspec.convert(row.capabilities or {}, Capabilities),
        enabled=row.enabled,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _pricing(pricing: Pricing | None) -> dict[str, Any] | None:
    if pricing is None:
        return None
    errors = [
        FieldError(detail="Prices are non-negative decimals.", code="invalid", pointer=f"/pricing/{name}")
        for name in ("input", "output", "cached_input")
        if (value := getattr(pricing, name)) is not None and (not value.is_finite() or value < 0 or value > 10**6)
    ]
    if errors:
        raise ApiError(400, "validation_error", "The request is not valid.", errors=errors)
    return dict(msgspec.to_builtins(pricing))


def _with_etag(row: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[Model]:
    return Response(to_schema(row), status_code=status_code, headers={"ETag": etag(row.version), **(headers or {})})


class ModelController(Controller):
    path = "/models"
    tags = ["models"]
    opt = {"scope": "models"}

    @post(
        "",
        operation_id="CreateModel",
        summary="Declare a model of a provider (editors of the provider)",
        status_code=201,
        responses={
            404: ResponseSpec(None, description="No provider with this id visible to you (`provider_not_found`)."),
            **_FORBIDDEN,
            409: ResponseSpec(None, description="Name taken (`model_name_taken`), or Idempotency-Key in flight."),
        },
        middleware=[idempotent(scope_of=caller_scope)],
    )
    async def create_model(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[ModelCreate],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[Model]:
        pricing = _pricing(data.pricing)
        model_id, now = new_id(), utcnow()
        async with services.db.write() as session:
            await prov.load(session, principal, data.provider_id, "update")
            try:
                async with session.begin_nested():
                    row = (
                        await session.execute(
                            insert(t)
                            .values(
                                id=model_id,
                                tenant_id=principal.tenant_id,
                                provider_id=data.provider_id,
                                name=data.name.strip() or data.name,
                                upstream_id=data.upstream_id,
                                kind=data.kind,
                                context_window=data.context_window,
                                max_output_tokens=data.max_output_tokens,
                                dimensions=data.dimensions,
                                pricing=pricing,
                                capabilities=msgspec.to_builtins(data.capabilities),
                                enabled=data.enabled,
                                version=1,
                                created_by=principal.user_id,
                                created_at=now,
                                updated_at=now,
                            )
                            .returning(t)
                        )
                    ).one()
            except IntegrityError:
                raise Conflict("Another model of your tenant has this name.", code=_NAME_TAKEN) from None
            meta = event_metadata(request, principal)
            created = ev.ModelCreated(
                model_id=model_id,
                provider_id=data.provider_id,
                name=row.name,
                upstream_id=row.upstream_id,
                kind=row.kind,
            )
            await record(PostgresEventStore(session), ev.model_stream(model_id), created, meta)
            await acl.add_owner(session, principal, "model", model_id, meta)
        return _with_etag(row, 201, {"Location": f"{request.url.path.rstrip('/')}/{model_id}"})

    @get("", operation_id="ListModels", summary="List the models you may use, newest first")
    async def list_models(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
        kind: KindFilter = None,
        provider_id: ProviderFilter = None,
    ) -> Response[ModelList]:
        query = (
            select(t)
            .where(t.c.tenant_id == principal.tenant_id, acl.visible_ids_clause(principal, "model", t.c.id))
            .order_by(t.c.id.desc())
            .limit(limit + 1)
        )
        if cursor is not None:
            query = query.where(t.c.id < decode_cursor(cursor, IdCursor).id)
        if kind is not None:
            query = query.where(t.c.kind == kind)
        if provider_id is not None:
            query = query.where(t.c.provider_id == provider_id)
        async with services.db.read() as session:
            rows = (await session.execute(query)).all()
        page, has_more, next_cursor = paginate(rows, limit, lambda r: IdCursor(r.id))
        body = ModelList(data=[to_schema(r) for r in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get("/{model_id:str}", operation_id="GetModel", summary="Get a model", responses=_NOT_FOUND)
    async def get_model(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], model_id: ModelId
    ) -> Response[Model]:
        async with services.db.read() as session:
            return _with_etag(await load_model(session, principal, model_id, "read"))

    @patch(
        "/{model_id:str}",
        operation_id="UpdateModel",
        summary="Change some fields of a model (editors)",
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION},
    )
    async def update_model(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        model_id: ModelId,
        data: JSONBody[ModelUpdate],
        if_match: IfMatchHeader = None,
    ) -> Response[Model]:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not UNSET}
        if "pricing" in changes:
            changes["pricing"] = _pricing(changes["pricing"])
        if "capabilities" in changes:
            changes["capabilities"] = msgspec.to_builtins(changes["capabilities"])
        async with services.db.write() as session:
            row = await load_model(session, principal, model_id, "update", lock=True)
            check_if_match(if_match, row.version)
            changed = sorted(k for k, v in changes.items() if getattr(row, k) != v)
            if not changed:
                return _with_etag(row)
            version = row.version + 1
            values = {k: changes[k] for k in changed}
            try:
                async with session.begin_nested():
                    row = (
                        await session.execute(
                            update(t)
                            .where(t.c.id == model_id)
                            .values(**values, version=version, updated_at=utcnow())
                            .returning(t)
                        )
                    ).one()
            except IntegrityError:
                raise Conflict("Another model of your tenant has this name.", code=_NAME_TAKEN) from None
            updated = ev.ModelUpdated(model_id=model_id, changed=changed, version=version)
            await record(
                PostgresEventStore(session), ev.model_stream(model_id), updated, event_metadata(request, principal)
            )
        return _with_etag(row)

    @delete(
        "/{model_id:str}",
        operation_id="DeleteModel",
        summary="Delete a model (owner)",
        status_code=204,
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION},
    )
    async def delete_model(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        model_id: ModelId,
        if_match: IfMatchHeader = None,
    ) -> None:
        async with services.db.write() as session:
            row = await load_model(session, principal, model_id, "delete", lock=True)
            check_if_match(if_match, row.version)
            await session.execute(sql_delete(t).where(t.c.id == model_id))
            await acl.remove_all(session, "model", model_id)
            deleted = ev.ModelDeleted(model_id=model_id, version=row.version)
            await record(
                PostgresEventStore(session), ev.model_stream(model_id), deleted, event_metadata(request, principal)
            )


ModelAclController = acl_controller(
    collection="models",
    id_param="model_id",
    entity_type="model",
    noun="model",
    operation_noun="Model",
    not_found=ModelNotFound,
    scope="models",
)
