"""bench/chat parts 2 and 3: idle open streams (server memory) and active streams (gaps between
deltas); see bench/chat/run.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

from bench.chat.setup import TARGET_GAP_MS, TARGET_RSS_MB, C, Platform, check_frames, open_fds, pct, rss_mb
from bench.chat.sse import Event, SseStream
from bench.http.run import Server

# --- 2. idle streams ----------------------------------------------------------------------------


def redis_clients(url: str) -> dict[str, int]:
    """Valkey's clients other than this one, and how many of them are blocked in XREAD."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        others = [c for c in client.client_list() if c.get("cmd") != "client|list"]
        return {"connected": len(others), "in_xread": sum(c.get("cmd") == "xread" for c in others)}
    finally:
        client.close()


async def idle(p: Platform, server: Server, redis_url: str, streams: int, runs: int, hold_s: float) -> dict[str, Any]:
    """``runs`` turns whose provider sends the role chunk and then nothing; ``streams`` subscribers
    spread over them, each open once it has replayed ``message.started``; RSS while all are open;
    then the runs are cancelled and every subscriber must get ``run.cancelled``."""
    pid = server.proc.pid
    before = {"rss_mb": rss_mb(pid), "redis_clients": redis_clients(redis_url), "fds": open_fds(pid)}
    cids = await p.conversations("bench:idle", runs)
    gate = asyncio.Semaphore(16)

    async def start(cid: str) -> str:
        async with gate:
            resp = await p.http.post(f"{C}/{cid}/messages", json={"content": "hi"}, headers=p.headers)
            assert resp.status_code == 202, resp.text
            return str(resp.json()["run"]["id"])

    run_ids = list(await asyncio.gather(*(start(c) for c in cids)))
    with_runs = {"rss_mb": rss_mb(pid), "redis_clients": redis_clients(redis_url), "fds": open_fds(pid)}
    opened = 0
    all_open = asyncio.Event()
    open_gate = asyncio.Semaphore(200)
    errors: list[str] = []

    async def subscribe(run_id: str) -> list[Event]:
        nonlocal opened
        events: list[Event] = []
        released = False
        await open_gate.acquire()
        try:
            async with SseStream(p.port, "GET", f"/api/v1/runs/{run_id}/events", p.headers) as s:
                async for event in s:
                    events.append(event)
                    if event.type == "message.started":
                        opened += 1
                        open_gate.release()
                        released = True
                        if opened == streams:
                            all_open.set()
        except Exception as exc:  # reported, counted as lost
            errors.append(repr(exc))
        finally:
            if not released:
                open_gate.release()
        return events

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(subscribe(run_ids[i % runs])) for i in range(streams)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_open.wait(), timeout=120)
    open_s = time.perf_counter() - t0
    await asyncio.sleep(hold_s)
    held = {
        "rss_mb": rss_mb(pid),
        "redis_clients": redis_clients(redis_url),
        "fds": open_fds(pid),
        "open_streams": opened,
    }
    gate = asyncio.Semaphore(16)

    async def cancel(run_id: str) -> None:
        async with gate:
            resp = await p.http.post(f"/api/v1/runs/{run_id}/cancel", headers=p.headers)
            assert resp.status_code == 202, resp.text

    await asyncio.gather(*(cancel(r) for r in run_ids))
    done, pending = await asyncio.wait(tasks, timeout=60)
    for task in pending:
        task.cancel()
    lost = len(pending)
    for task in done:
        if not task.cancelled() and task.exception() is None and check_frames(task.result(), "run.cancelled"):
            lost += 1
    passed = held["rss_mb"] <= TARGET_RSS_MB and opened == streams and lost == 0
    return {
        "streams": streams,
        "runs": runs,
        "before": before,
        "with_runs": with_runs,
        "held": held,
        "open_s": open_s,
        "lost": lost,
        "errors": errors[:5],
        "pass": passed,
    }


# --- 3. active streams --------------------------------------------------------------------------


async def active(p: Platform, streams: int, rate: float, seconds: float) -> dict[str, Any]:
    """``streams`` turns, each streaming ``rate * seconds`` deltas at ``rate`` per second, all at the
    same time: the fake holds every answer after its role chunk until all ``streams`` requests have
    reached it (starting 300 turns takes the server a while). The gaps between consecutive deltas."""
    count = round(rate * seconds)
    upstream = f"bench:rate:{rate:g}:{count}:g{time.monotonic_ns()}:{streams}"
    await p.add_model(upstream)
    cids = await p.conversations(upstream, streams)
    errors: list[str] = []
    gate = asyncio.Semaphore(32)

    async def turn(i: int, cid: str) -> list[Event]:
        events: list[Event] = []
        released = False
        try:
            await gate.acquire()
            async with asyncio.timeout(seconds + 120), p.stream_turn(cid) as s:
                async for e in s:
                    if e.type == "message.started":
                        gate.release()  # the turn is under way: start the next one
                        released = True
                    events.append(e)
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            if not released:
                gate.release()
        return events

    t0 = time.perf_counter()
    results = await asyncio.gather(*(turn(i, c) for i, c in enumerate(cids)))
    wall = time.perf_counter() - t0
    gaps: list[float] = []
    lost = 0
    reasons: list[str] = []
    for events in results:
        why = check_frames(events, "run.completed", count)
        if why:
            lost += 1
            reasons.append(why)
        at = [e.at for e in events if e.type == "message.delta"]
        gaps += [(b - a) * 1000 for a, b in itertools.pairwise(at)]
    p99 = pct(gaps, 0.99)
    spans = [(d[0].at, d[-1].at) for r in results if (d := [e for e in r if e.type == "message.delta"])]
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    peak = max(itertools.accumulate(step for _, step in edges)) if edges else 0
    return {
        "streams": streams,
        "tokens_per_s": rate,
        "deltas_per_stream": count,
        "peak_concurrent": peak,
        "stream_s_p50": pct([b - a for a, b in spans], 0.5),
        "wall_s": wall,
        "events_per_s": sum(len(r) for r in results) / wall,
        "gap_p50_ms": pct(gaps, 0.5),
        "gap_p99_ms": p99,
        "gap_max_ms": max(gaps) if gaps else float("nan"),
        "lost": lost,
        "errors": (errors + reasons)[:5],
        "pass": p99 <= TARGET_GAP_MS and lost == 0,
    }
