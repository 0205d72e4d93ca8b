"""/api/v1/mcp-servers: a tenant's MCP servers, shared through the ACL (entity ``mcp_server``).

Any user may register an HTTP server (``streamable_http``, ``sse``) and owns what they register;
stdio servers run a program on the host, so only instance admins create or change them. Secrets are
write-only (``infra.mcp.servers``); URLs pass the outbound guard when saved and on every request.
Viewers list a server's tools (through the gateway's short-lived cache); editors refresh them.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from msgspec import UNSET
from sqlalchemy import select

from api.access.acl_routes import acl_controller
from api.context import event_metadata, mark_unchanged
from api.errors import ApiError
from api.etag import IfMatchHeader, check_if_match, etag
from api.idempotency import IdempotencyKeyHeader, idempotent
from api.mcp_servers.schemas import McpServer, McpServerCreate, McpServerList, McpServerUpdate, McpTool, McpToolList
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.prompts.controller import caller_scope
from api.services import Services
from domain.mcp.approval import server_approval
from domain.mcp.types import McpServerConfig, ToolInfo
from domain.shared.principal import Principal
from infra.db.tables.mcp import mcp_servers as t
from infra.mcp import servers as srv
from infra.mcp.calls import McpUnavailable
from infra.mcp.server_config import Server, config_of, server_of
from infra.net.outbound import OutboundGuard
from infra.secrets.service import load_kek

McpServerId = Annotated[uuid.UUID, PathParameter(description="The MCP server's id (UUID).")]

_NOT_FOUND = {
    404: ResponseSpec(None, description="No MCP server with this id visible to you (`mcp_server_not_found`).")
}
_FORBIDDEN = {
    403: ResponseSpec(
        None, description="Your role does not allow this, or stdio needs an instance admin (`forbidden`)."
    )
}
_PRECONDITION = {412: ResponseSpec(None, description="If-Match does not name the current version.")}
_UNPROCESSABLE = {
    422: ResponseSpec(
        None,
        description="The URL is blocked (`outbound_blocked`), moves stored secrets to another host"
        " (`credentials_host_mismatch`), or the transport's fields are missing or do not fit it.",
    )
}
_UPSTREAM = {
    409: ResponseSpec(None, description="The server is disabled (`mcp_server_disabled`)."),
    502: ResponseSpec(None, description="The server could not be reached or answered wrongly (`mcp_unavailable`)."),
}


def to_schema(s: Server) -> McpServer:
    info = s.secret_info
    return McpServer(
        id=s.id,
        name=s.name,
        transport=s.transport,
        url=s.url,
        header_names=list(info.get("header_names", [])),
        has_bearer_token=bool(info.get("has_bearer_token")),
        credential_host=s.credential_host,
        command=s.command,
        args=list(s.args),
        env_names=list(info.get("env_names", [])),
        enabled=s.enabled,
        approval=s.approval,
        tool_approval=dict(s.tool_approval),
        allowed_tools=s.allowed_tools,
        call_timeout_s=s.call_timeout_s,
        version=s.version,
        created_at=s.created_at,
        updated_at=s.updated_at,
    )


def _with_etag(s: Server, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[McpServer]:
    return Response(to_schema(s), status_code=status_code, headers={"ETag": etag(s.version), **(headers or {})})


def _if_match(header: str | None) -> Any:
    def check(server: Server) -> None:
        check_if_match(header, server.version)

    return check


async def _config(services: Services, principal: Principal, server_id: uuid.UUID, action: Any) -> McpServerConfig:
    """The server as the gateway sees it, if the caller's role allows ``action`` and it is enabled."""
    async with services.db.read() as session:
        server = await srv.load(session, principal, server_id, action)
        if not server.enabled:
            raise srv.McpServerDisabled()
        secrets = await srv.decrypt(session, load_kek(services.settings), server)
        allow = await srv.tenant_allow(session, principal.tenant_id, services.settings.llm.outbound_allow)
    return config_of(server, secrets, allow)


async def _tools(services: Services, config: McpServerConfig, *, refresh: bool) -> list[ToolInfo]:
    try:
        tools = await services.mcp_gateway().server_tools(config, refresh=refresh)
    except McpUnavailable as exc:
        raise ApiError(502, "mcp_unavailable", exc.detail) from None
    allowed = config.allowed_tools
    return [tool for tool in tools if allowed is None or tool.name in allowed]


def _tool_list(config: McpServerConfig, tools: list[ToolInfo]) -> McpToolList:
    data = [
        McpTool(
            name=tool.name,
            qualified_name=tool.qualified_name,
            title=tool.title,
            description=tool.description,
            input_schema=dict(tool.input_schema),
            annotations=dict(tool.annotations),
            approval=server_approval(config.approval, config.tool_approval, tool.name),
        )
        for tool in tools
    ]
    return McpToolList(data=data, has_more=False, next_cursor=None)


class McpServerController(Controller):
    path = "/mcp-servers"
    tags = ["mcp"]
    opt = {"scope": "mcp_servers"}

    @post(
        "",
        operation_id="CreateMcpServer",
        summary="Register an MCP server (stdio: instance admins only)",
        status_code=201,
        middleware=[idempotent(scope_of=caller_scope)],
        responses={
            **_FORBIDDEN,
            **_UNPROCESSABLE,
            409: ResponseSpec(None, description="Name taken (`mcp_server_name_taken`), or Idempotency-Key in flight."),
        },
    )
    async def create_mcp_server(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[McpServerCreate],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[McpServer]:
        spec = msgspec.structs.asdict(data)
        async with services.db.write() as session:
            allow = await srv.tenant_allow(session, principal.tenant_id, services.settings.llm.outbound_allow)
            server = await srv.create(
                session,
                principal,
                event_metadata(request, principal),
                kek=load_kek(services.settings),
                guard=OutboundGuard(allow),
                spec=spec,
            )
        location = f"{request.url.path.rstrip('/')}/{server.id}"
        return _with_etag(server, 201, {"Location": location})

    @get("", operation_id="ListMcpServers", summary="List the MCP servers you may use, newest first")
    async def list_mcp_servers(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
    ) -> Response[McpServerList]:
        query = select(t).where(srv.visible_clause(principal)).order_by(t.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(t.c.id < decode_cursor(cursor, IdCursor).id)
        async with services.db.read() as session:
            rows = (await session.execute(query)).all()
        page, has_more, next_cursor = paginate(rows, limit, lambda r: IdCursor(r.id))
        body = McpServerList(data=[to_schema(server_of(r)) for r in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get("/{mcp_server_id:str}", operation_id="GetMcpServer", summary="Get an MCP server", responses=_NOT_FOUND)
    async def get_mcp_server(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], mcp_server_id: McpServerId
    ) -> Response[McpServer]:
        async with services.db.read() as session:
            return _with_etag(await srv.load(session, principal, mcp_server_id, "read"))

    @patch(
        "/{mcp_server_id:str}",
        operation_id="UpdateMcpServer",
        summary="Change some fields of an MCP server (editors; stdio: instance admins)",
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION, **_UNPROCESSABLE},
    )
    async def update_mcp_server(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        mcp_server_id: McpServerId,
        data: JSONBody[McpServerUpdate],
        if_match: IfMatchHeader = None,
    ) -> Response[McpServer]:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not UNSET}
        async with services.db.write() as session:
            allow = await srv.tenant_allow(session, principal.tenant_id, services.settings.llm.outbound_allow)
            server, changed = await srv.update(
                session,
                principal,
                event_metadata(request, principal),
                mcp_server_id,
                kek=load_kek(services.settings),
                guard=OutboundGuard(allow),
                changes=changes,
                precondition=_if_match(if_match),
            )
        if not changed:
            mark_unchanged(request)
        return _with_etag(server)

    @delete(
        "/{mcp_server_id:str}",
        operation_id="DeleteMcpServer",
        summary="Delete an MCP server (owner)",
        status_code=204,
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION},
    )
    async def delete_mcp_server(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        mcp_server_id: McpServerId,
        if_match: IfMatchHeader = None,
    ) -> None:
        async with services.db.write() as session:
            await srv.delete(
                session, principal, event_metadata(request, principal), mcp_server_id, precondition=_if_match(if_match)
            )

    @get(
        "/{mcp_server_id:str}/tools",
        operation_id="ListMcpServerTools",
        summary="List the tools an MCP server offers (viewers; cached briefly)",
        responses={**_NOT_FOUND, **_UPSTREAM, **_UNPROCESSABLE},
    )
    async def list_mcp_server_tools(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], mcp_server_id: McpServerId
    ) -> McpToolList:
        config = await _config(services, principal, mcp_server_id, "read")
        return _tool_list(config, await _tools(services, config, refresh=False))

    @post(
        "/{mcp_server_id:str}/refresh",
        operation_id="RefreshMcpServerTools",
        summary="Read an MCP server's tools again (editors)",
        status_code=200,
        responses={**_NOT_FOUND, **_FORBIDDEN, **_UPSTREAM, **_UNPROCESSABLE},
    )
    async def refresh_mcp_server_tools(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        mcp_server_id: McpServerId,
    ) -> McpToolList:
        """Connection and protocol failures answer 502 ``mcp_unavailable``; a disabled server 409."""
        config = await _config(services, principal, mcp_server_id, "update")
        tools = await _tools(services, config, refresh=True)
        async with services.db.write() as session:
            await srv.record_refresh(session, event_metadata(request, principal), config.id, [x.name for x in tools])
        return _tool_list(config, tools)


McpServerAclController = acl_controller(
    collection="mcp-servers",
    id_param="mcp_server_id",
    entity_type=srv.ENTITY,
    noun="MCP server",
    operation_noun="McpServer",
    not_found=srv.McpServerNotFound,
    scope="mcp_servers",
)
