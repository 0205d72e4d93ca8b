"""Load generators for bench/http: wrk when it is on PATH, else a keep-alive asyncio client in its
own process. Both pin themselves to a CPU (when given one) and report req/s and latency."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import subprocess
import time
from typing import Any

PATH = "/api/v1/health"


def pin(pid: int, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})


# --- load generators ----------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk_load(
    url: str, connections: int, warmup: float, duration: float, cpu: int | None, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``extra``: more wrk arguments (``-H`` headers, ``-s`` a Lua script for other methods)."""

    def run(seconds: float, latency: bool) -> str:
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s", *extra]
        proc = subprocess.Popen([*cmd, *(["--latency"] if latency else []), url], stdout=subprocess.PIPE, text=True)
        pin(proc.pid, cpu)
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {out}")
        return out

    if warmup > 0:
        run(warmup, latency=False)
    out = run(duration, latency=True)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)$", out, flags=re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return {
        "requests": total,
        "rps": rps,
        "p50_ms": _ms(percentiles["50"]) if "50" in percentiles else None,
        "p99_ms": _ms(percentiles["99"]) if "99" in percentiles else None,
        "errors": errors,
    }


_REQUEST = b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: liteskill-bench\r\n\r\n"


class _Stats:
    def __init__(self) -> None:
        self.running = True
        self.measuring = False
        self.latencies: list[float] = []
        self.errors = 0


class _Connection(asyncio.Protocol):
    """Keep-alive HTTP/1.1, one request in flight: send, parse a full response, send again."""

    def __init__(self, stats: _Stats, closed: asyncio.Future[None], request: bytes = _REQUEST) -> None:
        self.stats = stats
        self.request = request
        self.closed = closed
        self.buf = bytearray()
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(b"content-length:")
            length = 0
            if at >= 0:
                eol = head.find(b"\r\n", at)
                length = int(head[at + 15 : eol if eol >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                return
            ok = buf[9:12] == b"200"
            del buf[:total]
            if self.stats.measuring:
                self.stats.latencies.append(time.perf_counter() - self.sent)
                if not ok:
                    self.stats.errors += 1
            if self.stats.running:
                self._send()
            else:
                assert self.transport is not None
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stats.running and self.stats.measuring:
            self.stats.errors += 1
        if not self.closed.done():
            self.closed.set_result(None)


async def _python_load(
    port: int, connections: int, warmup: float, duration: float, request: bytes = _REQUEST
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stats = _Stats()
    closed: list[asyncio.Future[None]] = []
    transports = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        closed.append(done)
        transport, _ = await loop.create_connection(
            lambda done=done: _Connection(stats, done, request),  # type: ignore[misc]
            "127.0.0.1",
            port,
        )
        transports.append(transport)
    await asyncio.sleep(warmup)
    stats.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    elapsed = time.perf_counter() - started
    stats.measuring = False
    stats.running = False
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*closed), timeout=5)
    for transport in transports:
        transport.close()
    lat = sorted(stats.latencies)

    def pct(p: float) -> float | None:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else None

    return {
        "requests": len(lat),
        "rps": len(lat) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": stats.errors,
    }


def _python_load_process(
    port: int, connections: int, warmup: float, duration: float, out: Any, request: bytes = _REQUEST
) -> None:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    out.put(runner(_python_load(port, connections, warmup, duration, request)))


def python_load(
    port: int, connections: int, warmup: float, duration: float, cpu: int | None, request: bytes = _REQUEST
) -> dict[str, Any]:
    """``request``: the raw HTTP/1.1 request each connection repeats (default: GET ``PATH``)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_python_load_process, args=(port, connections, warmup, duration, queue, request), daemon=True
    )
    proc.start()
    pin(proc.pid or 0, cpu)
    try:
        result: dict[str, Any] = queue.get(timeout=warmup + duration + 60)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    return result
