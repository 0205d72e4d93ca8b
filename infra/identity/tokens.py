"""Short-lived access tokens: JWTs signed with one pinned algorithm, checked strictly.

A token is accepted only if its signature verifies with the pinned algorithm (a token naming any
other ``alg``, ``none`` included, is refused), its header ``typ`` is ``at+jwt``, and it carries
``iss``, ``aud``, ``sub``, ``iat``, ``exp`` and ``jti`` with the expected issuer and audience. Every
failure is the same ``Unauthenticated`` error: callers learn nothing about which check failed.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

from domain.shared.errors import Unauthenticated

TOKEN_TYPE = "at+jwt"  # noqa: S105 - a JOSE media type, not a secret
ALGORITHM = "HS256"
_REQUIRED = ["iss", "aud", "sub", "iat", "exp", "jti"]


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    tenant_id: str
    session_id: str
    scopes: tuple[str, ...]
    issued_at: int
    expires_at: int
    token_id: str


class TokenSigner:
    def __init__(self, key: bytes, *, issuer: str, audience: str, access_ttl_s: int = 900, leeway_s: int = 5) -> None:
        if len(key) < 32:
            raise ValueError("the signing key must have at least 32 bytes")
        self._key = key
        self.issuer = issuer
        self.audience = audience
        self.access_ttl_s = access_ttl_s
        self.leeway_s = leeway_s

    def __repr__(self) -> str:  # never show the key
        return f"TokenSigner(issuer={self.issuer!r}, audience={self.audience!r})"

    def issue(
        self, *, subject: str, tenant_id: str, session_id: str, scopes: tuple[str, ...] = (), now: int | None = None
    ) -> str:
        issued = int(time.time()) if now is None else now
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "tid": tenant_id,
            "sid": session_id,
            "scp": " ".join(scopes),
            "iat": issued,
            "exp": issued + self.access_ttl_s,
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"typ": TOKEN_TYPE})

    def verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != TOKEN_TYPE or header.get("alg") != ALGORITHM:
                raise jwt.InvalidTokenError("unexpected header")
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": _REQUIRED, "verify_signature": True},
            )
            return AccessClaims(
                subject=str(claims["sub"]),
                tenant_id=str(claims["tid"]),
                session_id=str(claims["sid"]),
                scopes=tuple(str(claims.get("scp", "")).split()),
                issued_at=int(claims["iat"]),
                expires_at=int(claims["exp"]),
                token_id=str(claims["jti"]),
            )
        except (jwt.InvalidTokenError, KeyError, ValueError, TypeError) as exc:
            raise Unauthenticated("The access token is not valid.", code="invalid_token") from exc
