"""What the chat benchmark's parts share: the fake provider process, the platform client (account,
provider, models, conversations), percentiles, process figures and the check that a stream is whole."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.chat.sse import Event, SseStream
from bench.http.load import pin
from bench.http.run import free_port, stop_group

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "chat.json"
PASSWORD = "correct horse battery staple"
C = "/api/v1/conversations"
TARGET_ADDED_MS = 3.0
TARGET_RSS_MB = 150.0
TARGET_GAP_MS = 100.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Fake:
    """bench/chat/fake.py in its own process."""

    def __init__(self, workdir: Path, cpu: int | None) -> None:
        self.port = free_port()
        self._log = (workdir / "fake.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fake.py")), "--port", str(self.port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pin(self.proc.pid, cpu)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError("the bench fake did not start")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        stop_group(self.proc)
        self._log.close()


class Platform:
    """Setup calls over HTTP: one admin user, the fake as a provider, one model per fake behaviour."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=120, limits=httpx.Limits(max_connections=50)
        )
        self.headers: dict[str, str] = {}
        self.models: dict[str, str] = {}
        self.provider_id = ""

    async def add_model(self, upstream: str) -> None:
        model = await self.http.post(
            "/api/v1/models",
            json={
                "provider_id": self.provider_id,
                "name": upstream.replace(":", "-"),
                "upstream_id": upstream,
                "kind": "chat",
            },
            headers=self.headers,
        )
        assert model.status_code == 201, model.text
        self.models[upstream] = model.json()["id"]

    async def setup(self, fake: Fake, upstreams: list[str]) -> None:
        resp = await self.http.post("/api/v1/auth/register", json={"email": "bench@example.com", "password": PASSWORD})
        resp.raise_for_status()
        self.headers = {"Authorization": f"Bearer {resp.json()['access_token']}"}
        body = {"kind": "openai_compatible", "name": "bench", "base_url": fake.base_url, "api_key": "sk-bench"}
        provider = await self.http.post("/api/v1/providers", json=body, headers=self.headers)
        assert provider.status_code == 201, provider.text
        self.provider_id = provider.json()["id"]
        for upstream in upstreams:
            await self.add_model(upstream)

    async def conversations(self, upstream: str, n: int, parallel: int = 16) -> list[str]:
        """``n`` titled conversations (a titled conversation makes no title call after its first turn)."""
        gate = asyncio.Semaphore(parallel)

        async def one() -> str:
            async with gate:
                body = {"model_id": self.models[upstream], "title": "bench"}
                resp = await self.http.post(C, json=body, headers=self.headers)
                assert resp.status_code == 201, resp.text
                return str(resp.json()["id"])

        return list(await asyncio.gather(*(one() for _ in range(n))))

    def stream_turn(self, cid: str) -> SseStream:
        return SseStream(self.port, "POST", f"{C}/{cid}/messages/stream", self.headers, {"content": "hi"})

    async def aclose(self) -> None:
        await self.http.aclose()


def check_frames(events: list[Event], terminal: str, deltas: int | None = None) -> str | None:
    """Why this stream is not whole (seq 1.. gap-free, run.started first, the terminal last), or None."""
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(events) + 1)):
        return f"seq not gap-free: {seqs[:5]}..{seqs[-5:]}"
    if not events or events[0].type != "run.started" or events[-1].type != terminal:
        last = events[-1].data[:300].decode(errors="replace") if events else ""
        return f"bad ends: {[e.type for e in events[:2]]}..{[e.type for e in events[-2:]]} {last}"
    if deltas is not None and (got := sum(e.type == "message.delta" for e in events)) != deltas:
        return f"{got} deltas, expected {deltas}"
    return None
