"""Identity events: the audit trail of accounts and sessions (streams ``user-<id>``)."""

from __future__ import annotations

import uuid
from typing import Literal

from domain.shared.events import Event, event_type


@event_type("identity.user_registered.v1")
class UserRegistered(Event, frozen=True, kw_only=True):
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    role: Literal["admin", "user"]


@event_type("identity.session_started.v1")
class SessionStarted(Event, frozen=True, kw_only=True):
    session_id: uuid.UUID
    user_id: uuid.UUID
    method: Literal["password", "registration", "oidc"]


@event_type("identity.login_failed.v1")
class LoginFailed(Event, frozen=True, kw_only=True):
    email: str
    reason: Literal["unknown_account", "wrong_password", "disabled"]


@event_type("identity.session_revoked.v1")
class SessionRevoked(Event, frozen=True, kw_only=True):
    session_id: uuid.UUID
    user_id: uuid.UUID
    reason: Literal["logout", "refresh_token_reused", "expired", "revoked", "disabled", "password_changed"]


@event_type("identity.password_changed.v1")
class PasswordChanged(Event, frozen=True, kw_only=True):
    """The user changed their password (never the password or its hash); ``revoked_sessions``
    counts their other sessions signed out with it."""

    user_id: uuid.UUID
    session_id: uuid.UUID | None
    revoked_sessions: int
