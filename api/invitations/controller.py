"""/api/v1/invitations: users holding ``manage_users`` invite people into their tenant.

The token is in the creation response only (like an API key, so the route takes no
Idempotency-Key: a replay would have to keep the plaintext). Inviting an email with a pending
invitation replaces it. Invitations of other tenants answer like missing ones
(``invitation_not_found``); a caller without ``manage_users`` gets 403 on the whole collection.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter

from api.context import event_metadata, mark_unchanged
from api.errors import ApiError
from api.invitations.schemas import CreatedInvitation, Invitation, InvitationCreate, InvitationList, InvitationStatus
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.services import Services
from domain.shared.principal import Principal
from infra.identity import invitations as inv

InvitationId = Annotated[uuid.UUID, PathParameter(description="The invitation's id (UUID).")]
StatusFilter = Annotated[
    InvitationStatus | None, QueryParameter(name="status", description="Only invitations in this state.")
]

_FORBIDDEN = {403: ResponseSpec(None, description="You do not hold `manage_users` (`forbidden`).")}
_NOT_FOUND = {
    404: ResponseSpec(None, description="No invitation with this id in your tenant (`invitation_not_found`).")
}


def to_schema(i: inv.Invitation) -> Invitation:
    return Invitation(
        id=i.id,
        tenant_id=i.tenant_id,
        email=i.email,
        role=i.role,
        status=i.status,
        created_by=i.created_by,
        created_at=i.created_at,
        expires_at=i.expires_at,
        accepted_at=i.accepted_at,
        accepted_by=i.accepted_by,
        revoked_at=i.revoked_at,
    )


def created_schema(new: inv.NewInvitation) -> CreatedInvitation:
    i = new.invitation
    return CreatedInvitation(
        id=i.id,
        tenant_id=i.tenant_id,
        email=i.email,
        role=i.role,
        status=i.status,
        created_by=i.created_by,
        created_at=i.created_at,
        expires_at=i.expires_at,
        accepted_at=i.accepted_at,
        accepted_by=i.accepted_by,
        revoked_at=i.revoked_at,
        token=new.token,
    )


def require_manage_users(principal: Principal) -> None:
    if not principal.has("manage_users"):
        raise ApiError(403, "forbidden", "Managing users and invitations needs the manage_users permission.")


class InvitationController(Controller):
    path = "/invitations"
    tags = ["admin"]
    opt = {"scope": "invitations"}

    @post(
        "",
        operation_id="CreateInvitation",
        summary="Invite someone into your tenant (the token is shown once)",
        status_code=201,
        responses={
            **_FORBIDDEN,
            409: ResponseSpec(None, description="The email already has an account here (`email_taken`)."),
        },
    )
    async def create_invitation(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[InvitationCreate],
    ) -> CreatedInvitation:
        require_manage_users(principal)
        if data.role == "admin" and not principal.is_admin:
            raise ApiError(403, "forbidden", "Only admins invite admins.")
        async with services.db.write() as session:
            new = await inv.create(
                session,
                principal.tenant_id,
                data.email,
                data.role,
                principal.user_id,
                event_metadata(request, principal),
            )
        return created_schema(new)

    @get(
        "", operation_id="ListInvitations", summary="List your tenant's invitations, newest first", responses=_FORBIDDEN
    )
    async def list_invitations(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
        status: StatusFilter = None,
    ) -> Response[InvitationList]:
        require_manage_users(principal)
        before = decode_cursor(cursor, IdCursor).id if cursor is not None else None
        async with services.db.read() as session:
            rows = await inv.list_page(session, principal.tenant_id, limit=limit + 1, before=before, status=status)
        page, has_more, next_cursor = paginate(rows, limit, lambda i: IdCursor(i.id))
        body = InvitationList(data=[to_schema(i) for i in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get(
        "/{invitation_id:str}",
        operation_id="GetInvitation",
        summary="Get an invitation",
        responses={**_FORBIDDEN, **_NOT_FOUND},
    )
    async def get_invitation(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], invitation_id: InvitationId
    ) -> Invitation:
        require_manage_users(principal)
        async with services.db.read() as session:
            return to_schema(await inv.get(session, principal.tenant_id, invitation_id))

    @delete(
        "/{invitation_id:str}",
        operation_id="RevokeInvitation",
        summary="Revoke an invitation (its token stops working)",
        status_code=204,
        responses={
            **_FORBIDDEN,
            **_NOT_FOUND,
            409: ResponseSpec(None, description="The invitation was already accepted (`invitation_used`)."),
        },
    )
    async def revoke_invitation(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        invitation_id: InvitationId,
    ) -> None:
        require_manage_users(principal)
        async with services.db.write() as session:
            meta = event_metadata(request, principal)
            _, revoked = await inv.revoke(session, principal.tenant_id, invitation_id, meta)
        if not revoked:
            mark_unchanged(request)
