"""/api/v1/admin/users, /api/v1/admin/settings and /api/v1/admin/tenants.

Users: holders of ``manage_users`` list and disable/enable users of their tenant; admins also
change roles and permissions. Users of other tenants answer like missing ones (``user_not_found``).
Settings: a tenant's admins open or close registration. Tenants: admins of the instance (the
default tenant) create tenants, each with an admin invitation; everyone else gets 403 on the whole
collection, whatever the id.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET

from api.admin.schemas import (
    AdminUser,
    AdminUserList,
    AdminUserUpdate,
    CreatedTenant,
    Tenant,
    TenantCreate,
    TenantList,
    TenantSettings,
    TenantSettingsUpdate,
)
from api.context import event_metadata, mark_unchanged
from api.errors import ApiError
from api.invitations.controller import created_schema, require_manage_users
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.services import Services
from domain.shared.principal import Principal
from infra.identity import tenancy
from infra.llm import tenant_settings as llm_settings

UserId = Annotated[uuid.UUID, PathParameter(description="The user's id (UUID).")]
TenantId = Annotated[uuid.UUID, PathParameter(description="The tenant's id (UUID).")]
SearchFilter = Annotated[
    str | None,
    QueryParameter(name="q", description="Only users whose email or name starts with this.", max_length=200),
]
DisabledFilter = Annotated[
    bool | None, QueryParameter(name="disabled", description="Only disabled (true) or enabled (false) users.")
]

_FORBIDDEN_USERS = {403: ResponseSpec(None, description="You do not hold `manage_users` (`forbidden`).")}
_USER_404 = {404: ResponseSpec(None, description="No user with this id in your tenant (`user_not_found`).")}
_FORBIDDEN_ADMIN = {403: ResponseSpec(None, description="You are not an admin of this tenant (`forbidden`).")}
_FORBIDDEN_INSTANCE = {403: ResponseSpec(None, description="You are not an admin of the instance (`forbidden`).")}


def _user(u: tenancy.ManagedUser) -> AdminUser:
    return AdminUser(
        id=u.id,
        tenant_id=u.tenant_id,
        email=u.email,
        name=u.name,
        role=u.role,
        permissions=u.permissions,
        disabled=u.disabled_at is not None,
        disabled_at=u.disabled_at,
        created_at=u.created_at,
        updated_at=u.updated_at,
    )


def _tenant(t: tenancy.Tenant, default: bool) -> Tenant:
    return Tenant(
        id=t.id,
        slug=t.slug,
        name=t.name,
        registration_open=default if t.registration_open is None else t.registration_open,
        registration_open_source="default" if t.registration_open is None else "admin",
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


def _settings(t: tenancy.Tenant, default: bool, llm: llm_settings.LlmSettings | None = None) -> TenantSettings:
    llm = llm or llm_settings.LlmSettings()
    return TenantSettings(
        registration_open=default if t.registration_open is None else t.registration_open,
        registration_open_source="default" if t.registration_open is None else "admin",
        default_chat_model_id=llm.default_chat_model_id,
        default_embedding_model_id=llm.default_embedding_model_id,
        outbound_allow=list(llm.outbound_allow),
    )


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "Only admins of this tenant change its settings.")


def _require_instance_admin(principal: Principal) -> None:
    if not principal.instance_admin:
        raise ApiError(403, "forbidden", "Only admins of the instance manage tenants.")


class AdminUserController(Controller):
    path = "/admin/users"
    tags = ["admin"]
    opt = {"scope": "users"}

    @get("", operation_id="ListUsers", summary="List your tenant's users, newest first", responses=_FORBIDDEN_USERS)
    async def list_users(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
        q: SearchFilter = None,
        disabled: DisabledFilter = None,
    ) -> Response[AdminUserList]:
        require_manage_users(principal)
        before = decode_cursor(cursor, IdCursor).id if cursor is not None else None
        async with services.db.read() as session:
            rows = await tenancy.list_users(
                session, principal.tenant_id, limit=limit + 1, before=before, q=q, disabled=disabled
            )
        page, has_more, next_cursor = paginate(rows, limit, lambda u: IdCursor(u.id))
        body = AdminUserList(data=[_user(u) for u in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get(
        "/{user_id:str}",
        operation_id="GetUser",
        summary="Get a user of your tenant",
        responses={**_FORBIDDEN_USERS, **_USER_404},
    )
    async def get_user(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], user_id: UserId
    ) -> AdminUser:
        require_manage_users(principal)
        async with services.db.read() as session:
            return _user(await tenancy.get_user(session, principal.tenant_id, user_id))

    @patch(
        "/{user_id:str}",
        operation_id="UpdateUser",
        summary="Change a user's role, permissions, name, or disable them",
        responses={
            **_FORBIDDEN_USERS,
            **_USER_404,
            409: ResponseSpec(
                None,
                description="The change would leave no active admin (`last_admin`), "
                "or disables yourself (`cannot_disable_self`).",
            ),
        },
    )
    async def update_user(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        user_id: UserId,
        data: JSONBody[AdminUserUpdate],
    ) -> AdminUser:
        require_manage_users(principal)
        changes = tenancy.UserChanges(
            role=None if data.role is UNSET else data.role,
            disabled=None if data.disabled is UNSET else data.disabled,
            permissions=None if data.permissions is UNSET else list(data.permissions),
            set_name=data.name is not UNSET,
            name=None if data.name is UNSET else data.name,
        )
        async with services.db.write() as session:
            updated = await tenancy.update_user(
                session, principal, user_id, changes, event_metadata(request, principal)
            )
        return _user(updated)


class AdminSettingsController(Controller):
    path = "/admin/settings"
    tags = ["admin"]
    opt = {"scope": "settings"}

    @get("", operation_id="GetTenantSettings", summary="Your tenant's settings", responses=_FORBIDDEN_ADMIN)
    async def get_settings(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal]
    ) -> TenantSettings:
        _require_admin(principal)
        async with services.db.read() as session:
            tenant = await tenancy.get_tenant(session, principal.tenant_id)
            llm = await llm_settings.get(session, principal.tenant_id)
        return _settings(tenant, services.settings.registration_open, llm)

    @patch(
        "",
        operation_id="UpdateTenantSettings",
        summary="Change your tenant's settings (registration, default models, outbound allow-list)",
        responses={
            **_FORBIDDEN_ADMIN,
            422: ResponseSpec(
                None,
                description="A default names no model of that kind in your tenant (`invalid_default_model`), or"
                " an allow-list entry is neither a host nor a CIDR (`invalid_outbound_allow`).",
            ),
        },
    )
    async def update_settings(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[TenantSettingsUpdate],
    ) -> TenantSettings:
        _require_admin(principal)
        async with services.db.write() as session:
            if data.registration_open is UNSET:
                tenant = await tenancy.get_tenant(session, principal.tenant_id)
            else:
                tenant = await tenancy.set_registration_open(
                    session, principal.tenant_id, data.registration_open, event_metadata(request, principal)
                )
            llm_changes = {
                k: getattr(data, k)
                for k in ("default_chat_model_id", "default_embedding_model_id", "outbound_allow")
                if getattr(data, k) is not UNSET
            }
            llm = await llm_settings.update(
                session, principal.tenant_id, event_metadata(request, principal), **llm_changes
            )
        if data.registration_open is UNSET and not llm_changes:
            mark_unchanged(request)  # an empty patch
        return _settings(tenant, services.settings.registration_open, llm)


class AdminTenantController(Controller):
    path = "/admin/tenants"
    tags = ["admin"]
    opt = {"scope": "tenants"}

    @post(
        "",
        operation_id="CreateTenant",
        summary="Create a tenant and invite its admin (the invitation token is shown once)",
        status_code=201,
        responses={
            **_FORBIDDEN_INSTANCE,
            409: ResponseSpec(None, description="The slug is taken (`tenant_slug_taken`)."),
        },
    )
    async def create_tenant(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[TenantCreate],
    ) -> CreatedTenant:
        _require_instance_admin(principal)
        async with services.db.write() as session:
            tenant, invitation = await tenancy.create_tenant(
                session, data.slug, data.name.strip() or data.name, data.admin_email, event_metadata(request, principal)
            )
        return CreatedTenant(
            tenant=_tenant(tenant, services.settings.registration_open), invitation=created_schema(invitation)
        )

    @get("", operation_id="ListTenants", summary="List tenants, newest first", responses=_FORBIDDEN_INSTANCE)
    async def list_tenants(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
    ) -> Response[TenantList]:
        _require_instance_admin(principal)
        before = decode_cursor(cursor, IdCursor).id if cursor is not None else None
        async with services.db.read() as session:
            rows = await tenancy.list_tenants(session, limit=limit + 1, before=before)
        page, has_more, next_cursor = paginate(rows, limit, lambda t: IdCursor(t.id))
        default = services.settings.registration_open
        body = TenantList(data=[_tenant(t, default) for t in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get(
        "/{tenant_id:str}",
        operation_id="GetTenant",
        summary="Get a tenant",
        responses={
            **_FORBIDDEN_INSTANCE,
            404: ResponseSpec(None, description="No tenant with this id (`tenant_not_found`)."),
        },
    )
    async def get_tenant(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], tenant_id: TenantId
    ) -> Tenant:
        _require_instance_admin(principal)
        async with services.db.read() as session:
            tenant = await tenancy.get_tenant(session, tenant_id)
        return _tenant(tenant, services.settings.registration_open)
