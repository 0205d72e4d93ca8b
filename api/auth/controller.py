"""/api/v1/auth/* (register, login, refresh, logout) and /api/v1/me.

Each command is one write transaction. A failed login or a reused refresh token still commits its
audit event (and, for reuse, the session's revocation) before the 401 goes out.
"""

from __future__ import annotations

import hashlib
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api.auth.principal import unauthenticated
from api.auth.schemas import LoginRequest, Me, RefreshRequest, RegisterRequest, TokenResponse, User
from api.context import event_metadata
from api.errors import ApiError
from api.ratelimit import enforce
from api.services import Services
from domain.shared.principal import Principal
from infra.identity.accounts import Account, Accounts, Tokens


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

    @post("/register", operation_id="Register", summary="Create an account (the first one becomes admin)")
    async def register(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], data: JSONBody[RegisterRequest]
    ) -> TokenResponse:
        ip, agent = _client(request)
        await enforce(services.redis, "auth-ip", ip or "unknown", services.settings.auth_rate_per_ip)
        if not services.settings.registration_open:
            raise ApiError(403, "registration_closed", "Registration is closed on this instance; ask an admin.")
        async with services.db.write() as session:
            accounts = Accounts(session, services.passwords, services.token_signer())
            tokens = await accounts.register(
                data.email, data.password, data.name, event_metadata(request), ip=ip, agent=agent
            )
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
            tokens = await accounts.login(data.email, data.password, event_metadata(request), ip=ip, agent=agent)
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
        "/logout", operation_id="Logout", summary="End the session behind the presented access token", status_code=204
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


class MeController(Controller):
    path = "/me"
    tags = ["auth"]

    @get("", operation_id="GetMe", summary="The caller: user, tenant and roles")
    async def me(self, services: NamedDependency[Services], principal: NamedDependency[Principal]) -> Me:
        from sqlalchemy import select

        from infra.db.tables.identity import users

        async with services.db.read() as session:
            row = (await session.execute(select(users).where(users.c.id == principal.user_id))).one()
        user = User(
            id=row.id, email=row.email, name=row.name, role=row.role, tenant_id=row.tenant_id, created_at=row.created_at
        )
        return Me(user=user, tenant_id=principal.tenant_id, roles=[principal.role], session_id=principal.session_id)
