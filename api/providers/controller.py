"""/api/v1/providers: a tenant's LLM provider connections, shared through the ACL (entity ``provider``).

Creating needs the ``manage_providers`` permission (admins hold it); the creator owns the provider.
Credentials are write-only and bound to the host they were saved for (``infra.llm.providers``); a
base URL must pass the outbound guard when saved and when used. Each change is one transaction with
its audit event (``provider-<id>``) naming the changed fields, never a secret.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from msgspec import UNSET
from sqlalchemy import delete as sql_delete
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from api.access.acl_routes import acl_controller
from api.context import event_metadata
from api.errors import ApiError
from api.etag import IfMatchHeader, check_if_match, etag
from api.idempotency import IdempotencyKeyHeader, idempotent
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.prompts.controller import caller_scope
from api.providers.schemas import (
    ProbeError,
    Provider,
    ProviderConfig,
    ProviderCreate,
    ProviderList,
    ProviderSettings,
    ProviderTestResult,
    ProviderUpdate,
)
from api.services import Services
from domain.llm import provider_events as ev
from domain.shared.clock import utcnow
from domain.shared.errors import Conflict
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.access import acl
from infra.db.tables.llm import models
from infra.db.tables.llm import providers as t
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import record
from infra.llm import providers as prov
from infra.llm.clients import Connection, probe
from infra.net.outbound import OutboundGuard
from infra.secrets.service import load_kek

ProviderId = Annotated[uuid.UUID, PathParameter(description="The provider's id (UUID).")]

_NOT_FOUND = {404: ResponseSpec(None, description="No provider with this id visible to you (`provider_not_found`).")}
_FORBIDDEN = {403: ResponseSpec(None, description="Your role or permissions do not allow this (`forbidden`).")}
_PRECONDITION = {412: ResponseSpec(None, description="If-Match does not name the current version.")}
_UNPROCESSABLE = {
    422: ResponseSpec(
        None,
        description="The base URL is blocked (`outbound_blocked`), or moves stored credentials to another host"
        " (`credentials_host_mismatch`), or a kind's required setting is missing.",
    )
}
_NAME_TAKEN = "provider_name_taken"


def base_guard(services: Services) -> OutboundGuard:
    return OutboundGuard(services.settings.llm.outbound_allow)


def to_schema(p: prov.Provider) -> Provider:
    info = p.secret_info
    fields = info.get("fields", [])
    return Provider(
        id=p.id,
        name=p.name,
        kind=p.kind,  # type: ignore[arg-type]
        base_url=p.base_url,
        config=msgspec.convert(p.settings, ProviderSettings),
        has_api_key="api_key" in fields,
        api_key_hint=info.get("api_key_hint"),
        header_names=list(info.get("header_names", [])),
        has_aws_secret_access_key="aws_secret_access_key" in fields,
        credential_host=p.credential_host if p.has_credentials else None,
        source=p.source,  # type: ignore[arg-type]
        enabled=p.enabled,
        version=p.version,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


def _split_config(config: ProviderConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(non-secret settings, secret fields present in the body)."""
    raw = msgspec.to_builtins(config)
    secrets = {k: raw.pop(k) for k in ("aws_secret_access_key", "aws_session_token") if k in raw}
    return raw, secrets


def _with_etag(p: prov.Provider, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[Provider]:
    return Response(to_schema(p), status_code=status_code, headers={"ETag": etag(p.version), **(headers or {})})


class ProviderController(Controller):
    path = "/providers"
    tags = ["providers"]
    opt = {"scope": "providers"}

    @post(
        "",
        operation_id="CreateProvider",
        summary="Create a provider connection (needs manage_providers)",
        status_code=201,
        middleware=[idempotent(scope_of=caller_scope)],
        responses={
            **_FORBIDDEN,
            **_UNPROCESSABLE,
            409: ResponseSpec(None, description="Name taken (`provider_name_taken`), or Idempotency-Key in flight."),
        },
    )
    async def create_provider(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[ProviderCreate],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[Provider]:
        if not principal.has("manage_providers"):
            raise ApiError(403, "forbidden", "Creating providers needs the manage_providers permission.")
        settings, aws = _split_config(data.config)
        prov.validate_shape(data.kind, data.base_url, settings)
        credentials: dict[str, Any] = {"api_key": data.api_key, "headers": data.headers, **aws}
        credentials = {k: v for k, v in credentials.items() if v}
        provider_id, now = new_id(), utcnow()
        async with services.db.write() as session:
            guard = await prov.guard_for(session, base_guard(services), principal.tenant_id)
            url = prov.effective_url(data.kind, data.base_url, settings)
            if data.base_url is not None and url is not None:
                await guard.check_url(url)
            token = await prov.encrypt(
                session, load_kek(services.settings), principal.tenant_id, provider_id, credentials
            )
            config = {**settings, "secret_info": prov.secret_info(credentials)}
            try:
                async with session.begin_nested():
                    row = (
                        await session.execute(
                            insert(t)
                            .values(
                                id=provider_id,
                                tenant_id=principal.tenant_id,
                                name=data.name.strip() or data.name,
                                kind=data.kind,
                                base_url=data.base_url,
                                config=config,
                                credentials=token,
                                credential_host=prov.credential_host_for(data.kind, data.base_url, settings),
                                source="api",
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
                raise Conflict("Another provider of your tenant has this name.", code=_NAME_TAKEN) from None
            meta = event_metadata(request, principal)
            created = ev.ProviderCreated(
                provider_id=provider_id,
                name=row.name,
                kind=row.kind,
                base_url=row.base_url,
                source="api",
                secrets=sorted(credentials),
            )
            await record(PostgresEventStore(session), ev.provider_stream(provider_id), created, meta)
            await acl.add_owner(session, principal, "provider", provider_id, meta)
        return _with_etag(prov.provider_of(row), 201, {"Location": f"{request.url.path.rstrip('/')}/{provider_id}"})

    @get("", operation_id="ListProviders", summary="List the providers you may use, newest first")
    async def list_providers(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
    ) -> Response[ProviderList]:
        query = select(t).where(prov.visible_clause(principal)).order_by(t.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(t.c.id < decode_cursor(cursor, IdCursor).id)
        async with services.db.read() as session:
            rows = (await session.execute(query)).all()
        page, has_more, next_cursor = paginate(rows, limit, lambda r: IdCursor(r.id))
        body = ProviderList(
            data=[to_schema(prov.provider_of(r)) for r in page], has_more=has_more, next_cursor=next_cursor
        )
        return page_response(body, request, limit, services.settings.http.public_url)

    @get("/{provider_id:str}", operation_id="GetProvider", summary="Get a provider", responses=_NOT_FOUND)
    async def get_provider(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], provider_id: ProviderId
    ) -> Response[Provider]:
        async with services.db.read() as session:
            return _with_etag(await prov.load(session, principal, provider_id, "read"))

    @patch(
        "/{provider_id:str}",
        operation_id="UpdateProvider",
        summary="Change some fields of a provider (editors)",
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION, **_UNPROCESSABLE},
    )
    async def update_provider(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        provider_id: ProviderId,
        data: JSONBody[ProviderUpdate],
        if_match: IfMatchHeader = None,
    ) -> Response[Provider]:
        async with services.db.write() as session:
            current = await prov.load(session, principal, provider_id, "update", lock=True)
            check_if_match(if_match, current.version)
            changed: list[str] = []
            values: dict[str, Any] = {}
            if data.name is not UNSET and data.name != current.name:
                values["name"], changed = data.name, [*changed, "name"]
            base_url = current.base_url if data.base_url is UNSET else data.base_url
            if base_url != current.base_url:
                values["base_url"], changed = base_url, [*changed, "base_url"]
            settings = current.settings
            sent_secrets: dict[str, Any] = {}
            if data.config is not UNSET:
                new_settings, sent_secrets = _split_config(data.config)
                if new_settings != settings:
                    settings, changed = new_settings, [*changed, "config"]
            if data.api_key is not UNSET:
                sent_secrets["api_key"] = data.api_key
            if data.headers is not UNSET:
                sent_secrets["headers"] = data.headers
            if data.enabled is not UNSET and data.enabled != current.enabled:
                values["enabled"], changed = data.enabled, [*changed, "enabled"]
            prov.validate_shape(current.kind, base_url, settings)
            new_host = prov.credential_host_for(current.kind, base_url, settings)
            stored_fields = list(current.secret_info.get("fields", []))
            prov.check_host_binding(
                current.credential_host if current.has_credentials else None,
                new_host,
                stored_fields,
                set(sent_secrets),
            )
            if "base_url" in values and base_url is not None:
                guard = await prov.guard_for(session, base_guard(services), principal.tenant_id)
                await guard.check_url(base_url)
            info = current.secret_info
            if sent_secrets:
                kek = load_kek(services.settings)
                credentials = await prov.decrypt(session, kek, current)
                credentials.update(sent_secrets)
                credentials = {k: v for k, v in credentials.items() if v}
                values["credentials"] = await prov.encrypt(session, kek, current.tenant_id, provider_id, credentials)
                info = prov.secret_info(credentials)
                changed += sorted(f for f in sent_secrets if f not in changed)
            if new_host != current.credential_host:
                values["credential_host"] = new_host
            if not changed:
                return _with_etag(current)
            version = current.version + 1
            values.update(config={**settings, "secret_info": info}, version=version, updated_at=utcnow())
            try:
                async with session.begin_nested():
                    row = (
                        await session.execute(update(t).where(t.c.id == provider_id).values(**values).returning(t))
                    ).one()
            except IntegrityError:
                raise Conflict("Another provider of your tenant has this name.", code=_NAME_TAKEN) from None
            updated = ev.ProviderUpdated(provider_id=provider_id, changed=changed, version=version)
            await record(
                PostgresEventStore(session),
                ev.provider_stream(provider_id),
                updated,
                event_metadata(request, principal),
            )
        return _with_etag(prov.provider_of(row))

    @delete(
        "/{provider_id:str}",
        operation_id="DeleteProvider",
        summary="Delete a provider and its models (owner)",
        status_code=204,
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION},
    )
    async def delete_provider(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        provider_id: ProviderId,
        if_match: IfMatchHeader = None,
    ) -> None:
        async with services.db.write() as session:
            current = await prov.load(session, principal, provider_id, "delete", lock=True)
            check_if_match(if_match, current.version)
            model_ids = (await session.scalars(select(models.c.id).where(models.c.provider_id == provider_id))).all()
            for model_id in model_ids:  # the model rows cascade; their grants and audit trail follow here
                await acl.remove_all(session, "model", model_id)
                gone = ev.ModelDeleted(model_id=model_id, version=0)
                await record(
                    PostgresEventStore(session), ev.model_stream(model_id), gone, event_metadata(request, principal)
                )
            await session.execute(sql_delete(t).where(t.c.id == provider_id))
            await acl.remove_all(session, "provider", provider_id)
            deleted = ev.ProviderDeleted(provider_id=provider_id, version=current.version)
            await record(
                PostgresEventStore(session),
                ev.provider_stream(provider_id),
                deleted,
                event_metadata(request, principal),
            )

    @post(
        "/{provider_id:str}/test",
        operation_id="TestProvider",
        summary="Check a provider's reachability and credentials, listing its models where it can",
        status_code=200,
        responses={**_NOT_FOUND, **_UNPROCESSABLE},
    )
    async def test_provider(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], provider_id: ProviderId
    ) -> ProviderTestResult:
        """Editors of the provider (and, for providers from the environment, holders of
        ``manage_providers``) may test it. Upstream failures (bad key, unreachable host) are a result
        with ``ok: false``; only a blocked destination is an error (422 ``outbound_blocked``)."""
        async with services.db.read() as session:
            provider = await prov.load(session, principal, provider_id, "read")
            if not (provider.source == "env" and principal.has("manage_providers")):
                provider = await prov.load(session, principal, provider_id, "update")
            credentials = await prov.decrypt(session, load_kek(services.settings), provider)
            guard = await prov.guard_for(session, base_guard(services), principal.tenant_id)
        result = await probe(Connection(provider, credentials, guard))
        error = ProbeError(kind=result.error_kind, message=result.error_message or "") if result.error_kind else None
        return ProviderTestResult(ok=result.ok, latency_ms=result.latency_ms, models=result.models, error=error)


ProviderAclController = acl_controller(
    collection="providers",
    id_param="provider_id",
    entity_type="provider",
    noun="provider",
    operation_noun="Provider",
    not_found=prov.ProviderNotFound,
    scope="providers",
)
