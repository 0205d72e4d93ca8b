"""``acl_controller(...)``: the four ACL routes (list, grant, transfer, revoke) of one shareable entity
type, under ``/<collection>/{<id_param>}/acl``, with that type's own operation ids and 404 code.

Viewers list an entity's grants; managers grant (up to manager) and revoke (anyone but the owner);
the owner transfers ownership to another user and stays on as a manager. An entity the caller has
no role on answers like a missing one (its own 404 code).
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter

from api.access.schemas import AclGrant, AclGrantCreate, AclGrantList, OwnershipTransfer
from api.context import event_metadata, mark_unchanged
from api.services import Services
from domain.shared.errors import NotFound
from domain.shared.principal import Principal
from infra.access import acl

GrantId = Annotated[uuid.UUID, PathParameter(description="The grant's id (UUID).")]
_FORBIDDEN = {403: ResponseSpec(None, description="Your role does not allow this (`forbidden`).")}


def grant_schema(g: acl.Grant) -> AclGrant:
    return AclGrant(
        id=g.id,
        entity_type=g.entity_type,
        entity_id=g.entity_id,
        grantee_type=g.grantee_type,
        grantee_id=g.grantee_id,
        role=g.role,
        created_at=g.created_at,
    )


def _with_id_param(fn: Callable[..., Any], id_param: str, id_type: Any, extra: dict[str, Any]) -> Callable[..., Any]:
    """Give ``fn(self, **kwargs)`` an explicit signature naming the entity's path parameter, so
    Litestar documents and injects it under the collection's own name (``prompt_id``, ...)."""
    kinds = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {}
    ordered = {k: v for k, v in extra.items() if k != "grant_id"}
    ordered[id_param] = id_type  # the entity's id comes before the grant's, as in the path
    if "grant_id" in extra:
        ordered["grant_id"] = extra["grant_id"]
    for name, annotation in ordered.items():
        params.append(inspect.Parameter(name, kinds, annotation=annotation))
        annotations[name] = annotation
    return_annotation = fn.__annotations__.get("return", inspect.Signature.empty)
    annotations["return"] = return_annotation
    fn.__signature__ = inspect.Signature(params, return_annotation=return_annotation)  # type: ignore[attr-defined]
    fn.__annotations__ = annotations
    return fn


def acl_controller(
    *,
    collection: str,
    id_param: str,
    entity_type: str,
    noun: str,
    operation_noun: str,
    not_found: type[NotFound],
    scope: str,
) -> type[Controller]:
    """The ACL controller of ``/<collection>/{<id_param>}/acl``; ``operation_noun`` names the
    operations (``Prompt`` -> ListPromptGrants, GrantPromptAccess, TransferPromptOwnership,
    RevokePromptAccess)."""
    id_type = Annotated[uuid.UUID, PathParameter(description=f"The {noun}'s id (UUID).")]
    not_found_spec = {
        404: ResponseSpec(None, description=f"No {noun} with this id visible to you (`{not_found.code}`).")
    }
    deps = {"services": NamedDependency[Services], "principal": NamedDependency[Principal]}
    req = {"request": Request[Any, Any, Any]}

    async def list_grants(self: Any, **kw: Any) -> AclGrantList:
        services: Services = kw["services"]
        async with services.db.read() as session:
            await acl.require(session, kw["principal"], entity_type, kw[id_param], "read", not_found)
            grants = await acl.list_grants(session, entity_type, kw[id_param])
        return AclGrantList(data=[grant_schema(g) for g in grants])

    async def grant_access(self: Any, **kw: Any) -> Response[AclGrant]:
        services: Services = kw["services"]
        principal: Principal = kw["principal"]
        data: AclGrantCreate = kw["data"]
        async with services.db.write() as session:
            granted, created = await acl.grant(
                session,
                principal,
                entity_type,
                kw[id_param],
                data.grantee_type,
                data.grantee_id,
                data.role,
                event_metadata(kw["request"], principal),
                not_found,
            )
        if created is None:
            mark_unchanged(kw["request"])
        return Response(grant_schema(granted), status_code=201 if created else 200)

    async def transfer_ownership(self: Any, **kw: Any) -> AclGrantList:
        services: Services = kw["services"]
        principal: Principal = kw["principal"]
        data: OwnershipTransfer = kw["data"]
        async with services.db.write() as session:
            grants = await acl.transfer(
                session,
                principal,
                entity_type,
                kw[id_param],
                data.user_id,
                event_metadata(kw["request"], principal),
                not_found,
            )
        if data.user_id == principal.user_id:
            mark_unchanged(kw["request"])  # transferring to oneself changes nothing
        return AclGrantList(data=[grant_schema(g) for g in grants])

    async def revoke_access(self: Any, **kw: Any) -> None:
        services: Services = kw["services"]
        principal: Principal = kw["principal"]
        async with services.db.write() as session:
            await acl.revoke(
                session,
                principal,
                entity_type,
                kw[id_param],
                kw["grant_id"],
                event_metadata(kw["request"], principal),
                not_found,
            )

    list_grants.__annotations__ = {"return": AclGrantList}
    grant_access.__annotations__ = {"return": Response[AclGrant]}
    transfer_ownership.__annotations__ = {"return": AclGrantList}
    revoke_access.__annotations__ = {"return": None}
    handlers = {
        f"list_{entity_type}_grants": get(
            "",
            operation_id=f"List{operation_noun}Grants",
            summary=f"List who may access a {noun}",
            responses=not_found_spec,
        )(_with_id_param(list_grants, id_param, id_type, deps)),
        f"grant_{entity_type}_access": post(
            "",
            operation_id=f"Grant{operation_noun}Access",
            summary=f"Grant a user or group a role on a {noun}",
            status_code=201,
            responses={
                **not_found_spec,
                **_FORBIDDEN,
                200: ResponseSpec(AclGrant, description="The grantee already had a grant; its role was set."),
            },
        )(_with_id_param(grant_access, id_param, id_type, {**req, **deps, "data": JSONBody[AclGrantCreate]})),
        f"transfer_{entity_type}_ownership": post(
            "/transfer",
            operation_id=f"Transfer{operation_noun}Ownership",
            summary=f"Make another user the {noun}'s owner (you become a manager)",
            status_code=200,
            responses={
                404: ResponseSpec(
                    None,
                    description=f"No {noun} with this id visible to you (`{not_found.code}`), or no active user"
                    " with this id in your tenant (`user_not_found`).",
                ),
                403: ResponseSpec(None, description="Only the owner may transfer ownership (`forbidden`)."),
            },
        )(_with_id_param(transfer_ownership, id_param, id_type, {**req, **deps, "data": JSONBody[OwnershipTransfer]})),
        f"revoke_{entity_type}_access": delete(
            "/{grant_id:str}",
            operation_id=f"Revoke{operation_noun}Access",
            summary=f"Revoke a grant on a {noun}",
            status_code=204,
            responses={**not_found_spec, **_FORBIDDEN},
        )(_with_id_param(revoke_access, id_param, id_type, {**req, **deps, "grant_id": GrantId})),
    }
    attrs: dict[str, Any] = {
        "path": f"/{collection}/{{{id_param}:str}}/acl",
        "tags": ["access"],
        "opt": {"scope": scope},  # sharing an entity is writing to it
        **handlers,
    }
    return type(f"{operation_noun}AclController", (Controller,), attrs)
