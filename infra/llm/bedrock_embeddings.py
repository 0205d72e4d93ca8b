"""Amazon Bedrock embeddings (Titan text embeddings v2 through ``invoke_model``) and reranking
(``bedrock-agent-runtime`` ``rerank``). boto3 is synchronous: calls run in worker threads.

Titan embeds one text per call, so ``embed`` runs one ``invoke_model`` per text on a small
thread pool of its own (the concurrency bound), keeping the loop's default executor free.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from domain.llm.ports import EmbeddingModel, Embeddings, Ranked, Reranker, Reranking
from domain.llm.stream import Failed, ProviderError, Usage
from infra.llm.bedrock_chat import BedrockAccount, BedrockClients
from infra.llm.bedrock_errors import failure_for_exception


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a boto3 call, turning its failures into ProviderError."""
    try:
        return fn(*args, **kwargs)
    except ProviderError:
        raise
    except Exception as exc:  # every SDK failure becomes a typed ProviderError
        raise ProviderError(failure_for_exception(exc)) from exc


def _bad(message: str) -> ProviderError:
    return ProviderError(Failed(kind="bad_response", message=message))


class BedrockEmbeddingModel:
    """``EmbeddingModel`` on Titan text embeddings (``amazon.titan-embed-text-v2:0`` and kin):
    body ``{"inputText", "dimensions"?, "normalize"?}`` -> ``{"embedding", "inputTextTokenCount"}``."""

    def __init__(
        self,
        clients: BedrockClients,
        model: str,
        *,
        dimensions: int | None = None,
        normalize: bool | None = None,
        concurrency: int = 4,
    ) -> None:
        self.clients = clients
        self.model = model
        self.dimensions = dimensions
        self.normalize = normalize
        self._pool = ThreadPoolExecutor(max_workers=max(concurrency, 1), thread_name_prefix="bedrock-embed")

    def _embed_one(self, text: str) -> tuple[list[float], int]:
        body: dict[str, Any] = {"inputText": text}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        if self.normalize is not None:
            body["normalize"] = self.normalize

        def invoke() -> Any:
            response = self.clients.get("bedrock-runtime").invoke_model(
                modelId=self.model,
                body=json.dumps(body).encode(),
                contentType="application/json",
                accept="application/json",
            )
            return response["body"].read()

        raw = _call(invoke)
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise _bad("Bedrock answered an embedding request with something that is not JSON") from exc
        vector = payload.get("embedding") if isinstance(payload, dict) else None
        if not isinstance(vector, list) or not all(isinstance(x, int | float) for x in vector):
            raise _bad("Bedrock's embedding response has no embedding vector")
        tokens = payload.get("inputTextTokenCount")
        return [float(x) for x in vector], tokens if isinstance(tokens, int) else 0

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        if not texts:
            return Embeddings(vectors=[], usage=Usage())

        # One call per text on the model's own pool. On the first failure the queued calls are
        # cancelled and the running ones are waited for, so no request outlives this call.
        futures = [self._pool.submit(self._embed_one, t) for t in texts]
        wrapped = [asyncio.wrap_future(f) for f in futures]
        try:
            done, pending = await asyncio.wait(wrapped, return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        failed = next((w for w in done if not w.cancelled() and w.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            if pending:
                await asyncio.wait(pending)
            for w in wrapped:  # retrieve every outcome: no "exception never retrieved" noise
                if not w.cancelled():
                    w.exception()
            error = failed.exception()
            assert error is not None
            raise error
        results = [w.result() for w in wrapped]
        return Embeddings(
            vectors=[vector for vector, _ in results],
            usage=Usage(input_tokens=sum(tokens for _, tokens in results)),
        )


class BedrockReranker:
    """``Reranker`` on Bedrock's rerank API (``amazon.rerank-v1:0``, ``cohere.rerank-v3-5:0``);
    a model id becomes its foundation-model ARN in the account's region. Bedrock reports no
    token usage for reranking."""

    def __init__(self, clients: BedrockClients, model: str) -> None:
        self.clients = clients
        self.model_arn = (
            model if model.startswith("arn:") else f"arn:aws:bedrock:{clients.account.region}::foundation-model/{model}"
        )

    def _rerank(self, query: str, documents: Sequence[str], top_n: int) -> list[Ranked]:
        request: dict[str, Any] = {
            "queries": [{"type": "TEXT", "textQuery": {"text": query}}],
            "sources": [
                {"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": d}}}
                for d in documents
            ],
            "rerankingConfiguration": {
                "type": "BEDROCK_RERANKING_MODEL",
                "bedrockRerankingConfiguration": {
                    "numberOfResults": top_n,
                    "modelConfiguration": {"modelArn": self.model_arn},
                },
            },
        }
        client = self.clients.get("bedrock-agent-runtime")
        ranked: list[Ranked] = []
        while True:
            response = _call(client.rerank, **request)
            for result in response.get("results") or []:
                index = result.get("index")
                if not isinstance(index, int) or not 0 <= index < len(documents):
                    raise _bad("Bedrock's rerank response names a document that was not sent")
                ranked.append(Ranked(index=index, score=float(result.get("relevanceScore") or 0.0)))
            token = response.get("nextToken")
            if not token:
                break
            request = {**request, "nextToken": token}
        ranked.sort(key=lambda r: r.score, reverse=True)
        return ranked[:top_n]

    async def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None) -> Reranking:
        if not documents:
            return Reranking(results=[], usage=Usage())
        limit = len(documents) if top_n is None else max(min(top_n, len(documents)), 1)
        results = await asyncio.to_thread(self._rerank, query, list(documents), limit)
        return Reranking(results=results, usage=Usage())


def _clients(
    region: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
    profile: str | None,
    endpoint_url: str | None,
    timeout_s: float,
    pool: int,
) -> BedrockClients:
    account = BedrockAccount(
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        session_token=session_token,
        profile=profile,
        endpoint_url=endpoint_url,
    )
    return BedrockClients(account, read_timeout_s=timeout_s, max_pool_connections=pool)


def bedrock_embedding_model(
    *,
    model: str,
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
    dimensions: int | None = None,
    normalize: bool | None = None,
    concurrency: int = 4,
    timeout_s: float = 60,
) -> EmbeddingModel:
    clients = _clients(
        region, access_key_id, secret_access_key, session_token, profile, endpoint_url, timeout_s, concurrency
    )
    return BedrockEmbeddingModel(clients, model, dimensions=dimensions, normalize=normalize, concurrency=concurrency)


def bedrock_reranker(
    *,
    model: str,
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
    timeout_s: float = 60,
) -> Reranker:
    clients = _clients(region, access_key_id, secret_access_key, session_token, profile, endpoint_url, timeout_s, 2)
    return BedrockReranker(clients, model)
