"""Request and response bodies of /api/v1/invitations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from api.pagination import Page

InvitationStatus = Literal["pending", "accepted", "revoked", "expired"]


class Invitation(msgspec.Struct, kw_only=True):
    """An invitation for one email address into the caller's tenant (its token is never shown again)."""

    id: uuid.UUID
    object: Literal["invitation"] = "invitation"
    tenant_id: uuid.UUID
    email: str
    role: Literal["admin", "user"]
    status: InvitationStatus
    created_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    accepted_by: uuid.UUID | None
    revoked_at: datetime | None


class CreatedInvitation(Invitation, kw_only=True):
    """A new invitation with its token: the only time the token is shown. Send it to the invitee,
    who registers with ``invitation_token``."""

    token: str


class InvitationCreate(msgspec.Struct, kw_only=True):
    """Invite ``email``; a pending invitation to the same email is revoked and replaced."""

    email: Annotated[str, Meta(min_length=3, max_length=254, description="Only this address may accept.")]
    role: Literal["admin", "user"] = "user"
    """The role the new account gets; only admins invite admins."""


class InvitationList(Page[Invitation], kw_only=True):
    """A page of the tenant's invitations, newest first."""

    data: list[Invitation]
