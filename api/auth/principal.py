"""The ``principal`` dependency: ``Authorization: Bearer <access token or API key>`` -> ``Principal``.

A token starting with ``lsk_`` is an API key; anything else is an access JWT. Every failure (no
header, another scheme, a bad or expired token or key, a revoked session or key, a disabled user)
is the same 401 ``unauthenticated`` problem with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from api.errors import ApiError
from api.services import Services
from domain.shared.errors import Unauthenticated
from domain.shared.principal import Principal
from infra.identity import api_keys
from infra.identity.accounts import resolve


def unauthenticated(detail: str = "Sign in to use this route.") -> ApiError:
    return ApiError(401, "unauthenticated", detail, headers={"WWW-Authenticate": 'Bearer realm="liteskill"'})


def bearer_token(request: Request[Any, Any, Any]) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated()
    return token.strip()


async def provide_principal(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Principal:
    token = bearer_token(request)
    if api_keys.is_api_key(token):
        return await _key_principal(services, token)
    try:
        claims = services.token_signer().verify(token)
    except Unauthenticated:
        raise unauthenticated("The access token is not valid or has expired.") from None
    async with services.db.read() as session:
        principal = await resolve(session, claims)
    if principal is None:
        raise unauthenticated("The session behind this token has ended.")
    return principal


async def _key_principal(services: Services, token: str) -> Principal:
    async with services.db.read() as session:
        use = await api_keys.verify(session, token)
    if use is None:
        raise unauthenticated("The API key is not valid, has expired or was revoked.")
    if use.touch:  # at most once a minute per key, not a write per request
        async with services.db.write() as session:
            await api_keys.touch(session, use.key_id)
    return use.principal
