"""The composition root's container: the long-lived adapters the app and its handlers share."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

from infra.db.engine import Database
from infra.identity.oidc import OidcClient
from infra.identity.passwords import PasswordHasher
from infra.identity.tokens import TokenSigner
from infra.settings import Settings


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    redis: Redis
    passwords: PasswordHasher = field(default_factory=PasswordHasher)
    signer: TokenSigner | None = None
    oidc: OidcClient = field(default_factory=OidcClient)
    """OpenID Connect discovery and key sets, cached briefly across requests."""

    def token_signer(self) -> TokenSigner:
        """The access-token signer, keyed from the master key on first use."""
        if self.signer is None:
            from infra.identity.keys import access_token_signer

            self.signer = access_token_signer(self.settings)
        return self.signer
