"""Keys derived from the master key: one secret to manage, independent keys per purpose."""

from __future__ import annotations

from infra.identity.tokens import TokenSigner
from infra.secrets.service import load_kek
from infra.settings import Settings

ACCESS_TOKEN_AUDIENCE = "liteskill-api"  # noqa: S105 - a JWT audience, not a secret


def access_token_signer(settings: Settings) -> TokenSigner:
    key = load_kek(settings).derive("access-token/v1")
    issuer = (settings.http.public_url or "urn:liteskill").rstrip("/")
    return TokenSigner(key, issuer=issuer, audience=ACCESS_TOKEN_AUDIENCE, access_ttl_s=settings.access_token_ttl_s)
