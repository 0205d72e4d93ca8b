"""Resolve a model id to a ready adapter for the caller: ``chat_model``, ``embedding_model`` and
``reranker`` check the caller may use the model (viewer on it), decrypt its provider's credentials,
and build the adapter on a guarded HTTP client bound to the credentials' host. Built adapters are
cached per (provider id, provider version, model id, model version, tenant allow-list), so a change
to either row builds new ones and requests reuse connections otherwise."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.llm.ports import ChatModel, EmbeddingModel, Reranker
from domain.shared import authz
from domain.shared.authz import Action
from domain.shared.errors import Forbidden, Invalid, NotFound
from domain.shared.principal import Principal
from infra.access import acl
from infra.db.tables.llm import models, providers
from infra.llm import providers as prov
from infra.llm.clients import Connection
from infra.llm.openai_chat import MaxTokensField, OpenAIChatModel
from infra.llm.openai_embeddings import OpenAIEmbeddingModel
from infra.llm.rerank import HttpReranker
from infra.llm.streaming import StreamPolicy
from infra.net.outbound import OutboundGuard, guarded_client
from infra.secrets.envelope import Kek


class ModelNotFound(NotFound):
    """No model with this id visible to you."""

    code = "model_not_found"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: uuid.UUID
    provider_id: uuid.UUID
    provider_kind: str
    name: str
    upstream_id: str
    kind: str
    context_window: int | None
    max_output_tokens: int | None
    dimensions: int | None
    capabilities: dict[str, Any]
    pricing: dict[str, Any] | None


async def load_model(
    session: AsyncSession, principal: Principal, model_id: uuid.UUID, action: Action, *, lock: bool = False
) -> Any:
    """The model's row if the caller's role allows ``action``: 404 if invisible, 403 otherwise."""
    query = select(models).where(models.c.id == model_id, models.c.tenant_id == principal.tenant_id)
    row = (await session.execute(query.with_for_update() if lock else query)).one_or_none()
    if row is None:
        raise ModelNotFound()
    role = await acl.effective_role(session, principal, "model", model_id)
    if role is None:
        raise ModelNotFound()
    if not authz.can(role, action):
        raise Forbidden(f"Your role ({role}) does not allow this action ({action}).")
    return row


class Registry:
    """Holds the built adapters; one per process (the composition root owns it)."""

    def __init__(self, kek: Kek, guard: OutboundGuard, policy: StreamPolicy | None = None) -> None:
        self.kek = kek
        self.guard = guard
        self.policy = policy or StreamPolicy()
        self._cache: dict[tuple[Any, ...], Any] = {}

    async def _resolve(
        self, session: AsyncSession, principal: Principal, model_id: uuid.UUID, kind: str
    ) -> tuple[ModelInfo, tuple[Any, ...], Connection | None]:
        row = await load_model(session, principal, model_id, "read")
        if row.kind != kind:
            raise Invalid(f"The model is a {row.kind} model, not a {kind} model.", code="model_kind_mismatch")
        if not row.enabled:
            raise Invalid("The model is disabled.", code="model_disabled")
        p = (await session.execute(select(providers).where(providers.c.id == row.provider_id))).one()
        provider = prov.provider_of(p)
        if not provider.enabled:
            raise Invalid("The model's provider is disabled.", code="provider_disabled")
        info = ModelInfo(
            id=row.id,
            provider_id=provider.id,
            provider_kind=provider.kind,
            name=row.name,
            upstream_id=row.upstream_id,
            kind=row.kind,
            context_window=row.context_window,
            max_output_tokens=row.max_output_tokens,
            dimensions=row.dimensions,
            capabilities=dict(row.capabilities or {}),
            pricing=dict(row.pricing) if row.pricing else None,
        )
        allow = await prov.tenant_allow(session, provider.tenant_id)
        key = (provider.id, provider.version, row.id, row.version, tuple(allow))
        if key in self._cache:
            return info, key, None
        credentials = await prov.decrypt(session, self.kek, provider)
        guard = self.guard.with_allow(allow)
        conn = Connection(provider, credentials, guard)
        url = conn.base_url
        if url is not None and provider.kind != "bedrock":
            await guard.check_url(url)
        return info, key, conn

    async def chat_model(
        self, session: AsyncSession, principal: Principal, model_id: uuid.UUID
    ) -> tuple[ChatModel, ModelInfo]:
        info, key, conn = await self._resolve(session, principal, model_id, "chat")
        if conn is not None:
            built: ChatModel
            if conn.provider.kind in ("openai", "openai_compatible"):
                field: MaxTokensField = "max_completion_tokens" if conn.provider.kind == "openai" else "max_tokens"
                built = OpenAIChatModel(conn.openai(), policy=self.policy, max_tokens_field=field)
            elif conn.provider.kind == "anthropic":
                from infra.llm.anthropic_chat import AnthropicChatModel  # the SDK loads on first use

                built = AnthropicChatModel(conn.anthropic(), self.policy, info.max_output_tokens or 4096)
            else:
                from infra.llm.bedrock_chat import BedrockChatModel  # boto3 loads on first use

                built = BedrockChatModel(conn.bedrock(), self.policy)
            self._cache[key] = built
        return self._cache[key], info

    async def embedding_model(
        self, session: AsyncSession, principal: Principal, model_id: uuid.UUID
    ) -> tuple[EmbeddingModel, ModelInfo]:
        info, key, conn = await self._resolve(session, principal, model_id, "embedding")
        if conn is not None:
            built: EmbeddingModel
            if conn.provider.kind in ("openai", "openai_compatible"):
                client = conn.openai(timeout_s=120, max_retries=2)
                built = OpenAIEmbeddingModel(client, info.upstream_id, dimensions=info.dimensions)
            elif conn.provider.kind == "bedrock":
                from infra.llm.bedrock_embeddings import BedrockEmbeddingModel

                built = BedrockEmbeddingModel(conn.bedrock(timeout_s=60), info.upstream_id, dimensions=info.dimensions)
            else:
                raise Invalid("This provider kind serves no embedding models.", code="model_kind_mismatch")
            self._cache[key] = built
        return self._cache[key], info

    async def reranker(
        self, session: AsyncSession, principal: Principal, model_id: uuid.UUID
    ) -> tuple[Reranker, ModelInfo]:
        info, key, conn = await self._resolve(session, principal, model_id, "rerank")
        if conn is not None:
            built: Reranker
            if conn.provider.kind == "bedrock":
                from infra.llm.bedrock_embeddings import BedrockReranker

                built = BedrockReranker(conn.bedrock(timeout_s=60), info.upstream_id)
            elif conn.base_url is not None and conn.provider.kind in ("openai", "openai_compatible"):
                built = HttpReranker(
                    model=info.upstream_id,
                    base_url=conn.base_url,
                    api_key=conn.api_key,
                    headers=conn.headers,
                    query=conn.query,
                    client=guarded_client(conn.guard, credential_host=conn.provider.credential_host, timeout_s=60),
                )
            else:
                raise Invalid("This provider kind serves no rerank models.", code="model_kind_mismatch")
            self._cache[key] = built
        return self._cache[key], info
