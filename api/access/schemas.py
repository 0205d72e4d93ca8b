"""Request and response bodies of the ACL and group routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from api.pagination import Page

GrantRole = Literal["manager", "editor", "viewer"]
GroupName = Annotated[str, Meta(min_length=1, max_length=200, description="The group's display name.")]


class AclGrant(msgspec.Struct, kw_only=True):
    """One grant of a role on an entity to a user or a group."""

    id: uuid.UUID
    object: Literal["acl_grant"] = "acl_grant"
    entity_type: str
    entity_id: uuid.UUID
    grantee_type: Literal["user", "group"]
    grantee_id: uuid.UUID
    role: Literal["owner", "manager", "editor", "viewer"]
    created_at: datetime


class AclGrantCreate(msgspec.Struct, kw_only=True):
    """Grant ``role`` to a user or group of your tenant; granting again changes the role.
    Ownership is not granted here (owners transfer it)."""

    grantee_type: Literal["user", "group"]
    grantee_id: uuid.UUID
    role: GrantRole


class OwnershipTransfer(msgspec.Struct, kw_only=True):
    """Hand the entity to another active user of your tenant; you become a manager of it."""

    user_id: uuid.UUID


class AclGrantList(msgspec.Struct, kw_only=True):
    """Every grant on the entity (an ACL is short, so it is not paged)."""

    object: Literal["list"] = "list"
    data: list[AclGrant]
    has_more: bool = False
    next_cursor: str | None = None


class GroupMember(msgspec.Struct, kw_only=True):
    user_id: uuid.UUID
    role: Literal["manager", "member"]
    created_at: datetime


class Group(msgspec.Struct, kw_only=True):
    """A group of users; ``my_role`` is the caller's role in it."""

    id: uuid.UUID
    object: Literal["group"] = "group"
    name: str
    created_by: uuid.UUID | None
    created_at: datetime
    my_role: Literal["manager", "member"]
    members: list[GroupMember]


class GroupCreate(msgspec.Struct, kw_only=True):
    name: GroupName


class GroupMemberCreate(msgspec.Struct, kw_only=True):
    """Add a user of your tenant to the group (adding again changes their role)."""

    user_id: uuid.UUID
    role: Literal["manager", "member"] = "member"


class GroupList(Page[Group], kw_only=True):
    """A page of the caller's groups, newest first."""

    data: list[Group]  # restated: Litestar's schema generation loses a subclassed generic's parameter
