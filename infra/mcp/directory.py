"""The gateway's view of registered MCP servers (``domain.mcp.ports.ServerDirectory``) over the
database: what a caller may use, ready to connect."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select

from domain.mcp.types import McpServerConfig
from domain.shared.principal import Principal
from infra.db.engine import Database
from infra.db.tables.mcp import mcp_servers as t
from infra.mcp.server_config import config_of, server_of
from infra.mcp.servers import decrypt, tenant_allow, visible_clause
from infra.secrets.envelope import Kek


class DbServerDirectory:
    """``domain.mcp.ports.ServerDirectory`` over the database: the enabled servers a caller holds a
    role on, secrets decrypted, with the tenant's outbound allow-list."""

    def __init__(self, db: Database, kek: Kek, outbound_allow: Sequence[str] = ()) -> None:
        self.db = db
        self.kek = kek
        self.outbound_allow = tuple(outbound_allow)

    async def configs(self, principal: Principal, server_ids: Sequence[uuid.UUID] | None) -> list[McpServerConfig]:
        query = select(t).where(visible_clause(principal), t.c.enabled.is_(True)).order_by(t.c.name, t.c.id)
        if server_ids is not None:
            if not server_ids:
                return []
            query = query.where(t.c.id.in_(list(server_ids)))
        async with self.db.read() as session:
            rows = (await session.execute(query)).all()
            if not rows:
                return []
            allow = await tenant_allow(session, principal.tenant_id, self.outbound_allow)
            out = []
            for row in rows:
                server = server_of(row)
                out.append(config_of(server, await decrypt(session, self.kek, server), allow))
        return out
