"""Who is calling: the one shape every credential (access token, API key) resolves to, and the
system permissions the instance role and per-user grants give."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal, get_args

InstanceRole = Literal["admin", "user"]
Permission = Literal["manage_users", "manage_providers", "manage_mcp_stdio", "view_audit"]
PERMISSIONS: tuple[Permission, ...] = get_args(Permission)


def is_permission(value: str) -> bool:
    return value in PERMISSIONS


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    role: InstanceRole
    session_id: uuid.UUID | None = None
    scopes: tuple[str, ...] = ()
    """An API key's scopes; empty for a signed-in session (no narrowing)."""
    permissions: frozenset[str] = frozenset()
    """System permissions granted to this user on top of the role."""
    instance_admin: bool = False
    """An admin of the instance's root (default) tenant: may create and manage tenants."""
    api_key_id: uuid.UUID | None = None
    """The API key the caller presented, if it was one (usage and audit name it)."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        """How events name this caller in their metadata."""
        return f"user:{self.user_id}"

    def has(self, permission: Permission) -> bool:
        """Admins hold every system permission in their tenant; users hold what was granted."""
        return self.is_admin or permission in self.permissions
