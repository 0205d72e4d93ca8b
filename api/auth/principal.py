"""The ``principal`` dependency: ``Authorization: Bearer <access token or API key>`` -> ``Principal``.

A token starting with ``lsk_`` is an API key; anything else is an access JWT. Every failure (no
header, another scheme, a bad or expired token or key, a revoked session or key, a disabled user)
is the same 401 ``unauthenticated`` problem with ``WWW-Authenticate: Bearer``.

This is also the one place where the two checks every credential goes through happen, after it
resolves:

- the per-principal rate limit (LITESKILL_API_RATE_PER_PRINCIPAL a minute; an API key counts in its
  own bucket, a user's signed-in sessions share the user's bucket): 429 ``rate_limited`` over it.
  The decision is left in the request's ASGI scope (``api.ratelimit.remember``) and the request
  middleware adds the ``RateLimit`` headers to the response;
- an API key's scopes (``domain.shared.scopes``): the route's resource comes from its ``opt``
  ``scope`` declaration; 403 ``insufficient_scope`` when the key's scopes do not cover it. A route
  that declares none is open to ``*`` keys only. Signed-in sessions are not narrowed.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from api.auth.scopes import resource_of
from api.errors import ApiError
from api.ratelimit import remember
from api.services import Services
from domain.shared import scopes
from domain.shared.errors import Unauthenticated
from domain.shared.principal import Principal
from infra.identity import api_keys
from infra.identity.auth_cache import token_key
from infra.identity.sessions import resolve


def unauthenticated(detail: str = "Sign in to use this route.") -> ApiError:
    return ApiError(401, "unauthenticated", detail, headers={"WWW-Authenticate": 'Bearer realm="liteskill"'})


def bearer_token(request: Request[Any, Any, Any]) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated()
    return token.strip()


RATE_POLICY = "api"


async def provide_principal(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Principal:
    token = bearer_token(request)
    cache = services.credentials()
    key = token_key(token)
    cached: tuple[Principal, str] | None = cache.get(key)
    if cached is not None:
        principal, bucket = cached
    elif api_keys.is_api_key(token):
        use = await _key_use(services, token)
        principal, bucket = use.principal, f"key:{use.key_id}"
        valid_for = use.expires_at.timestamp() - time.time() if use.expires_at is not None else None
        cache.put(key, principal.user_id, (principal, bucket), valid_for_s=valid_for)
    else:
        try:
            claims = services.token_signer().verify(token)
        except Unauthenticated:
            raise unauthenticated("The access token is not valid or has expired.") from None
        async with services.db.read_statement() as session:  # one round trip
            found = await resolve(session, claims)
        if found is None:
            raise unauthenticated("The session behind this token has ended.")
        principal, bucket = found, f"user:{found.user_id}"
        # Never past the token's own expiry: a hit skips the signature and expiry checks.
        cache.put(key, principal.user_id, (principal, bucket), valid_for_s=claims.expires_at - time.time())
    await _limit(request, services, bucket)
    if principal.session_id is None:
        _check_scope(request, principal)
    return principal


async def _key_use(services: Services, token: str) -> api_keys.KeyUse:
    async with services.db.read_statement() as session:  # one round trip
        use = await api_keys.verify(session, token)
    if use is None:
        raise unauthenticated("The API key is not valid, has expired or was revoked.")
    if use.touch:  # at most once a minute per key (and per cache miss), not a write per request
        async with services.db.write() as session:
            await api_keys.touch(session, use.key_id)
    return use


async def _limit(request: Request[Any, Any, Any], services: Services, bucket: str) -> None:
    limit = services.settings.api_rate_per_principal
    if limit <= 0:
        return
    decision = await services.api_limiter().hit(RATE_POLICY, bucket, limit)
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            "Too many requests; try again later.",
            headers={"Retry-After": str(decision.reset_s), **decision.headers(RATE_POLICY)},
        )
    remember(request.scope, decision, RATE_POLICY)


def _check_scope(request: Request[Any, Any, Any], principal: Principal) -> None:
    resource = resource_of(request.route_handler)
    access = scopes.access_of(request.method)
    if scopes.allows(principal.scopes, resource, access):
        return
    needed = scopes.required(resource, request.method)
    raise ApiError(
        403,
        "insufficient_scope",
        f"This API key's scopes do not include {needed}.",
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
    )
