"""A small but real OpenID provider for tests, served by uvicorn on a loopback port in a thread.

It speaks the authorization-code flow: discovery, JWKS, ``/authorize`` (auto-approves ``user``
and redirects back with ``code`` and ``state``), and ``/token``, which checks client
authentication (client_secret_basic, or a public client by ``client_id``), the redirect URI, the
PKCE S256 verifier and single use of the code, then answers an RS256 ID token signed with
joserfc. ``tweaks`` make it misbehave on purpose (wrong nonce, audience, expiry, foreign key,
``alg: none``, HS256, ...), so tests can check that the relying party refuses each.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.fakes.serving import ThreadedServer, read_body


@dataclass
class FakeUser:
    sub: str = "user-1"
    email: str | None = "ada@idp.example"
    name: str | None = "Ada IdP"
    email_verified: bool | None = True


@dataclass
class Client:
    client_id: str
    secret: str | None = None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class FakeOidcProvider:
    clients: dict[str, Client] = field(default_factory=dict)
    user: FakeUser = field(default_factory=FakeUser)
    tweaks: dict[str, Any] = field(default_factory=dict)
    """``nonce``, ``aud``, ``iss``, ``azp``, ``exp_offset``, ``foreign_key``, ``alg`` ("none" or
    "HS256"), ``authorize_error`` (an OAuth error code to redirect with)."""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "fake-1"}))
    issuer: str = ""
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    _runner: ThreadedServer | None = None

    def reset(self) -> None:
        self.clients.clear()
        self.user = FakeUser()
        self.tweaks.clear()
        self.codes.clear()
        self.token_requests.clear()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._runner = ThreadedServer(self.app, "the fake OIDC provider", log_level="warning")
        self.issuer = self._runner.start()

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()

    # -- ASGI ---------------------------------------------------------------------------------

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        status, out_headers, payload = self.handle(scope["method"], scope["path"], query, headers, body)
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        await send({"type": "http.response.body", "body": payload})

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if method == "GET" and path == "/.well-known/openid-configuration":
            return self._json(
                200,
                {
                    "issuer": self.issuer,
                    "authorization_endpoint": f"{self.issuer}/authorize",
                    "token_endpoint": f"{self.issuer}/token",
                    "jwks_uri": f"{self.issuer}/jwks",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
                },
            )
        if method == "GET" and path == "/jwks":
            return self._json(200, {"keys": [self.key.as_dict(private=False, use="sig", alg="RS256")]})
        if method == "GET" and path == "/authorize":
            return self._authorize(query)
        if method == "POST" and path == "/token":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            return self._token(form, headers)
        return self._json(404, {"error": "not_found"})

    @staticmethod
    def _json(status: int, data: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return status, [(b"content-type", b"application/json")], json.dumps(data).encode()

    @staticmethod
    def _redirect(url: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return 302, [(b"location", url.encode())], b""

    def _authorize(self, q: dict[str, str]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        client = self.clients.get(q.get("client_id", ""))
        redirect_uri = q.get("redirect_uri", "")
        if client is None or not redirect_uri:
            return self._json(400, {"error": "invalid_request", "error_description": "unknown client"})
        state = q.get("state", "")
        if "authorize_error" in self.tweaks:
            target = urlencode({"error": self.tweaks["authorize_error"], "error_description": "denied", "state": state})
            return self._redirect(f"{redirect_uri}?{target}")
        if (
            q.get("response_type") != "code"
            or q.get("code_challenge_method") != "S256"
            or "openid" not in q.get("scope", "").split(" ")
        ):
            return self._json(400, {"error": "invalid_request"})
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "challenge": q.get("code_challenge", ""),
            "nonce": q.get("nonce"),
            "scope": q.get("scope"),
        }
        return self._redirect(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}")

    def _authenticate(self, form: dict[str, str], headers: dict[str, str]) -> Client | None:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:]).decode()
            except ValueError:
                return None
            client_id, _, secret = raw.partition(":")
            client = self.clients.get(unquote(client_id))
            if client is None or client.secret is None or not secrets.compare_digest(client.secret, unquote(secret)):
                return None
            return client
        client = self.clients.get(form.get("client_id", ""))
        if client is None or client.secret is not None:  # a confidential client must authenticate
            return None
        return client

    def _token(self, form: dict[str, str], headers: dict[str, str]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.token_requests.append({"form": form, "authorization": headers.get("authorization")})
        client = self._authenticate(form, headers)
        if client is None:
            return self._json(401, {"error": "invalid_client"})
        if form.get("grant_type") != "authorization_code":
            return self._json(400, {"error": "unsupported_grant_type"})
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or grant["client_id"] != client.client_id:
            return self._json(400, {"error": "invalid_grant"})
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return self._json(400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"})
        verifier = form.get("code_verifier", "")
        if _b64url(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
            return self._json(400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
        return self._json(
            200,
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self.id_token(client.client_id, grant["nonce"]),
            },
        )

    def id_token(self, client_id: str, nonce: str | None) -> str:
        t = self.tweaks
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": t.get("iss", self.issuer),
            "sub": self.user.sub,
            "aud": t.get("aud", client_id),
            "iat": now,
            "exp": now + int(t.get("exp_offset", 300)),
            "nonce": t.get("nonce", nonce),
        }
        if "azp" in t:
            claims["azp"] = t["azp"]
        if self.user.email is not None:
            claims["email"] = self.user.email
        if self.user.email_verified is not None:
            claims["email_verified"] = self.user.email_verified
        if self.user.name is not None:
            claims["name"] = self.user.name
        alg = t.get("alg", "RS256")
        if alg == "none":
            header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            return f"{header}.{_b64url(json.dumps(claims).encode())}."
        if alg == "HS256":
            # The key-confusion attack: HMAC keyed with the public key, which anyone can fetch.
            # (joserfc refuses to build that key, so the token is made by hand.)
            signing_input = (
                _b64url(json.dumps({"alg": "HS256", "kid": "fake-1", "typ": "JWT"}).encode())
                + "."
                + _b64url(json.dumps(claims).encode())
            )
            mac = hmac.new(self.key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
            return f"{signing_input}.{_b64url(mac)}"
        if t.get("foreign_key"):
            other = RSAKey.generate_key(2048, parameters={"kid": str(t.get("foreign_kid", "fake-1"))})
            return jwt.encode({"alg": "RS256", "kid": other.kid}, claims, other)
        return jwt.encode({"alg": "RS256", "kid": "fake-1"}, claims, self.key)
