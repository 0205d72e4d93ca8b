"""Groups of users within a tenant. Members see their group; group managers add and remove members.

A group the caller is not a member of answers like a missing one (``group_not_found``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from domain.shared.access_events import GroupCreated, GroupMemberChanged, group_stream
from domain.shared.errors import Forbidden, NotFound
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.db.tables.access import group_members as gm
from infra.db.tables.access import groups as t
from infra.db.tables.identity import users
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import record

MemberRole = Literal["manager", "member"]


class GroupNotFound(NotFound):
    """No group with this id that you are a member of."""

    code = "group_not_found"


class MemberNotFound(NotFound):
    """No such member in this group, or no such user in your tenant."""

    code = "member_not_found"


@dataclass(frozen=True, slots=True)
class Member:
    user_id: uuid.UUID
    role: MemberRole
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Group:
    id: uuid.UUID
    name: str
    created_by: uuid.UUID | None
    created_at: datetime
    my_role: MemberRole
    members: list[Member]


async def _members(session: AsyncSession, group_id: uuid.UUID) -> list[Member]:
    rows = await session.execute(select(gm).where(gm.c.group_id == group_id).order_by(gm.c.created_at, gm.c.user_id))
    return [Member(user_id=r.user_id, role=r.role, created_at=r.created_at) for r in rows]


def _group(row: Any, members: list[Member]) -> Group:
    return Group(
        id=row.id,
        name=row.name,
        created_by=row.created_by,
        created_at=row.created_at,
        my_role=row.my_role,
        members=members,
    )


def _mine(principal: Principal) -> Any:
    return (
        select(t, gm.c.role.label("my_role"))
        .join(gm, gm.c.group_id == t.c.id)
        .where(gm.c.user_id == principal.user_id, t.c.tenant_id == principal.tenant_id)
    )


async def create(session: AsyncSession, principal: Principal, name: str, meta: EventMetadata) -> Group:
    group_id = new_id()
    await session.execute(
        insert(t).values(id=group_id, tenant_id=principal.tenant_id, name=name, created_by=principal.user_id)
    )
    await session.execute(insert(gm).values(group_id=group_id, user_id=principal.user_id, role="manager"))
    store = PostgresEventStore(session)
    await record(store, group_stream(group_id), GroupCreated(group_id=group_id, name=name), meta)
    await record(
        store,
        group_stream(group_id),
        GroupMemberChanged(group_id=group_id, user_id=principal.user_id, role="manager"),
        meta,
    )
    return await get(session, principal, group_id)


async def get(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> Group:
    row = (await session.execute(_mine(principal).where(t.c.id == group_id))).one_or_none()
    if row is None:
        raise GroupNotFound()
    return _group(row, await _members(session, group_id))


async def list_page(session: AsyncSession, principal: Principal, limit: int, before: uuid.UUID | None) -> list[Group]:
    """The caller's groups, newest first, ``limit`` of them after the cursor (members included)."""
    query = _mine(principal).order_by(t.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(t.c.id < before)
    rows = (await session.execute(query)).all()
    return [_group(r, await _members(session, r.id)) for r in rows]


async def _require_manager(session: AsyncSession, principal: Principal, group_id: uuid.UUID) -> None:
    row = (await session.execute(_mine(principal).where(t.c.id == group_id).with_for_update(of=t))).one_or_none()
    if row is None:
        raise GroupNotFound()
    if row.my_role != "manager":
        raise Forbidden("Only the group's managers change its members.")


async def add_member(
    session: AsyncSession,
    principal: Principal,
    group_id: uuid.UUID,
    user_id: uuid.UUID,
    role: MemberRole,
    meta: EventMetadata,
) -> Group:
    """Add a user of the caller's tenant (or change their member role)."""
    await _require_manager(session, principal, group_id)
    user = await session.scalar(
        select(users.c.id).where(users.c.id == user_id, users.c.tenant_id == principal.tenant_id)
    )
    if user is None:
        raise MemberNotFound("No user with this id in your tenant.")
    stmt = pg_insert(gm).values(group_id=group_id, user_id=user_id, role=role)
    await session.execute(stmt.on_conflict_do_update(index_elements=[gm.c.group_id, gm.c.user_id], set_={"role": role}))
    event = GroupMemberChanged(group_id=group_id, user_id=user_id, role=role)
    await record(PostgresEventStore(session), group_stream(group_id), event, meta)
    return await get(session, principal, group_id)


async def remove_member(
    session: AsyncSession, principal: Principal, group_id: uuid.UUID, user_id: uuid.UUID, meta: EventMetadata
) -> None:
    await _require_manager(session, principal, group_id)
    gone = await session.execute(
        delete(gm).where(gm.c.group_id == group_id, gm.c.user_id == user_id).returning(gm.c.user_id)
    )
    if gone.one_or_none() is None:
        raise MemberNotFound()
    event = GroupMemberChanged(group_id=group_id, user_id=user_id, role=None)
    await record(PostgresEventStore(session), group_stream(group_id), event, meta)
