"""The OpenID Connect relying party: discovery and JWKS (cached briefly), the login state kept in
Redis, the authorization-code exchange with PKCE, and ID token verification with joserfc.

Every failure of the protocol is an ``OidcError`` whose ``reason`` is meant for logs only: the
edge answers one generic problem, so an attacker probing the callback learns nothing.

ID tokens are accepted only when signed with an asymmetric algorithm (RS256, PS256, ES256,
EdDSA) by a key of the issuer's JWKS named by ``kid``; ``none`` and the HMAC algorithms are never
accepted (an HS256 token "signed" with the public key is the classic confusion attack). Claims:
``iss`` equals the configured issuer, ``aud`` contains the client id (and ``azp``, when present
or when there are several audiences, is the client id), ``exp``/``iat`` within a small leeway,
``nonce`` equals the one stored with the state.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import msgspec
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from redis.asyncio import Redis

ALLOWED_ALGS = ("RS256", "PS256", "ES256", "EdDSA")
LEEWAY_S = 60
STATE_TTL_S = 600
LOGIN_CODE_TTL_S = 60
METADATA_TTL_S = 300
"""Discovery documents and key sets are reused this long; an unknown ``kid`` refetches sooner."""
JWKS_REFRESH_MIN_S = 10
"""An unknown ``kid`` refetches the key set at most this often (keys rotate, attackers probe)."""
HTTP_TIMEOUT_S = 10.0
MAX_DOCUMENT_BYTES = 512 * 1024

_STATE_KEY = "liteskill:oidc:state:"
_LOGIN_KEY = "liteskill:oidc:login:"


class OidcError(Exception):
    """The OpenID provider or its answer failed a check; ``reason`` is for logs, never clients."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_acceptable_url(url: str) -> bool:
    """https anywhere; plain http only to a loopback host (local IdPs and tests)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if not parts.netloc or parts.hostname is None:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))


# -- discovery and keys ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Discovery:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


class _DiscoveryDocument(msgspec.Struct):
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(slots=True)
class OidcClient:
    """Fetches provider metadata over HTTP and keeps it for ``METADATA_TTL_S``. One per app."""

    transport: httpx.AsyncBaseTransport | None = None
    clock: Callable[[], float] = time.monotonic
    _discovery: dict[str, tuple[float, Discovery]] = field(default_factory=dict)
    _jwks: dict[str, tuple[float, KeySet]] = field(default_factory=dict)

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False, transport=self.transport)

    async def _get_json(self, url: str) -> Any:
        try:
            async with self._http() as http:
                resp = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OidcError(f"GET {url} failed: {exc.__class__.__name__}") from None
        if resp.status_code != 200:
            raise OidcError(f"GET {url} answered {resp.status_code}")
        if len(resp.content) > MAX_DOCUMENT_BYTES:
            raise OidcError(f"GET {url} answered a document too large")
        try:
            return msgspec.json.decode(resp.content)
        except msgspec.DecodeError:
            raise OidcError(f"GET {url} answered no JSON") from None

    async def discover(self, issuer: str, *, fresh: bool = False) -> Discovery:
        cached = self._discovery.get(issuer)
        if cached is not None and not fresh and cached[0] > self.clock():
            return cached[1]
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            doc = msgspec.convert(await self._get_json(url), _DiscoveryDocument)
        except msgspec.ValidationError as exc:
            raise OidcError(f"discovery document of {issuer} is not valid: {exc}") from None
        if doc.issuer != issuer:  # OpenID Connect Discovery 1.0, section 4.3
            raise OidcError(f"discovery document names issuer {doc.issuer!r}, not {issuer!r}")
        for endpoint in (doc.authorization_endpoint, doc.token_endpoint, doc.jwks_uri):
            if not is_acceptable_url(endpoint):
                raise OidcError(f"discovery endpoint {endpoint!r} is not https")
        found = Discovery(doc.issuer, doc.authorization_endpoint, doc.token_endpoint, doc.jwks_uri)
        self._discovery[issuer] = (self.clock() + METADATA_TTL_S, found)
        return found

    async def key_set(self, jwks_uri: str, *, refresh: bool = False) -> KeySet:
        cached = self._jwks.get(jwks_uri)
        now = self.clock()
        if cached is not None:
            expires, keys = cached
            age = METADATA_TTL_S - (expires - now)
            if expires > now and not (refresh and age >= JWKS_REFRESH_MIN_S):
                return keys
        raw = await self._get_json(jwks_uri)
        try:
            keys = KeySet.import_key_set(raw)
        except (JoseError, KeyError, TypeError, ValueError) as exc:
            raise OidcError(f"JWKS at {jwks_uri} is not valid: {exc.__class__.__name__}") from None
        self._jwks[jwks_uri] = (now + METADATA_TTL_S, keys)
        return keys

    async def exchange_code(
        self,
        discovery: Discovery,
        *,
        client_id: str,
        client_secret: str | None,
        code: str,
        redirect_uri: str,
        verifier: str,
    ) -> str:
        """The ID token the token endpoint answers for ``code``. With a secret the client
        authenticates with HTTP Basic (client_secret_basic); without, it is a public client whose
        proof is the PKCE verifier alone."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        if client_secret:
            # RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
            basic = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode("ascii")
        else:
            form["client_id"] = client_id
        try:
            async with self._http() as http:
                resp = await http.post(discovery.token_endpoint, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise OidcError(f"token request failed: {exc.__class__.__name__}") from None
        if resp.status_code != 200:
            raise OidcError(f"token endpoint answered {resp.status_code}: {resp.text[:200]}")
        try:
            body = msgspec.json.decode(resp.content)
        except msgspec.DecodeError:
            raise OidcError("token endpoint answered no JSON") from None
        id_token = body.get("id_token") if isinstance(body, dict) else None
        if not isinstance(id_token, str) or not id_token:
            raise OidcError("token response has no id_token")
        return id_token

    async def verify_id_token(
        self, id_token: str, discovery: Discovery, *, client_id: str, nonce: str, now: int | None = None
    ) -> dict[str, Any]:
        """The claims of a verified ID token (see the module docstring for the rules)."""
        try:
            header = jws.extract_compact(id_token.encode()).protected
        except (JoseError, ValueError, TypeError) as exc:
            raise OidcError(f"id_token is not a compact JWS: {exc.__class__.__name__}") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGS:
            raise OidcError(f"id_token alg {alg!r} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise OidcError("id_token kid is not a string")
        keys = await self.key_set(discovery.jwks_uri)
        try:
            key = keys.get_by_kid(kid, {"use": "sig"})  # encryption keys never verify
        except JoseError:
            keys = await self.key_set(discovery.jwks_uri, refresh=True)  # the provider may have rotated
            try:
                key = keys.get_by_kid(kid, {"use": "sig"})
            except JoseError:
                raise OidcError(f"no key {kid!r} in the provider's JWKS") from None
        try:
            token = jwt.decode(id_token, key, algorithms=list(ALLOWED_ALGS))
        except (JoseError, ValueError, TypeError) as exc:
            raise OidcError(f"id_token signature is not valid: {exc.__class__.__name__}") from None
        claims = token.claims
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=LEEWAY_S,
            iss={"essential": True, "value": discovery.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": client_id},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise OidcError(f"id_token claims rejected: {exc}") from None
        aud = claims["aud"]
        azp = claims.get("azp")
        if (azp is not None or (isinstance(aud, list) and len(aud) > 1)) and azp != client_id:
            raise OidcError(f"id_token azp {azp!r} is not the client id")
        return dict(claims)


# -- PKCE, state and one-time login codes --------------------------------------------------------


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge), RFC 7636."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorization_url(
    discovery: Discovery,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: list[str],
    state: str,
    nonce: str,
    challenge: str,
) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    separator = "&" if "?" in discovery.authorization_endpoint else "?"
    return f"{discovery.authorization_endpoint}{separator}{query}"


class LoginState(msgspec.Struct, kw_only=True):
    """What the callback needs back: kept in Redis under the state, for one use."""

    provider_id: str
    nonce: str
    verifier: str
    redirect_uri: str
    return_to: str | None = None


class LoginGrant(msgspec.Struct, kw_only=True):
    """A signed-in user waiting for the client to trade the one-time code for tokens."""

    user_id: str
    tenant_id: str


def _digest(value: str) -> str:
    # Keys hold a hash: a Redis dump or MONITOR does not hand out live states or codes.
    return hashlib.sha256(value.encode()).hexdigest()


async def save_state(redis: Redis, state: LoginState) -> str:
    """A new random state (256 bits) naming ``state`` for ``STATE_TTL_S``."""
    token = secrets.token_urlsafe(32)
    await redis.set(_STATE_KEY + _digest(token), msgspec.json.encode(state), ex=STATE_TTL_S)
    return token


async def take_state(redis: Redis, token: str) -> LoginState | None:
    """The state named by ``token``, deleted as it is read (single use); None when unknown."""
    raw = await redis.getdel(_STATE_KEY + _digest(token))
    if raw is None:
        return None
    return msgspec.json.decode(raw, type=LoginState)


async def save_login_code(redis: Redis, grant: LoginGrant) -> str:
    code = secrets.token_urlsafe(32)
    await redis.set(_LOGIN_KEY + _digest(code), msgspec.json.encode(grant), ex=LOGIN_CODE_TTL_S)
    return code


async def take_login_code(redis: Redis, code: str) -> LoginGrant | None:
    raw = await redis.getdel(_LOGIN_KEY + _digest(code))
    if raw is None:
        return None
    return msgspec.json.decode(raw, type=LoginGrant)
