"""Request and response bodies of /api/v1/admin/*."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from api.invitations.schemas import CreatedInvitation
from api.pagination import Page
from domain.shared.principal import Permission

Slug = Annotated[
    str,
    Meta(min_length=2, max_length=63, pattern=r"^[a-z0-9-]{2,63}$", description="Lowercase letters, digits, dashes."),
]
TenantName = Annotated[str, Meta(min_length=1, max_length=200)]
UserName = Annotated[str, Meta(min_length=1, max_length=200)]


class AdminUser(msgspec.Struct, kw_only=True):
    """A user of the caller's tenant, as administrators see it."""

    id: uuid.UUID
    object: Literal["user"] = "user"
    tenant_id: uuid.UUID
    email: str
    name: str | None
    role: Literal["admin", "user"]
    permissions: list[str]
    """System permissions granted on top of the role (admins hold all of them anyway)."""
    disabled: bool
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class AdminUserUpdate(msgspec.Struct, kw_only=True):
    """Only the fields present change. Roles and permissions are for admins; users holding
    ``manage_users`` may disable and enable (and rename) non-admin users."""

    role: Literal["admin", "user"] | UnsetType = UNSET
    disabled: bool | UnsetType = UNSET
    """True signs the user out everywhere and stops their API keys; false enables them again."""
    permissions: Annotated[list[Permission], Meta(max_length=20)] | UnsetType = UNSET
    """The full set of system permissions (replaces the current one)."""
    name: UserName | UnsetType | None = UNSET


class AdminUserList(Page[AdminUser], kw_only=True):
    """A page of the tenant's users, newest first."""

    data: list[AdminUser]


class TenantSettings(msgspec.Struct, kw_only=True):
    object: Literal["tenant_settings"] = "tenant_settings"
    registration_open: bool
    """Whether anyone may sign up without an invitation (the effective value)."""
    registration_open_source: Literal["default", "admin"]
    """``default``: follows LITESKILL_REGISTRATION_OPEN; ``admin``: an admin's choice."""
    default_chat_model_id: uuid.UUID | None = None
    default_embedding_model_id: uuid.UUID | None = None
    outbound_allow: list[str] = msgspec.field(default_factory=list)
    """Hosts or CIDRs server-side requests may reach although private (on top of LITESKILL_OUTBOUND_ALLOW)."""


AllowEntry = Annotated[str, Meta(min_length=1, max_length=253)]


class TenantSettingsUpdate(msgspec.Struct, kw_only=True):
    registration_open: bool | UnsetType | None = UNSET
    """True opens, false closes registration; null follows the instance default again."""
    default_chat_model_id: uuid.UUID | UnsetType | None = UNSET
    """A chat model of your tenant; null clears."""
    default_embedding_model_id: uuid.UUID | UnsetType | None = UNSET
    """An embedding model of your tenant; null clears."""
    outbound_allow: Annotated[list[AllowEntry], Meta(max_length=100)] | UnsetType = UNSET


class Tenant(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["tenant"] = "tenant"
    slug: str
    """What users name at sign-in (``tenant`` in login and register)."""
    name: str
    registration_open: bool
    registration_open_source: Literal["default", "admin"]
    created_at: datetime
    updated_at: datetime


class TenantCreate(msgspec.Struct, kw_only=True):
    slug: Slug
    name: TenantName
    admin_email: Annotated[str, Meta(min_length=3, max_length=254, description="Who is invited as its admin.")]


class CreatedTenant(msgspec.Struct, kw_only=True):
    """The new tenant and the admin invitation into it (its token is shown only here)."""

    object: Literal["tenant_created"] = "tenant_created"
    tenant: Tenant
    invitation: CreatedInvitation


class TenantList(Page[Tenant], kw_only=True):
    """A page of tenants, newest first."""

    data: list[Tenant]
