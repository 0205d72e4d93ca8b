"""Who is calling: the one shape every credential (access token, API key) resolves to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

InstanceRole = Literal["admin", "user"]


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    role: InstanceRole
    session_id: uuid.UUID | None = None
    scopes: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        """How events name this caller in their metadata."""
        return f"user:{self.user_id}"
