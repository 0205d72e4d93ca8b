"""OpenID Connect events: provider configuration (stream ``oidc_provider-<id>``), identities linked
to users (stream ``user-<id>``) and failed OIDC sign-ins (the provider's stream). They never carry
the client secret: only whether one is set."""

from __future__ import annotations

import uuid
from typing import Literal

from domain.shared.events import Event, event_type

OidcFailure = Literal["idp_error", "token_exchange_failed", "id_token_invalid", "email_unverified", "disabled"]


@event_type("identity.oidc_provider_created.v1")
class OidcProviderCreated(Event, frozen=True, kw_only=True):
    provider_id: uuid.UUID
    slug: str
    name: str
    issuer: str
    client_id: str
    scopes: list[str]
    enabled: bool
    has_client_secret: bool


@event_type("identity.oidc_provider_updated.v1")
class OidcProviderUpdated(Event, frozen=True, kw_only=True):
    provider_id: uuid.UUID
    changed: list[str]
    """Names of the fields that changed (``client_secret`` when it was set or cleared)."""


@event_type("identity.oidc_provider_deleted.v1")
class OidcProviderDeleted(Event, frozen=True, kw_only=True):
    provider_id: uuid.UUID
    slug: str


@event_type("identity.oidc_identity_linked.v1")
class OidcIdentityLinked(Event, frozen=True, kw_only=True):
    identity_id: uuid.UUID
    user_id: uuid.UUID
    provider_id: uuid.UUID
    issuer: str
    subject: str
    email: str | None


@event_type("identity.oidc_login_failed.v1")
class OidcLoginFailed(Event, frozen=True, kw_only=True):
    provider_id: uuid.UUID
    reason: OidcFailure
    subject: str | None = None
