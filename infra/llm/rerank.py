"""Reranking over the Cohere-compatible ``/rerank`` API that vLLM, Jina, Cohere v2 and LiteLLM serve:
``POST {base_url}/rerank`` with ``{model, query, documents, top_n}`` answers
``{results: [{index, relevance_score}], usage?}``. Failures raise ``ProviderError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx

from domain.llm.ports import Ranked, Reranker, Reranking
from domain.llm.stream import Failed, ProviderError, Usage
from infra.llm.streaming import failure_for_status

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _error_message(response: httpx.Response) -> str:
    """The provider's own error text: ``error.message`` (OpenAI style, vLLM), ``message``
    (Cohere, older vLLM), ``detail`` (Jina, FastAPI), or a plain ``error`` string."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:2000]
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if value:
                return str(value)
    return response.text.strip()[:2000]


def _usage(body: Mapping[str, Any]) -> Usage:
    usage = body.get("usage")
    if isinstance(usage, Mapping):
        for key in ("prompt_tokens", "input_tokens", "total_tokens"):
            value = usage.get(key)
            if isinstance(value, int):
                return Usage(input_tokens=value)
    meta = body.get("meta")  # Cohere: meta.tokens.input_tokens
    tokens = meta.get("tokens") if isinstance(meta, Mapping) else None
    if isinstance(tokens, Mapping) and isinstance(tokens.get("input_tokens"), int | float):
        return Usage(input_tokens=int(tokens["input_tokens"]))
    return Usage()


def _bad(message: str) -> ProviderError:
    return ProviderError(Failed(kind="bad_response", message=message))


class HttpReranker:
    """A ``Reranker`` on ``POST {base_url}{path}`` (``base_url`` like ``http://vllm:8000/v1``)."""

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        api_key: str | None = None,
        headers: Mapping[str, str] = _EMPTY,
        query: Mapping[str, str] = _EMPTY,
        path: str = "/rerank",
        timeout_s: float = 60,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.url = base_url.rstrip("/") + "/" + path.lstrip("/")
        self.query = dict(query)
        self.headers = {"accept": "application/json", **headers}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self._owned = client is None
        self.client = client or httpx.AsyncClient(timeout=timeout_s)

    async def aclose(self) -> None:
        if self._owned:
            await self.client.aclose()

    async def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None) -> Reranking:
        if not documents:
            return Reranking(results=[], usage=Usage())
        payload: dict[str, Any] = {"model": self.model, "query": query, "documents": list(documents)}
        if top_n is not None:
            payload["top_n"] = top_n
        try:
            response = await self.client.post(self.url, json=payload, headers=self.headers, params=self.query)
        except httpx.TimeoutException as exc:
            raise ProviderError(Failed(kind="timeout", message="the rerank request timed out")) from exc
        except httpx.RequestError as exc:
            raise ProviderError(Failed(kind="connection", message=f"rerank request failed: {exc}")) from exc
        if response.status_code >= 400:
            raise ProviderError(failure_for_status(response.status_code, _error_message(response), response.headers))
        try:
            body = response.json()
        except ValueError as exc:
            raise _bad("the rerank response is not JSON") from exc
        if not isinstance(body, Mapping) or not isinstance(body.get("results"), list):
            raise _bad("the rerank response has no results")
        ranked: list[Ranked] = []
        for item in body["results"]:
            if not isinstance(item, Mapping):
                raise _bad("a rerank result is not an object")
            index, score = item.get("index"), item.get("relevance_score", item.get("score"))
            if not isinstance(index, int) or not 0 <= index < len(documents) or not isinstance(score, int | float):
                raise _bad("a rerank result has no valid index and relevance_score")
            ranked.append(Ranked(index=index, score=float(score)))
        ranked.sort(key=lambda r: r.score, reverse=True)
        if top_n is not None:
            ranked = ranked[:top_n]
        return Reranking(results=ranked, usage=_usage(body))


if TYPE_CHECKING:
    _port: Reranker = HttpReranker(model="model", base_url="http://localhost")
