"""/api/v1/admin/oidc-providers: a tenant's OpenID Connect providers, managed by its admins.

Another tenant's provider is a 404 (``oidc_provider_not_found``); a non-admin gets 403. The client
secret is write-only (``has_client_secret`` shows whether one is set). Creating a provider, or
changing its issuer, fetches the issuer's discovery document first (422 ``oidc_discovery_failed``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from msgspec import Meta

from api.auth.oidc import callback_url
from api.context import event_metadata
from api.errors import ApiError
from api.pagination import CursorParam, IdCursor, LimitParam, Page, decode_cursor, page_response, paginate
from api.problem import FieldError
from api.services import Services
from domain.shared.principal import Principal
from infra.identity import oidc
from infra.identity import oidc_providers as providers
from infra.secrets.service import load_kek

log = logging.getLogger(__name__)


DEFAULT_SCOPES = ["openid", "email", "profile"]

Slug = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$",
        description="Lowercase letters, digits and dashes; names the provider in sign-in URLs. Unique.",
    ),
]
Name = Annotated[str, Meta(min_length=1, max_length=100)]
Issuer = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=500,
        description="The issuer URL, exactly as in the ID tokens' `iss` (https; http only for localhost).",
    ),
]
ClientId = Annotated[str, Meta(min_length=1, max_length=500)]
ClientSecret = Annotated[str, Meta(min_length=1, max_length=2000, description="Write-only.")]
Scope = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")]
Scopes = Annotated[list[Scope], Meta(min_length=1, max_length=20, description="Must include `openid`.")]
ProviderId = Annotated[uuid.UUID, PathParameter(description="The OIDC provider's id (UUID).")]

_NOT_FOUND = {404: ResponseSpec(None, description="No OIDC provider with this id in your tenant.")}
_FORBIDDEN = {403: ResponseSpec(None, description="Only the tenant's admins manage OIDC providers (`forbidden`).")}


class OidcProviderCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    slug: Slug
    name: Name
    issuer: Issuer
    client_id: ClientId
    client_secret: ClientSecret | None = None
    scopes: Scopes | None = None
    enabled: bool = True


class OidcProviderUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; ``client_secret: null`` removes the secret (a public client)."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    issuer: Issuer | msgspec.UnsetType = msgspec.UNSET
    client_id: ClientId | msgspec.UnsetType = msgspec.UNSET
    client_secret: ClientSecret | msgspec.UnsetType | None = msgspec.UNSET
    scopes: Scopes | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class OidcProvider(msgspec.Struct, kw_only=True):
    """An OpenID provider users of the tenant sign in with. The client secret is never shown."""

    id: uuid.UUID
    object: Literal["oidc_provider"] = "oidc_provider"
    slug: str
    name: str
    issuer: str
    client_id: str
    has_client_secret: bool
    scopes: list[str]
    enabled: bool
    redirect_uri: str
    """The callback URL to register at the provider."""
    created_at: datetime
    updated_at: datetime


class OidcProviderList(Page[OidcProvider], kw_only=True):
    data: list[OidcProvider]


def _invalid(pointer: str, detail: str) -> ApiError:
    return ApiError(
        400,
        "validation_error",
        "The request is not valid.",
        errors=[FieldError(detail=detail, code="invalid", pointer=pointer)],
    )


def _to_schema(p: providers.OidcProvider, request: Request[Any, Any, Any], services: Services) -> OidcProvider:
    return OidcProvider(
        id=p.id,
        slug=p.slug,
        name=p.name,
        issuer=p.issuer,
        client_id=p.client_id,
        has_client_secret=p.has_client_secret,
        scopes=p.scopes,
        enabled=p.enabled,
        redirect_uri=callback_url(request, services, p.slug),
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "Only an admin of this organisation manages OIDC providers.")


def _check_issuer(issuer: str, services: Services) -> None:
    parts = urlsplit(issuer)
    # Plain http to localhost serves development IdPs; in production it would only let a tenant
    # admin make the server probe its own loopback services.
    local_ok = services.settings.env != "production"
    if (
        not oidc.is_acceptable_url(issuer)
        or (parts.scheme == "http" and not local_ok)
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise _invalid(
            "/issuer", "The issuer must be an https URL (http only for localhost) without query or fragment."
        )


def _check_scopes(scopes: list[str]) -> list[str]:
    unique = list(dict.fromkeys(scopes))
    if "openid" not in unique:
        raise _invalid("/scopes", "The scopes must include openid.")
    return unique


async def _check_discovery(services: Services, issuer: str) -> None:
    try:
        await services.oidc.discover(issuer, fresh=True)
    except oidc.OidcError as exc:
        log.warning("oidc discovery failed", extra={"issuer": issuer, "reason": exc.reason})
        raise ApiError(
            422,
            "oidc_discovery_failed",
            "The issuer's discovery document (/.well-known/openid-configuration) could not be fetched or is not valid.",
        ) from None


class OidcProviderController(Controller):
    path = "/admin/oidc-providers"
    tags = ["admin"]
    opt = {"scope": "oidc_providers"}

    @post(
        "",
        operation_id="CreateOidcProvider",
        summary="Add an OpenID Connect provider to the tenant (admins)",
        status_code=201,
        response_headers=[ResponseHeader(name="Location", description="The provider's URL.", documentation_only=True)],
        responses={
            **_FORBIDDEN,
            409: ResponseSpec(None, description="The slug is taken (`oidc_provider_slug_taken`)."),
            422: ResponseSpec(None, description="The issuer's discovery failed (`oidc_discovery_failed`)."),
        },
    )
    async def create_oidc_provider(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[OidcProviderCreate],
    ) -> Response[OidcProvider]:
        _require_admin(principal)
        name = data.name.strip()
        if not name:
            raise _invalid("/name", "The name must not be blank.")
        _check_issuer(data.issuer, services)
        scopes = _check_scopes(data.scopes if data.scopes is not None else DEFAULT_SCOPES)
        await _check_discovery(services, data.issuer)
        async with services.db.write() as session:
            created = await providers.create(
                session,
                load_kek(services.settings),
                tenant_id=principal.tenant_id,
                created_by=principal.user_id,
                slug=data.slug,
                name=name,
                issuer=data.issuer,
                client_id=data.client_id,
                client_secret=data.client_secret,
                scopes=scopes,
                enabled=data.enabled,
                meta=event_metadata(request, principal),
            )
        location = f"{request.url.path.rstrip('/')}/{created.id}"
        return Response(_to_schema(created, request, services), status_code=201, headers={"Location": location})

    @get("", operation_id="ListOidcProviders", summary="List the tenant's OpenID Connect providers (admins)")
    async def list_oidc_providers(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
    ) -> Response[OidcProviderList]:
        _require_admin(principal)
        before = decode_cursor(cursor, IdCursor).id if cursor is not None else None
        async with services.db.read() as session:
            rows = await providers.list_providers(session, principal.tenant_id, limit=limit + 1, before=before)
        page, has_more, next_cursor = paginate(rows, limit, lambda p: IdCursor(p.id))
        body = OidcProviderList(
            data=[_to_schema(p, request, services) for p in page], has_more=has_more, next_cursor=next_cursor
        )
        return page_response(body, request, limit, services.settings.http.public_url)

    @get(
        "/{provider_id:str}",
        operation_id="GetOidcProvider",
        summary="One of the tenant's OpenID Connect providers (admins)",
        responses={**_FORBIDDEN, **_NOT_FOUND},
    )
    async def get_oidc_provider(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        provider_id: ProviderId,
    ) -> OidcProvider:
        _require_admin(principal)
        async with services.db.read() as session:
            found = await providers.get(session, principal.tenant_id, provider_id)
        return _to_schema(found, request, services)

    @patch(
        "/{provider_id:str}",
        operation_id="UpdateOidcProvider",
        summary="Change an OpenID Connect provider (admins)",
        responses={**_FORBIDDEN, **_NOT_FOUND, 422: ResponseSpec(None, description="`oidc_discovery_failed`.")},
    )
    async def update_oidc_provider(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        provider_id: ProviderId,
        data: JSONBody[OidcProviderUpdate],
    ) -> OidcProvider:
        _require_admin(principal)
        changes: dict[str, Any] = {}
        if not isinstance(data.name, msgspec.UnsetType):
            if not data.name.strip():
                raise _invalid("/name", "The name must not be blank.")
            changes["name"] = data.name.strip()
        if not isinstance(data.issuer, msgspec.UnsetType):
            _check_issuer(data.issuer, services)
            changes["issuer"] = data.issuer
        if not isinstance(data.client_id, msgspec.UnsetType):
            changes["client_id"] = data.client_id
        if not isinstance(data.scopes, msgspec.UnsetType):
            changes["scopes"] = _check_scopes(data.scopes)
        if not isinstance(data.enabled, msgspec.UnsetType):
            changes["enabled"] = data.enabled
        async with services.db.read() as session:
            current = await providers.get(session, principal.tenant_id, provider_id)  # 404 before any fetch
        if "issuer" in changes and changes["issuer"] != current.issuer:
            await _check_discovery(services, changes["issuer"])
        async with services.db.write() as session:
            updated = await providers.update_provider(
                session,
                load_kek(services.settings),
                principal.tenant_id,
                provider_id,
                changes,
                data.client_secret,
                event_metadata(request, principal),
            )
        return _to_schema(updated, request, services)

    @delete(
        "/{provider_id:str}",
        operation_id="DeleteOidcProvider",
        summary="Remove an OpenID Connect provider and the identities linked through it (admins)",
        status_code=204,
        responses={**_FORBIDDEN, **_NOT_FOUND},
    )
    async def delete_oidc_provider(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        provider_id: ProviderId,
    ) -> None:
        _require_admin(principal)
        async with services.db.write() as session:
            await providers.delete_provider(
                session, principal.tenant_id, provider_id, event_metadata(request, principal)
            )
