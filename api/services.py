"""The composition root's container: the long-lived adapters the app and its handlers share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from api.ratelimit import BatchedLimiter
from infra.db.engine import Database
from infra.identity.auth_cache import AuthCache
from infra.identity.oidc import OidcClient
from infra.identity.passwords import PasswordHasher
from infra.identity.tokens import TokenSigner
from infra.llm.metering import UsageSink
from infra.llm.registry import Registry
from infra.runs.runner import RunRunner
from infra.runs.stream import RunStreams
from infra.settings import Settings

if TYPE_CHECKING:  # the MCP SDK loads with the gateway, on first use
    from infra.mcp.gateway import McpGateway


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    redis: Redis
    passwords: PasswordHasher = field(default_factory=PasswordHasher)
    signer: TokenSigner | None = None
    oidc: OidcClient = field(default_factory=OidcClient)
    """OpenID Connect discovery and key sets, cached briefly across requests."""

    auth_cache: AuthCache | None = None
    limiter: BatchedLimiter | None = None

    def credentials(self) -> AuthCache:
        """Resolved credentials, reused for LITESKILL_AUTH_CACHE_TTL_S (see infra.identity.auth_cache)."""
        if self.auth_cache is None:
            self.auth_cache = AuthCache(self.settings.auth_cache_ttl_s)
        return self.auth_cache

    def api_limiter(self) -> BatchedLimiter:
        """The per-principal API rate limiter (counts locally, syncs to Redis in batches)."""
        if self.limiter is None:
            self.limiter = BatchedLimiter(self.redis)
        return self.limiter

    usage_sink: UsageSink | None = None

    def usage(self) -> UsageSink:
        """The usage ledger's writer (infra.llm.metering); flushed when the app shuts down."""
        if self.usage_sink is None:
            self.usage_sink = UsageSink(self.db)
        return self.usage_sink

    registry: Registry | None = None

    def llm_registry(self) -> Registry:
        """Resolves model ids to adapters behind the outbound guard (infra.llm.registry); shared."""
        if self.registry is None:
            from infra.llm.streaming import StreamPolicy
            from infra.net.outbound import OutboundGuard
            from infra.secrets.service import load_kek

            llm = self.settings.llm
            policy = StreamPolicy(
                max_retries=llm.llm_max_retries,
                overall_timeout_s=llm.llm_timeout_s,
                idle_timeout_s=llm.llm_idle_timeout_s,
            )
            self.registry = Registry(load_kek(self.settings), OutboundGuard(llm.outbound_allow), policy)
        return self.registry

    mcp: Any = None
    """The ``McpGateway`` once made (typed ``Any``: the handlers' signature model resolves these
    fields at runtime, and naming the class would load the MCP SDK with the app)."""

    def mcp_gateway(self) -> McpGateway:
        """The MCP gateway (infra.mcp.gateway) over the servers in the database; closed at shutdown."""
        if self.mcp is None:
            from infra.mcp.directory import DbServerDirectory
            from infra.mcp.gateway import McpGateway
            from infra.mcp.ledger import DbRecorder
            from infra.net.outbound import OutboundGuard
            from infra.secrets.service import load_kek

            allow = self.settings.llm.outbound_allow
            directory = DbServerDirectory(self.db, load_kek(self.settings), allow)
            self.mcp = McpGateway(directory, recorder=DbRecorder(self.db), guard=OutboundGuard(allow))
        gateway: McpGateway = self.mcp
        return gateway

    runner: RunRunner | None = None
    streams: RunStreams | None = None

    def run_streams(self) -> RunStreams:
        """Run event streams in Redis (infra.runs.stream), kept LITESKILL_RUN_RETENTION_S after the end."""
        if self.streams is None:
            self.streams = RunStreams(self.redis, self.settings.run_retention_s)
        return self.streams

    def runs(self) -> RunRunner:
        """Runs executing in this process (infra.runs.runner); it follows cancel requests from any
        process once created, and interrupts its runs when the app shuts down."""
        if self.runner is None:
            self.runner = RunRunner(self.db, self.run_streams(), lease_s=self.settings.run_lease_s)
            self.runner.listen()
        return self.runner

    def token_signer(self) -> TokenSigner:
        """The access-token signer, keyed from the master key on first use."""
        if self.signer is None:
            from infra.identity.keys import access_token_signer

            self.signer = access_token_signer(self.settings)
        return self.signer
