"""Bodies of /api/v1/auth/* and /api/v1/me."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from api.pagination import Page

Email = Annotated[str, Meta(min_length=3, max_length=254, description="Case-insensitive.")]
Password = Annotated[str, Meta(min_length=1, max_length=1024, description="12 to 128 characters.")]
TenantSlug = Annotated[
    str,
    Meta(
        min_length=1, max_length=63, description='The tenant\'s slug; leave it out for the default tenant ("default").'
    ),
]


class RegisterRequest(msgspec.Struct, kw_only=True):
    email: Email
    password: Password
    name: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    tenant: TenantSlug | None = None
    """The tenant to join while its registration is open; ignored with an invitation."""
    invitation_token: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    """An invitation (``lsi_...``): joins its tenant with its role, even when registration is closed."""


class LoginRequest(msgspec.Struct, kw_only=True):
    email: Email
    password: Password
    tenant: TenantSlug | None = None


class RefreshRequest(msgspec.Struct, kw_only=True):
    refresh_token: Annotated[str, Meta(min_length=1, max_length=200)]


class User(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["user"] = "user"
    email: str
    name: str | None
    role: Literal["admin", "user"]
    tenant_id: uuid.UUID
    created_at: datetime


class TokenResponse(msgspec.Struct, kw_only=True):
    user: User
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int
    """Seconds until the access token expires."""


class Me(msgspec.Struct, kw_only=True):
    user: User
    tenant_id: uuid.UUID
    roles: list[str]
    session_id: uuid.UUID | None


class Session(msgspec.Struct, kw_only=True):
    """A signed-in session (one refresh-token family)."""

    id: uuid.UUID
    object: Literal["session"] = "session"
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool
    """True for the session behind the token of this request."""


class SessionList(Page[Session]):
    data: list[Session]
