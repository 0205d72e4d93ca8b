"""Audit events of sharing: ACL grants and group membership (streams ``acl-<type>-<id>``, ``group-<id>``)."""

from __future__ import annotations

import uuid

from domain.shared.events import Event, event_type


def acl_stream(entity_type: str, entity_id: uuid.UUID) -> str:
    return f"acl-{entity_type}-{entity_id}"


def group_stream(group_id: uuid.UUID) -> str:
    return f"group-{group_id}"


@event_type("access.grant_changed.v1")
class GrantChanged(Event, frozen=True, kw_only=True):
    """A grant was created, changed or revoked: ``role`` is None after a revoke, ``previous_role`` before a create."""

    entity_type: str
    entity_id: uuid.UUID
    grant_id: uuid.UUID
    grantee_type: str
    grantee_id: uuid.UUID
    role: str | None
    previous_role: str | None


@event_type("access.ownership_transferred.v1")
class OwnershipTransferred(Event, frozen=True, kw_only=True):
    """The owner handed the entity to another user and became a manager of it (the grant changes
    are recorded beside this event as ``GrantChanged``)."""

    entity_type: str
    entity_id: uuid.UUID
    from_user_id: uuid.UUID
    to_user_id: uuid.UUID


@event_type("access.group_created.v1")
class GroupCreated(Event, frozen=True, kw_only=True):
    group_id: uuid.UUID
    name: str


@event_type("access.group_member_changed.v1")
class GroupMemberChanged(Event, frozen=True, kw_only=True):
    """A member was added or had their role changed (``role``), or was removed (``role`` None)."""

    group_id: uuid.UUID
    user_id: uuid.UUID
    role: str | None
