"""/api/v1/prompts/{prompt_id}/acl (built by ``acl_routes.acl_controller``) and /api/v1/groups.

Viewers list an entity's grants; managers grant (up to manager) and revoke (anyone but the owner);
the owner transfers ownership to another user and stays on as a manager.
An entity the caller has no role on answers like a missing one (its own 404 code).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter

from api.access.acl_routes import acl_controller
from api.access.schemas import (
    Group,
    GroupCreate,
    GroupList,
    GroupMember,
    GroupMemberCreate,
)
from api.context import event_metadata
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.services import Services
from domain.prompts.model import PromptNotFound
from domain.shared.principal import Principal
from infra.access import groups as grp

GroupId = Annotated[uuid.UUID, PathParameter(description="The group's id (UUID).")]
UserId = Annotated[uuid.UUID, PathParameter(description="The member's user id (UUID).")]

_FORBIDDEN = {403: ResponseSpec(None, description="Your role does not allow this (`forbidden`).")}
_GROUP_404 = {404: ResponseSpec(None, description="No group with this id that you belong to (`group_not_found`).")}


def _group(g: grp.Group) -> Group:
    return Group(
        id=g.id,
        name=g.name,
        created_by=g.created_by,
        created_at=g.created_at,
        my_role=g.my_role,
        members=[GroupMember(user_id=m.user_id, role=m.role, created_at=m.created_at) for m in g.members],
    )


PromptAclController = acl_controller(
    collection="prompts",
    id_param="prompt_id",
    entity_type="prompt",
    noun="prompt",
    operation_noun="Prompt",
    not_found=PromptNotFound,
    scope="prompts",
)


class GroupController(Controller):
    path = "/groups"
    tags = ["access"]
    opt = {"scope": "groups"}

    @post("", operation_id="CreateGroup", summary="Create a group (you become its manager)", status_code=201)
    async def create_group(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[GroupCreate],
    ) -> Group:
        async with services.db.write() as session:
            created = await grp.create(
                session, principal, data.name.strip() or data.name, event_metadata(request, principal)
            )
        return _group(created)

    @get("", operation_id="ListGroups", summary="List the groups you belong to, newest first")
    async def list_groups(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
    ) -> Response[GroupList]:
        before = decode_cursor(cursor, IdCursor).id if cursor is not None else None
        async with services.db.read() as session:
            rows = await grp.list_page(session, principal, limit + 1, before)
        page, has_more, next_cursor = paginate(rows, limit, lambda g: IdCursor(g.id))
        body = GroupList(data=[_group(g) for g in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get("/{group_id:str}", operation_id="GetGroup", summary="Get a group and its members", responses=_GROUP_404)
    async def get_group(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], group_id: GroupId
    ) -> Group:
        async with services.db.read() as session:
            return _group(await grp.get(session, principal, group_id))

    @post(
        "/{group_id:str}/members",
        operation_id="AddGroupMember",
        summary="Add a member to a group (group managers only)",
        status_code=200,
        responses={**_GROUP_404, **_FORBIDDEN},
    )
    async def add_group_member(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        group_id: GroupId,
        data: JSONBody[GroupMemberCreate],
    ) -> Group:
        async with services.db.write() as session:
            group = await grp.add_member(
                session, principal, group_id, data.user_id, data.role, event_metadata(request, principal)
            )
        return _group(group)

    @delete(
        "/{group_id:str}/members/{user_id:str}",
        operation_id="RemoveGroupMember",
        summary="Remove a member from a group (group managers only)",
        status_code=204,
        responses={**_GROUP_404, **_FORBIDDEN},
    )
    async def remove_group_member(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        group_id: GroupId,
        user_id: UserId,
    ) -> None:
        async with services.db.write() as session:
            await grp.remove_member(session, principal, group_id, user_id, event_metadata(request, principal))
