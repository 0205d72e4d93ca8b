"""SDK clients built from a provider row and its decrypted credentials, every HTTP one behind the
outbound guard (the OpenAI and Anthropic SDKs both use ``httpx2``) and bound to the credentials'
host; and the connection test (``probe``)."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import openai

if TYPE_CHECKING:  # the Anthropic SDK and boto3 load with the first provider that needs them
    import anthropic

    from infra.llm.bedrock_chat import BedrockClients
from infra.llm.providers import Provider, effective_url
from infra.net.outbound import OutboundBlocked, OutboundGuard, blocked_cause, guarded_client2


@dataclass(frozen=True, slots=True)
class Connection:
    """What a provider's adapters need: where, as whom, with which extra headers and query."""

    provider: Provider
    credentials: dict[str, Any]
    guard: OutboundGuard

    @property
    def base_url(self) -> str | None:
        return effective_url(self.provider.kind, self.provider.base_url, self.provider.settings)

    @property
    def headers(self) -> dict[str, str]:
        headers = self.credentials.get("headers")
        return dict(headers) if isinstance(headers, dict) else {}

    @property
    def query(self) -> dict[str, str]:
        query = self.provider.settings.get("query")
        return dict(query) if isinstance(query, dict) else {}

    @property
    def api_key(self) -> str | None:
        key = self.credentials.get("api_key")
        return key if isinstance(key, str) else None

    def openai(self, *, timeout_s: float = 600, max_retries: int = 0) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.api_key or "unused",
            base_url=self.base_url,
            organization=self.provider.settings.get("organization"),
            default_headers=self.headers or None,
            default_query=self.query or None,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=guarded_client2(self.guard, credential_host=self.provider.credential_host, timeout_s=timeout_s),
        )

    def anthropic(self, *, timeout_s: float = 600) -> anthropic.AsyncAnthropic:
        import anthropic as sdk

        return sdk.AsyncAnthropic(
            api_key=self.api_key,
            base_url=self.base_url,
            default_headers=self.headers,
            default_query=self.query,
            timeout=timeout_s,
            max_retries=0,
            http_client=guarded_client2(self.guard, credential_host=self.provider.credential_host, timeout_s=timeout_s),
        )

    def bedrock(self, *, timeout_s: float = 600) -> BedrockClients:
        from infra.llm.bedrock_chat import BedrockAccount, BedrockClients

        s = self.provider.settings
        account = BedrockAccount(
            region=str(s.get("region") or "us-east-1"),
            access_key_id=s.get("aws_access_key_id"),
            secret_access_key=self.credentials.get("aws_secret_access_key"),
            session_token=self.credentials.get("aws_session_token"),
            profile=s.get("profile"),
            endpoint_url=self.provider.base_url,
        )
        return BedrockClients(account, read_timeout_s=timeout_s)


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    latency_ms: int
    models: list[str] | None = None
    error_kind: str | None = None
    error_message: str | None = None


_KINDS = (
    ("AuthenticationError", "authentication"),
    ("PermissionDeniedError", "permission"),
    ("NotFoundError", "not_found"),
    ("APITimeoutError", "timeout"),
    ("APIConnectionError", "connection"),
    ("APIStatusError", "upstream"),
)


def _error_kind(exc: BaseException) -> str:
    # An Anthropic SDK error means the SDK is loaded; it is not imported just to be compared with.
    sdks: list[Any] = [openai, *([sys.modules["anthropic"]] if "anthropic" in sys.modules else [])]
    for name, kind in _KINDS:
        if any(isinstance(exc, getattr(sdk, name)) for sdk in sdks):
            return kind
    return "unknown"


async def probe(conn: Connection, *, timeout_s: float = 15) -> Probe:
    """Reach the provider and list its models. A blocked destination raises ``OutboundBlocked``
    (the route answers 422); every upstream failure is reported in the result."""
    url = conn.base_url
    if url is not None:
        await conn.guard.check_url(url)
    started = time.monotonic()
    try:
        models: list[str] | None
        if conn.provider.kind in ("openai", "openai_compatible"):
            client = conn.openai(timeout_s=timeout_s)
            async with client:
                models = sorted([m.id async for m in client.models.list()])
        elif conn.provider.kind == "anthropic":
            aclient = conn.anthropic(timeout_s=timeout_s)
            async with aclient:
                models = sorted([m.id async for m in aclient.models.list()])
        else:
            clients = conn.bedrock(timeout_s=timeout_s)
            listed = await asyncio.wait_for(
                asyncio.to_thread(lambda: clients.get("bedrock").list_foundation_models()), timeout_s
            )
            models = sorted(str(m.get("modelId")) for m in listed.get("modelSummaries", []))
    except OutboundBlocked:
        raise
    except Exception as exc:  # every upstream failure is a result, not a server error
        blocked = blocked_cause(exc)
        if blocked is not None:
            raise blocked from exc
        latency = int((time.monotonic() - started) * 1000)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return Probe(ok=False, latency_ms=latency, error_kind=_error_kind(exc), error_message=str(message)[:1000])
    return Probe(ok=True, latency_ms=int((time.monotonic() - started) * 1000), models=models)
