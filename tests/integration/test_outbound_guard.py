"""The guarded HTTP clients against real loopback servers: the allow-list lets the fakes through,
redirects are checked hop by hop, and credentials never leave the host they are bound to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import httpx2
import openai
import pytest

from infra.net.outbound import (
    CredentialsHostMismatch,
    OutboundBlocked,
    OutboundGuard,
    blocked_cause,
    guarded_client,
    guarded_client2,
)
from tests.fakes.openai_server import FakeOpenAIServer, running_openai_server


@pytest.fixture(scope="module")
def fake() -> AsyncIterator[FakeOpenAIServer]:
    with running_openai_server() as server:
        yield server  # type: ignore[misc]


async def redirector(location: str) -> tuple[asyncio.Server, int]:
    """A tiny HTTP server on localhost answering every request with a 302 to ``location``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_the_sdk_reaches_an_allow_listed_fake(fake: FakeOpenAIServer) -> None:
    guard = OutboundGuard(["127.0.0.1/32"])
    host = fake.origin.removeprefix("http://")
    http_client = guarded_client2(guard, credential_host=host)
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0, http_client=http_client)
    async with client:
        ids = [m.id async for m in client.models.list()]
    assert "scenario:text" in ids


async def test_without_the_allow_list_the_sdk_is_refused(fake: FakeOpenAIServer) -> None:
    fake.reset()
    client = openai.AsyncOpenAI(
        api_key="sk-test", base_url=fake.base_url, max_retries=0, http_client=guarded_client2(OutboundGuard())
    )
    async with client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await client.models.list()
    assert isinstance(blocked_cause(caught.value), OutboundBlocked)
    assert fake.calls == []  # nothing reached the server


async def test_a_redirect_to_loopback_is_refused(fake: FakeOpenAIServer) -> None:
    fake.reset()
    server, port = await redirector(f"{fake.origin}/v1/models")
    try:
        # The first hop is allowed by name ("localhost" resolves to loopback); its redirect to
        # 127.0.0.1 is a new request that the guard checks and refuses.
        async with guarded_client(OutboundGuard(["localhost"])) as client:
            with pytest.raises(httpx.ConnectError) as caught:
                await client.get(f"http://localhost:{port}/start")
        assert isinstance(blocked_cause(caught.value), OutboundBlocked)
        # with 127.0.0.1 allowed as well, the same redirect is followed
        async with guarded_client(OutboundGuard(["localhost", "127.0.0.1/32"])) as client:
            resp = await client.get(f"http://localhost:{port}/start")
        assert resp.status_code == 200
        assert resp.json()["object"] == "list"
    finally:
        server.close()
        await server.wait_closed()


async def test_credentials_never_follow_a_redirect_to_another_host(fake: FakeOpenAIServer) -> None:
    fake.reset()
    server, port = await redirector(f"{fake.origin}/v1/models")
    try:
        guard = OutboundGuard(["127.0.0.1/32", "localhost"])
        async with guarded_client(guard, credential_host=f"localhost:{port}") as client:
            with pytest.raises(httpx.ConnectError) as caught:
                await client.get(f"http://localhost:{port}/start", headers={"x-api-key": "secret"})
        assert isinstance(blocked_cause(caught.value), CredentialsHostMismatch)
        assert fake.calls == []
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/",
    ],
)
async def test_blocked_destinations_fail_before_connecting(url: str) -> None:
    async with guarded_client(OutboundGuard()) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(url)
    assert isinstance(blocked_cause(caught.value), OutboundBlocked)
    async with guarded_client2(OutboundGuard()) as client2:
        with pytest.raises(httpx2.ConnectError) as caught2:
            await client2.get(url)
    assert isinstance(blocked_cause(caught2.value), OutboundBlocked)
