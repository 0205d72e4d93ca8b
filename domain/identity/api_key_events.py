"""API key events, appended to the owner's audit stream (``user-<id>``). They name the key by id,
name and public prefix only: never the key or its hash."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from domain.shared.events import Event, event_type


@event_type("identity.api_key_created.v1")
class ApiKeyCreated(Event, frozen=True, kw_only=True):
    api_key_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None


@event_type("identity.api_key_revoked.v1")
class ApiKeyRevoked(Event, frozen=True, kw_only=True):
    api_key_id: uuid.UUID
    user_id: uuid.UUID
    reason: Literal["revoked_by_owner"]
