"""The model ports chat, agents and RAG depend on. Adapters (infra/llm) implement them on the
providers' official SDKs; no SDK type crosses these signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import msgspec

from domain.llm.messages import ChatRequest
from domain.llm.stream import StreamEvent, Usage


class ChatModel(Protocol):
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream one model turn (see domain.llm.stream for the event grammar). Closing the
        iterator early (``aclose``, or cancelling the consumer) closes the upstream stream."""
        ...


class Embeddings(msgspec.Struct, frozen=True):
    vectors: list[list[float]]
    """One vector per input text, in input order."""
    usage: Usage


class EmbeddingModel(Protocol):
    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """Embed ``texts`` (the adapter batches as the provider requires); raises ProviderError."""
        ...


class Ranked(msgspec.Struct, frozen=True):
    index: int
    """The document's position in the input."""
    score: float


class Reranking(msgspec.Struct, frozen=True):
    results: list[Ranked]
    """Best first."""
    usage: Usage


class Reranker(Protocol):
    async def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None) -> Reranking:
        """Score ``documents`` against ``query``; raises ProviderError."""
        ...
