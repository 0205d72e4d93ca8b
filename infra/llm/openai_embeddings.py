"""Embeddings over the OpenAI ``/embeddings`` API (and OpenAI-compatible servers), on the SDK.

Texts are sent in batches of at most ``batch_size`` (a few batches at a time); vectors come back in
input order whatever order the provider lists them in, and the batches' usage is summed. Failures
raise ``ProviderError`` with the same typed kinds chat uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

import openai
from openai import AsyncOpenAI, omit

from domain.llm.ports import EmbeddingModel, Embeddings
from domain.llm.stream import Failed, ProviderError, Usage
from infra.llm.openai_chat import failure_for_error, openai_client

_EMPTY: Mapping[str, str] = MappingProxyType({})


class OpenAIEmbeddingModel:
    """An ``EmbeddingModel`` on ``client.embeddings.create``."""

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        *,
        batch_size: int = 256,
        concurrency: int = 4,
        dimensions: int | None = None,
    ) -> None:
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be positive")
        self.client = client
        self.model = model
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.dimensions = dimensions

    async def aclose(self) -> None:
        await self.client.close()

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        batches = [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        gate = asyncio.Semaphore(self.concurrency)

        async def run(batch: list[str]) -> tuple[list[list[float]], Usage]:
            async with gate:
                return await self._batch(batch)

        results: list[tuple[list[list[float]], Usage]] = []
        if batches:
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(run(batch)) for batch in batches]
            except* ProviderError as failed:
                raise failed.exceptions[0] from None
            results = [task.result() for task in tasks]
        vectors = [vector for batch_vectors, _ in results for vector in batch_vectors]
        usage = sum((batch_usage for _, batch_usage in results), Usage())
        return Embeddings(vectors=vectors, usage=usage)

    async def _batch(self, batch: list[str]) -> tuple[list[list[float]], Usage]:
        try:
            response = await self.client.embeddings.create(
                model=self.model,
                input=batch,
                encoding_format="float",
                dimensions=self.dimensions if self.dimensions is not None else omit,
            )
        except openai.OpenAIError as exc:
            raise ProviderError(failure_for_error(exc)) from exc
        items = sorted(response.data, key=lambda item: item.index)
        if [item.index for item in items] != list(range(len(batch))):
            raise ProviderError(
                Failed(kind="bad_response", message=f"expected {len(batch)} embeddings, got {len(response.data)}")
            )
        vectors = [list(item.embedding) for item in items]
        usage = response.usage
        tokens = (usage.prompt_tokens or usage.total_tokens or 0) if usage is not None else 0
        return vectors, Usage(input_tokens=tokens)


def openai_embedding_model(
    *,
    model: str,
    api_key: str | None,
    base_url: str | None,
    headers: Mapping[str, str] = _EMPTY,
    query: Mapping[str, str] = _EMPTY,
    batch_size: int = 256,
    concurrency: int = 4,
    dimensions: int | None = None,
    timeout_s: float = 120,
    max_retries: int = 2,
) -> OpenAIEmbeddingModel:
    """Embeddings are idempotent, so the SDK's own retries (which honour Retry-After) stay on."""
    client = openai_client(
        api_key=api_key, base_url=base_url, headers=headers, query=query, timeout_s=timeout_s, max_retries=max_retries
    )
    return OpenAIEmbeddingModel(client, model, batch_size=batch_size, concurrency=concurrency, dimensions=dimensions)


if TYPE_CHECKING:
    _port: EmbeddingModel = OpenAIEmbeddingModel(AsyncOpenAI(api_key="unused"), "model")
