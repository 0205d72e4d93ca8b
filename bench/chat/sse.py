"""A minimal HTTP/1.1 server-sent-events client for bench/chat: one request per connection, the
response read with asyncio streams, each event stamped with its arrival time. Light enough to hold
thousands of streams and read tens of thousands of events per second from one process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    seq: int
    data: bytes
    at: float  # time.perf_counter() on arrival


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status


class SseStream:
    """``async with SseStream(port, method, path, headers, body) as s: async for event in s``."""

    def __init__(self, port: int, method: str, path: str, headers: dict[str, str], body: Any | None = None) -> None:
        self.port = port
        self.request = self._request(method, path, headers, body)
        self.headers: dict[str, str] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @staticmethod
    def _request(method: str, path: str, headers: dict[str, str], body: Any | None) -> bytes:
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    async def __aenter__(self) -> SseStream:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        self._writer.write(self.request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        if status != 200:
            raise HttpError(status, await self._body())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    async def _chunks(self) -> AsyncIterator[bytes]:
        assert self._reader is not None
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            while data := await self._reader.read(65536):
                yield data
            return
        while True:
            size = int((await self._reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0], 16)
            if size == 0:
                return
            data = await self._reader.readexactly(size + 2)
            yield data[:-2]

    async def _body(self) -> bytes:
        if "content-length" in self.headers:
            assert self._reader is not None
            return await self._reader.readexactly(int(self.headers["content-length"]))
        return b"".join([c async for c in self._chunks()])

    async def __aiter__(self) -> AsyncIterator[Event]:
        buffer = b""
        async for chunk in self._chunks():
            at = time.perf_counter()
            buffer += chunk
            while (end := buffer.find(b"\n\n")) >= 0:
                raw, buffer = buffer[:end], buffer[end + 2 :]
                kind, seq, data = "", 0, b""
                for line in raw.split(b"\n"):
                    if line.startswith(b"event: "):
                        kind = line[7:].decode()
                    elif line.startswith(b"id: "):
                        seq = int(line[4:])
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if kind:  # ": ping" comments carry no event
                    yield Event(kind, seq, data, at)
