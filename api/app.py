"""create_app(settings): the one composition root for HTTP: adapters, routes, errors, middleware."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from redis.asyncio import BlockingConnectionPool, Redis

from api import middleware
from api.access.controller import GroupController, PromptAclController
from api.admin.controller import AdminSettingsController, AdminTenantController, AdminUserController
from api.audit.controller import AuditController
from api.auth.api_keys import ApiKeyController
from api.auth.controller import AuthController, MeController
from api.auth.oidc import OidcLoginController
from api.auth.oidc_providers import OidcProviderController
from api.auth.password import PasswordController
from api.auth.principal import provide_principal
from api.conversations.branching import ConversationBranchController
from api.conversations.controller import ConversationAclController, ConversationController
from api.conversations.history import ConversationHistoryController
from api.conversations.turns import ConversationTurnController
from api.conversations.usage import ConversationUsageController
from api.errors import ApiError, exception_handlers
from api.invitations.controller import InvitationController
from api.mcp_servers.controller import McpServerAclController, McpServerController
from api.models.controller import ModelAclController, ModelController
from api.openapi import openapi_config
from api.prompts.controller import PromptController
from api.providers.controller import ProviderAclController, ProviderController
from api.runs.approvals import RunApprovalController
from api.runs.controller import RunController
from api.services import Services
from api.system.controller import SystemController
from api.usage.controller import UsageController
from infra.db.engine import Database, create_engine
from infra.identity import auth_cache
from infra.settings import Settings

log = logging.getLogger(__name__)

_JSON_TYPES = ("application/json",)


async def _require_json(request: Request[Any, Any, Any]) -> None:
    """Bodies are JSON unless a route says otherwise (opt ``accepts``): 415 before any parsing."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    handler = request.route_handler
    if "data" not in handler.parsed_fn_signature.parameters:
        return
    accepted: tuple[str, ...] = handler.opt.get("accepts", _JSON_TYPES)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not content_type and request.headers.get("content-length") in (None, "0"):
        return  # no body at all: validation reports the missing fields
    if content_type in accepted or (content_type.endswith("+json") and "application/json" in accepted):
        return
    raise ApiError(415, "unsupported_media_type", f"Send the body as {', '.join(accepted)}.")


def create_app(settings: Settings, *, services: Services | None = None) -> Litestar:
    """Build the app. ``settings`` must carry resolved database and Redis URLs (the CLI resolves
    embedded ones); ``services`` lets a caller that already owns adapters share them."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if services is not None:
            yield  # the caller owns the adapters (tests, embedding)
            return
        svc = app.state.get("services")
        if svc is None:
            assert settings.database.url, "resolve the database URL first"
            assert settings.redis.url, "resolve the Redis URL first"
            engine = create_engine(
                settings.database.url,
                pool_size=settings.database.pool_size,
                max_overflow=settings.database.pool_max_overflow,
                echo=settings.database.echo,
            )
            svc = Services(
                settings=settings,
                db=Database(engine),
                # Waits for a free connection in a burst (300 turns publishing at once) rather than
                # failing with "Too many connections"; idle SSE readers share one (infra.runs.stream).
                redis=Redis.from_pool(BlockingConnectionPool.from_url(settings.redis.url, max_connections=100)),
            )
        app.state.services = svc
        # What start-up built lives as long as the process: out of the collector's sight, so the
        # full collections that come every so often under load do not walk it (each one stalled
        # every stream of the process for ~150 ms; bench/chat, active streams).
        gc.collect()
        gc.freeze()
        try:
            async with auth_cache.relay(svc.redis):
                yield
        finally:
            if svc.usage_sink is not None:
                await svc.usage_sink.aclose()  # usage of calls that just ended is still written
            if svc.runner is not None:
                await svc.runner.aclose()  # running runs end as interrupted
            if svc.mcp is not None:
                await svc.mcp.aclose()  # ends open MCP sessions and the stdio programs behind them
            await svc.redis.aclose()
            await svc.db.dispose()

    def provide_services(request: Request[Any, Any, Any]) -> Services:
        return request.app.state.services  # type: ignore[no-any-return]

    v1 = Router(
        path="/api/v1",
        route_handlers=[
            SystemController,
            AuthController,
            MeController,
            PasswordController,
            ApiKeyController,
            OidcLoginController,
            OidcProviderController,
            PromptController,
            PromptAclController,
            GroupController,
            AuditController,
            InvitationController,
            AdminUserController,
            AdminSettingsController,
            AdminTenantController,
            UsageController,
            ProviderController,
            ProviderAclController,
            ModelController,
            ModelAclController,
            McpServerController,
            McpServerAclController,
            RunController,
            RunApprovalController,
            ConversationController,
            ConversationHistoryController,
            ConversationAclController,
            ConversationTurnController,
            ConversationBranchController,
            ConversationUsageController,
        ],
    )

    cors = None
    if settings.http.cors_origins:
        cors = CORSConfig(
            allow_origins=list(settings.http.cors_origins),
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-Match",
                "Last-Event-ID",
                "X-Request-ID",
            ],
            expose_headers=[
                "ETag",
                "Link",
                "X-Request-ID",
                "Retry-After",
                "RateLimit",
                "RateLimit-Policy",
                "Idempotent-Replayed",
            ],
            allow_credentials=False,
            max_age=600,
        )

    app = Litestar(
        route_handlers=[v1],
        lifespan=[lifespan],
        state=State({"services": services} if services is not None else {}),
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "principal": Provide(provide_principal),
        },
        exception_handlers=exception_handlers,
        before_request=_require_json,
        openapi_config=openapi_config(),
        cors_config=cors,
        request_max_body_size=settings.http.max_body_bytes,
        debug=False,
        logging_config=None,  # ours (infra.logging) stays in charge: JSON lines with request ids
    )
    middleware.install(app, log_requests=settings.env != "test")
    return app
