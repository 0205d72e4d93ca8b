"""OpenID Connect sign-in (/api/v1/auth/oidc/*): the authorization-code flow with PKCE (S256), a
random state (single use, 10 minutes, bound to its provider) and a nonce checked in the ID token.

The callback answers the usual token JSON, or, when the sign-in started with a ``return_to`` URL (a
browser app), redirects there with a one-time code in the fragment that the app trades for tokens at
``POST /auth/oidc/exchange``: no token ever travels in a URL. ``return_to`` must be on an allowed
origin (LITESKILL_CORS_ORIGINS or the API's own), else anyone could collect codes with a crafted link.
Providers are managed in ``api.auth.oidc_providers``.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.response import Redirect
from msgspec import Meta

from api.auth.principal import unauthenticated
from api.auth.schemas import TokenResponse, User
from api.context import event_metadata
from api.errors import ApiError
from api.problem import FieldError
from api.ratelimit import enforce
from api.services import Services
from domain.identity.oidc_events import OidcFailure
from domain.shared.events import EventMetadata
from infra.identity import oidc
from infra.identity import oidc_providers as providers
from infra.identity.accounts import Accounts, Tokens
from infra.secrets.service import load_kek

log = logging.getLogger(__name__)


ProviderSlug = Annotated[
    str, PathParameter(description="The provider's slug.", min_length=1, max_length=63, pattern=r"^[a-z0-9-]+$")
]


class OidcExchangeRequest(msgspec.Struct, kw_only=True):
    code: Annotated[str, Meta(min_length=1, max_length=200)]


def base_url(request: Request[Any, Any, Any], services: Services) -> str:
    return (services.settings.http.public_url or str(request.base_url)).rstrip("/")


def callback_url(request: Request[Any, Any, Any], services: Services, slug: str) -> str:
    return f"{base_url(request, services)}/api/v1/auth/oidc/{slug}/callback"


# -- sign-in -----------------------------------------------------------------------------------

ReturnTo = Annotated[
    str | None,
    QueryParameter(
        name="return_to",
        max_length=2000,
        description="Absolute URL on an allowed origin to send the browser to after sign-in, with "
        "`#code=<one-time code>` for `POST /auth/oidc/exchange`. Without it the callback answers the tokens.",
    ),
]
CodeParam = Annotated[str | None, QueryParameter(name="code", max_length=2000)]
StateParam = Annotated[str | None, QueryParameter(name="state", max_length=200)]  # `state` is a reserved kwarg
ErrorParam = Annotated[str | None, QueryParameter(name="error", max_length=200)]
ErrorDescriptionParam = Annotated[str | None, QueryParameter(name="error_description", max_length=2000)]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_ERROR_TEXT = re.compile(r"[^\x20-\x7e]")


def _origin(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    port = port if port is not None else _DEFAULT_PORTS[parts.scheme]
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def _check_return_to(value: str, request: Request[Any, Any, Any], services: Services) -> str:
    # "*" in the CORS origins does not open this: a code sent to any site would be a stolen sign-in.
    allowed = {_origin(o) for o in services.settings.http.cors_origins if o != "*"}
    allowed.add(_origin(base_url(request, services)))
    origin = _origin(value)
    if origin is None or origin not in allowed or "\\" in value:
        raise ApiError(
            400,
            "invalid_return_to",
            "return_to must be an absolute URL on an allowed origin.",
            errors=[FieldError(detail="Not an allowed URL", code="invalid_return_to", parameter="return_to")],
        )
    return value


def _client(request: Request[Any, Any, Any]) -> tuple[str | None, str | None]:
    return (request.client.host if request.client else None), request.headers.get("user-agent")


def _tokens(t: Tokens) -> Response[TokenResponse]:
    a = t.account
    user = User(id=a.id, email=a.email, name=a.name, role=a.role, tenant_id=a.tenant_id, created_at=a.created_at)
    body = TokenResponse(user=user, access_token=t.access_token, refresh_token=t.refresh_token, expires_in=t.expires_in)
    return Response(body, headers={"Cache-Control": "no-store"})


def _login_failed() -> ApiError:
    return ApiError(401, "oidc_login_failed", "Signing in with this provider failed; try again.")


_INVALID_STATE = "The sign-in attempt is unknown, expired or was already used; start again."


class OidcLoginController(Controller):
    path = "/auth/oidc"
    tags = ["auth"]

    @get(
        "/{provider:str}/authorize",
        operation_id="StartOidcLogin",
        summary="Start signing in with an OpenID Connect provider (redirects to it)",
        status_code=302,
        response_headers=[
            ResponseHeader(name="Location", description="The provider's authorization URL.", documentation_only=True)
        ],
        responses={
            400: ResponseSpec(None, description="`return_to` is not on an allowed origin (`invalid_return_to`)."),
            404: ResponseSpec(None, description="No enabled provider with this slug (`oidc_provider_not_found`)."),
            502: ResponseSpec(None, description="The provider's discovery failed (`oidc_discovery_failed`)."),
        },
    )
    async def start_oidc_login(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        provider: ProviderSlug,
        return_to: ReturnTo = None,
    ) -> Redirect:
        ip, _ = _client(request)
        await enforce(services.redis, "auth-ip", ip or "unknown", services.settings.auth_rate_per_ip)
        async with services.db.read() as session:
            found = await providers.by_slug(session, provider)
        if return_to is not None:
            _check_return_to(return_to, request, services)
        try:
            discovery = await services.oidc.discover(found.issuer)
        except oidc.OidcError as exc:
            log.warning("oidc discovery failed", extra={"provider": found.slug, "reason": exc.reason})
            raise ApiError(
                502, "oidc_discovery_failed", "The identity provider cannot be reached; try later."
            ) from None
        verifier, challenge = oidc.pkce_pair()
        nonce = oidc.new_nonce()
        redirect_uri = callback_url(request, services, found.slug)
        state = await oidc.save_state(
            services.redis,
            oidc.LoginState(
                provider_id=str(found.id),
                nonce=nonce,
                verifier=verifier,
                redirect_uri=redirect_uri,
                return_to=return_to,
            ),
        )
        url = oidc.authorization_url(
            discovery,
            client_id=found.client_id,
            redirect_uri=redirect_uri,
            scopes=found.scopes,
            state=state,
            nonce=nonce,
            challenge=challenge,
        )
        return Redirect(url, status_code=302, headers={"Cache-Control": "no-store"})

    @get(
        "/{provider:str}/callback",
        operation_id="FinishOidcLogin",
        summary="Where the provider sends the browser back: signs in and answers tokens (or redirects)",
        responses={
            302: ResponseSpec(
                None, description="Sent to the `return_to` of the sign-in, with `#code=<one-time code>`."
            ),
            400: ResponseSpec(None, description="`invalid_oidc_state` or the provider's `oidc_error`."),
            401: ResponseSpec(None, description="The provider's answer failed verification (`oidc_login_failed`)."),
            403: ResponseSpec(None, description="A new identity while sign-up is closed (`registration_closed`)."),
            404: ResponseSpec(None, description="No enabled provider with this slug (`oidc_provider_not_found`)."),
            409: ResponseSpec(None, description="An account with this email exists (`account_exists`)."),
        },
    )
    async def finish_oidc_login(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        provider: ProviderSlug,
        code: CodeParam = None,
        oidc_state: StateParam = None,
        error: ErrorParam = None,
        error_description: ErrorDescriptionParam = None,
    ) -> Response[TokenResponse]:
        ip, agent = _client(request)
        await enforce(services.redis, "auth-ip", ip or "unknown", services.settings.auth_rate_per_ip)
        async with services.db.read() as session:
            found = await providers.by_slug(session, provider)
        saved = await oidc.take_state(services.redis, oidc_state) if oidc_state else None
        if error is not None:
            text = _ERROR_TEXT.sub("", error_description or "")[:300]
            detail = f"The identity provider refused the sign-in ({_ERROR_TEXT.sub('', error)})"
            raise ApiError(400, "oidc_error", f"{detail}: {text}" if text else f"{detail}.")
        if saved is None or saved.provider_id != str(found.id):
            raise ApiError(400, "invalid_oidc_state", _INVALID_STATE)
        if not code:
            raise ApiError(
                400,
                "validation_error",
                "The request is not valid.",
                errors=[FieldError(detail="The code is missing", code="missing", parameter="code")],
            )
        meta = event_metadata(request)
        try:
            discovery = await services.oidc.discover(found.issuer)
            async with services.db.read() as session:
                secret = await providers.client_secret(session, load_kek(services.settings), found)
            id_token = await services.oidc.exchange_code(
                discovery,
                client_id=found.client_id,
                client_secret=secret,
                code=code,
                redirect_uri=saved.redirect_uri,
                verifier=saved.verifier,
            )
        except oidc.OidcError as exc:
            await self._fail(services, found, "token_exchange_failed", None, exc.reason, meta)
        try:
            claims = await services.oidc.verify_id_token(
                id_token, discovery, client_id=found.client_id, nonce=saved.nonce
            )
        except oidc.OidcError as exc:
            await self._fail(services, found, "id_token_invalid", None, exc.reason, meta)
        disabled = False
        async with services.db.write() as session:
            accounts = Accounts(session, services.passwords, services.token_signer())
            try:
                account, meta = await providers.sign_in(
                    accounts, found, claims, registration_default=services.settings.registration_open, meta=meta
                )
            except providers.OidcUserDisabled:
                disabled = True
            else:
                if saved.return_to is None:
                    return _tokens(await accounts.start_session(account, "oidc", meta, ip=ip, agent=agent))
        if disabled:
            await self._fail(services, found, "disabled", str(claims["sub"]), "user disabled", meta)
        grant = oidc.LoginGrant(user_id=str(account.id), tenant_id=str(account.tenant_id))
        login_code = await oidc.save_login_code(services.redis, grant)
        assert saved.return_to is not None
        parts = urlsplit(saved.return_to)
        target = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, f"code={login_code}"))
        return Redirect(target, status_code=302, headers={"Cache-Control": "no-store"})

    @staticmethod
    async def _fail(
        services: Services,
        provider: providers.OidcProvider,
        reason: OidcFailure,
        subject: str | None,
        detail: str,
        meta: EventMetadata,
    ) -> NoReturn:
        log.warning("oidc login failed", extra={"provider": provider.slug, "reason": detail})
        async with services.db.write() as session:
            await providers.record_failure(session, provider, reason, subject, meta)
        raise _login_failed()

    @post(
        "/exchange",
        operation_id="ExchangeOidcLoginCode",
        summary="Trade the one-time code of a browser sign-in for tokens",
        status_code=200,
        responses={401: ResponseSpec(None, description="Unknown, expired or used code (`unauthenticated`).")},
    )
    async def exchange_oidc_login_code(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], data: JSONBody[OidcExchangeRequest]
    ) -> Response[TokenResponse]:
        ip, agent = _client(request)
        await enforce(services.redis, "auth-ip", ip or "unknown", services.settings.auth_rate_per_ip)
        grant = await oidc.take_login_code(services.redis, data.code)
        if grant is None:
            raise unauthenticated("The sign-in code is not valid, has expired or was already used.")
        async with services.db.write() as session:
            account = await providers.account_of(session, uuid.UUID(grant.user_id), uuid.UUID(grant.tenant_id))
            if account is None:
                raise unauthenticated("The sign-in code is not valid, has expired or was already used.")
            accounts = Accounts(session, services.passwords, services.token_signer())
            meta = msgspec.structs.replace(
                event_metadata(request), tenant_id=str(account.tenant_id), actor=f"user:{account.id}"
            )
            tokens = await accounts.start_session(account, "oidc", meta, ip=ip, agent=agent)
        return _tokens(tokens)
