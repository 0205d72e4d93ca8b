"""/api/v1/auth/* (register, login, refresh, logout) and /api/v1/me.

Each command is one write transaction. A failed login or a reused refresh token still commits its
audit event (and, for reuse, the session's revocation) before the 401 goes out.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from sqlalchemy import select

from api.auth.principal import unauthenticated
from api.auth.schemas import (
    LoginRequest,
    Me,
    RefreshRequest,
    RegisterRequest,
    Session,
    SessionList,
    TokenResponse,
    User,
)
from api.context import event_metadata
from api.errors import ApiError
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.ratelimit import enforce
from api.services import Services
from domain.shared.principal import Principal
from infra.db.tables.identity import users
from infra.identity.accounts import DEFAULT_TENANT_SLUG, Account, Accounts, Tokens
from infra.identity.invitations import InvitationUnusable
from infra.identity.sessions import live_sessions


def _user(account: Account) -> User:
    return User(
        id=account.id,
        email=account.email,
        name=account.name,
        role=account.role,
        tenant_id=account.tenant_id,
        created_at=account.created_at,
    )


def _tokens(t: Tokens) -> TokenResponse:
    return TokenResponse(
        user=_user(t.account), access_token=t.access_token, refresh_token=t.refresh_token, expires_in=t.expires_in
    )


def _client(request: Request[Any, Any, Any]) -> tuple[str | None, str | None]:
    return (request.client.host if request.client else None), request.headers.get("user-agent")


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post(
        "/register",
        operation_id="Register",
        summary="Create an account (the first one of a tenant becomes its admin)",
        responses={
            403: ResponseSpec(
                None,
                description="Registration is closed (`registration_closed`), or the invitation is for "
                "another email (`invitation_email_mismatch`).",
            ),
            404: ResponseSpec(None, description="No invitation matches the token (`invitation_not_found`)."),
            410: ResponseSpec(
                None,
                description="The invitation was used (`invitation_used`), revoked (`invitation_revoked`) "
                "or has expired (`invitation_expired`).",
            ),
        },
    )
    async def register(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], data: JSONBody[RegisterRequest]
    ) -> TokenResponse:
        ip, agent = _client(request)
        await enforce(services.redis, "auth-ip", ip or "unknown", services.settings.auth_rate_per_ip)
        try:
            async with services.db.write() as session:
                accounts = Accounts(session, services.passwords, services.token_signer())
                tokens = await accounts.register(
                    data.email,
                    data.password,
                    data.name,
                    event_metadata(request),
                    ip=ip,
                    agent=agent,
                    tenant=data.tenant or DEFAULT_TENANT_SLUG,
                    invitation_token=data.invitation_token,
                    registration_default=services.settings.registration_open,
                )
        except InvitationUnusable as exc:  # used, revoked or expired: gone for good
            raise ApiError(410, exc.code, exc.detail) from None
        return _tokens(tokens)

    @post("/login", operation_id="Login", summary="Sign in with email and password", status_code=200)
    async def login(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], data: JSONBody[LoginRequest]
    ) -> TokenResponse:
        ip, agent = _client(request)
        await enforce(services.redis, "auth-ip", ip or "unknown", services.settings.auth_rate_per_ip)
        account_key = hashlib.sha256(data.email.strip().lower().encode()).hexdigest()
        await enforce(services.redis, "login-account", account_key, services.settings.auth_rate_per_account)
        async with services.db.write() as session:
            accounts = Accounts(session, services.passwords, services.token_signer())
            tokens = await accounts.login(
                data.email,
                data.password,
                event_metadata(request),
                ip=ip,
                agent=agent,
                tenant=data.tenant or DEFAULT_TENANT_SLUG,
            )
        if tokens is None:
            raise unauthenticated("The email or password is not correct.")
        return _tokens(tokens)

    @post("/refresh", operation_id="RefreshTokens", summary="Trade a refresh token for new tokens", status_code=200)
    async def refresh(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], data: JSONBody[RefreshRequest]
    ) -> TokenResponse:
        ip, _ = _client(request)
        await enforce(services.redis, "auth-ip", ip or "unknown", services.settings.auth_rate_per_ip)
        async with services.db.write() as session:
            accounts = Accounts(session, services.passwords, services.token_signer())
            tokens = await accounts.refresh(data.refresh_token, event_metadata(request))
        if tokens is None:
            raise unauthenticated("The refresh token is not valid.")
        return _tokens(tokens)

    @post(
        "/logout",
        operation_id="Logout",
        summary="End the session behind the presented access token",
        status_code=204,
        opt={"scope": "me"},
    )
    async def logout(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
    ) -> None:
        if principal.session_id is None:  # an API key has no session to end; revoke the key instead
            raise ApiError(403, "session_required", "Sign out with an access token; revoke API keys instead.")
        async with services.db.write() as session:
            accounts = Accounts(session, services.passwords, services.token_signer())
            await accounts.revoke(principal.session_id, principal.user_id, "logout", event_metadata(request, principal))


SessionId = Annotated[uuid.UUID, PathParameter(description="The session's id (UUID).")]


class MeController(Controller):
    path = "/me"
    tags = ["auth"]
    opt = {"scope": "me"}

    @get("", operation_id="GetMe", summary="The caller: user, tenant and roles")
    async def me(self, services: NamedDependency[Services], principal: NamedDependency[Principal]) -> Me:
        cache = services.credentials()
        profile_key = f"me:{principal.user_id}"  # forgotten with the user's credentials on any change
        user: User | None = cache.get(profile_key)
        if user is None:
            async with services.db.read_statement() as session:  # one statement: no transaction needed
                row = (await session.execute(select(users).where(users.c.id == principal.user_id))).one()
            user = User(
                id=row.id,
                email=row.email,
                name=row.name,
                role=row.role,
                tenant_id=row.tenant_id,
                created_at=row.created_at,
            )
            cache.put(profile_key, principal.user_id, user)
        return Me(user=user, tenant_id=principal.tenant_id, roles=[principal.role], session_id=principal.session_id)

    @get("/sessions", operation_id="ListMySessions", summary="The caller's signed-in sessions, newest first")
    async def list_sessions(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
    ) -> Response[SessionList]:
        before = decode_cursor(cursor, IdCursor).id if cursor is not None else None
        async with services.db.read() as session:
            rows = await live_sessions(session, principal.user_id, limit=limit + 1, before=before)
        page, has_more, next_cursor = paginate(rows, limit, lambda r: IdCursor(r.id))
        data = [
            Session(
                id=r.id,
                created_at=r.created_at,
                last_used_at=r.last_used_at,
                expires_at=r.expires_at,
                ip=r.ip,
                user_agent=r.user_agent,
                current=r.id == principal.session_id,
            )
            for r in page
        ]
        body = SessionList(data=data, has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @delete("/sessions/{session_id:str}", operation_id="RevokeMySession", summary="Sign one of your sessions out")
    async def revoke_session(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        session_id: SessionId,
    ) -> None:
        async with services.db.write() as session:
            accounts = Accounts(session, services.passwords, services.token_signer())
            done = await accounts.revoke(session_id, principal.user_id, "revoked", event_metadata(request, principal))
        if not done:
            raise ApiError(404, "session_not_found", "No live session of yours has this id.")
