"""Administration events: tenants (stream ``tenant-<id>``), invitations (``invitation-<id>``) and
changes an administrator makes to a user (``user-<id>``). They never carry an invitation token."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from domain.shared.events import Event, event_type


def tenant_stream(tenant_id: uuid.UUID) -> str:
    return f"tenant-{tenant_id}"


def invitation_stream(invitation_id: uuid.UUID) -> str:
    return f"invitation-{invitation_id}"


@event_type("identity.tenant_created.v1")
class TenantCreated(Event, frozen=True, kw_only=True):
    tenant_id: uuid.UUID
    slug: str
    name: str


@event_type("identity.tenant_settings_changed.v1")
class TenantSettingsChanged(Event, frozen=True, kw_only=True):
    """``registration_open`` None: the tenant follows the instance default again."""

    tenant_id: uuid.UUID
    registration_open: bool | None
    changed: list[str]


@event_type("identity.invitation_created.v1")
class InvitationCreated(Event, frozen=True, kw_only=True):
    invitation_id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    role: Literal["admin", "user"]
    expires_at: datetime


@event_type("identity.invitation_revoked.v1")
class InvitationRevoked(Event, frozen=True, kw_only=True):
    """``replaced``: a newer invitation to the same email superseded it."""

    invitation_id: uuid.UUID
    reason: Literal["revoked", "replaced"]


@event_type("identity.invitation_accepted.v1")
class InvitationAccepted(Event, frozen=True, kw_only=True):
    invitation_id: uuid.UUID
    user_id: uuid.UUID


@event_type("identity.user_updated.v1")
class UserUpdated(Event, frozen=True, kw_only=True):
    """An administrator changed a user; ``changed`` names the fields, the others hold new values."""

    user_id: uuid.UUID
    changed: list[str]
    role: Literal["admin", "user"]
    permissions: list[str]
    disabled: bool
    name: str | None
