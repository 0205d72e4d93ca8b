"""Chat turns through the platform: latency against the raw SDK, idle streams, active streams.

    python bench/chat/run.py [--quick] [--parts latency,idle,active]

One uvicorn worker serves the real app (bench/http's start-up: ``api.asgi:create``, production
settings, embedded PostgreSQL and Valkey in a temporary directory unless LITESKILL_DATABASE_URL and
LITESKILL_REDIS_URL are set, the server pinned to one core). A lean OpenAI-compatible fake
(bench/chat/fake.py) serves in its own process, pinned with this load process to the other core.

1. latency: time to first token (first ``message.delta``) and total time (``run.completed``) of a
   turn through ``POST /conversations/{id}/messages/stream``, beside the ``openai`` SDK's
   ``chat.completions.create(stream=True)`` against the same fake in the same run, at 1 and 20
   concurrent turns, interleaved; target: added p50 <= 3 ms.
2. idle: 2,000 open ``GET /runs/{id}/events`` streams of runs whose provider is silent; target:
   server RSS <= 150 MB, every stream still delivers the terminal event after the runs are cancelled.
3. active: 300 concurrent turns streaming 40 tokens/s each; target: gap between two consecutive
   ``message.delta`` events p99 <= 100 ms, no stream lost (every stream complete, seq gap-free).

Prints the figures and PASS/FAIL, writes bench/results/chat.json; exit status 1 on FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from bench.chat.setup import RESULTS, TARGET_ADDED_MS, TARGET_GAP_MS, TARGET_RSS_MB, C, Fake, Platform, pct  # noqa: E402
from bench.chat.streams import active, idle  # noqa: E402
from bench.http.load import pin  # noqa: E402
from bench.http.run import Server, _services, _stop_on_sigterm  # noqa: E402

# --- 1. latency ---------------------------------------------------------------------------------


async def platform_turn(p: Platform, cid: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = 0.0
    async with p.http.stream("POST", f"{C}/{cid}/messages/stream", json={"content": "hi"}, headers=p.headers) as r:
        assert r.status_code == 200, await r.aread()
        event = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if not first and event == "message.delta":
                    first = time.perf_counter()
        assert event == "run.completed", event
    return first - start, time.perf_counter() - start


async def sdk_turn(client: AsyncOpenAI) -> tuple[float, float]:
    start = time.perf_counter()
    first = 0.0
    stream = await client.chat.completions.create(
        model="bench:text",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if not first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
    return first - start, time.perf_counter() - start


async def latency(p: Platform, fake: Fake, concurrency: int, rounds: int, warmup: int) -> dict[str, Any]:
    """``rounds`` batches of ``concurrency`` simultaneous turns per variant, the variants alternating
    batch by batch (which goes first rotates); each platform turn has a fresh conversation."""
    cids = await p.conversations("bench:text", concurrency * (rounds + warmup))
    sdk = AsyncOpenAI(
        api_key="sk-bench",
        base_url=fake.base_url,
        max_retries=0,
        http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency + 5)),
    )
    out: dict[str, dict[str, list[float]]] = {"sdk": {"ttft": [], "total": []}, "platform": {"ttft": [], "total": []}}
    variants: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
        "sdk": lambda: sdk_turn(sdk),
        "platform": lambda: platform_turn(p, cids.pop()),
    }
    names = list(variants)
    try:
        for i in range(warmup + rounds):
            for name in names[i % 2 :] + names[: i % 2]:
                results = await asyncio.gather(*(variants[name]() for _ in range(concurrency)))
                if i >= warmup:
                    out[name]["ttft"] += [t * 1000 for t, _ in results]
                    out[name]["total"] += [t * 1000 for _, t in results]
    finally:
        await sdk.close()
    row: dict[str, Any] = {"concurrency": concurrency, "turns": concurrency * rounds}
    for name, r in out.items():
        row[name] = {
            "ttft_p50_ms": statistics.median(r["ttft"]),
            "ttft_p95_ms": pct(r["ttft"], 0.95),
            "total_p50_ms": statistics.median(r["total"]),
            "total_p95_ms": pct(r["total"], 0.95),
        }
    row["added_ttft_p50_ms"] = row["platform"]["ttft_p50_ms"] - row["sdk"]["ttft_p50_ms"]
    row["added_total_p50_ms"] = row["platform"]["total_p50_ms"] - row["sdk"]["total_p50_ms"]
    row["ratio_total_p50"] = row["platform"]["total_p50_ms"] / row["sdk"]["total_p50_ms"]
    row["pass"] = row["added_ttft_p50_ms"] <= TARGET_ADDED_MS and row["added_total_p50_ms"] <= TARGET_ADDED_MS
    return row


# --- orchestration ------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, server: Server, fake: Fake, redis_url: str) -> dict[str, Any]:
    p = Platform(server.port)
    out: dict[str, Any] = {}
    try:
        await p.setup(fake, ["bench:text", "bench:idle"])
        if "latency" in args.parts:
            out["latency"] = []
            for concurrency, rounds in ((1, args.turns), (20, max(2, args.turns // 10))):
                row = await latency(p, fake, concurrency, rounds, warmup=max(2, rounds // 10))
                out["latency"].append(row)
                print(
                    f"latency x{concurrency}: sdk ttft {row['sdk']['ttft_p50_ms']:.2f} ms, platform ttft"
                    f" {row['platform']['ttft_p50_ms']:.2f} ms (+{row['added_ttft_p50_ms']:.2f});"
                    f" total {row['sdk']['total_p50_ms']:.2f} vs {row['platform']['total_p50_ms']:.2f} ms",
                    flush=True,
                )
        if "idle" in args.parts:
            out["idle"] = await idle(p, server, redis_url, args.idle_streams, args.idle_runs, args.hold)
            print(f"idle: {out['idle']}", flush=True)
        if "active" in args.parts:
            out["active"] = await active(p, args.active_streams, args.rate, args.active_seconds)
            print(f"active: {out['active']}", flush=True)
    finally:
        await p.aclose()
    return out


def report(out: dict[str, Any]) -> bool:
    ok = True
    for row in out.get("latency", []):
        print(
            f"\nlatency, {row['concurrency']} concurrent turn(s), {row['turns']} turns per variant (ms)\n"
            f"{'variant':<10}{'ttft p50':>10}{'ttft p95':>10}{'total p50':>11}{'total p95':>11}"
        )
        for name in ("sdk", "platform"):
            r = row[name]
            print(
                f"{name:<10}{r['ttft_p50_ms']:>10.2f}{r['ttft_p95_ms']:>10.2f}"
                f"{r['total_p50_ms']:>11.2f}{r['total_p95_ms']:>11.2f}"
            )
        print(
            f"added p50: ttft {row['added_ttft_p50_ms']:+.2f} ms, total {row['added_total_p50_ms']:+.2f} ms;"
            f" ratio total {row['ratio_total_p50']:.2f}; target added p50 <= {TARGET_ADDED_MS:g} ms:"
            f" {'PASS' if row['pass'] else 'FAIL'}"
        )
        ok &= row["pass"]
    if "idle" in out:
        r = out["idle"]
        print(
            f"\nidle: {r['held']['open_streams']}/{r['streams']} streams open over {r['runs']} silent runs"
            f" (opened in {r['open_s']:.1f} s); server RSS {r['before']['rss_mb']:.1f} MB before,"
            f" {r['with_runs']['rss_mb']:.1f} MB with the runs, {r['held']['rss_mb']:.1f} MB with the streams;"
            f" Redis clients {r['before']['redis_clients']['connected']} /"
            f" {r['with_runs']['redis_clients']['connected']} / {r['held']['redis_clients']['connected']}"
            f" ({r['held']['redis_clients']['in_xread']} in XREAD with the streams open);"
            f" lost {r['lost']}; target RSS <= {TARGET_RSS_MB:g} MB, none lost:"
            f" {'PASS' if r['pass'] else 'FAIL'}"
        )
        ok &= r["pass"]
    if "active" in out:
        r = out["active"]
        print(
            f"\nactive: {r['streams']} streams x {r['deltas_per_stream']} deltas at {r['tokens_per_s']:g}/s"
            f" ({r['peak_concurrent']} streaming at once at the peak, a stream lasting"
            f" {r['stream_s_p50']:.1f} s at p50); delta gap p50 {r['gap_p50_ms']:.1f} ms,"
            f" p99 {r['gap_p99_ms']:.1f} ms, max {r['gap_max_ms']:.1f} ms; lost {r['lost']};"
            f" target p99 <= {TARGET_GAP_MS:g} ms, none lost: {'PASS' if r['pass'] else 'FAIL'}"
        )
        ok &= r["pass"]
    return ok


def measure(args: argparse.Namespace) -> int:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 and not args.no_pin else (None, None)
    workdir = Path(tempfile.mkdtemp(prefix="liteskill-bench-chat-"))
    embedded = None
    server: Server | None = None
    fake: Fake | None = None
    try:
        urls, embedded = _services(workdir)
        fake = Fake(workdir, load_cpu)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LITESKILL_")},
            **urls,
            "LITESKILL_ENV": "production",
            "LITESKILL_LOG_LEVEL": "info",
            "LITESKILL_DATA_DIR": str(workdir / "data"),
            "LITESKILL_OUTBOUND_ALLOW": "127.0.0.1/32",
            "LITESKILL_API_RATE_PER_PRINCIPAL": "100000000",
            **dict(item.split("=", 1) for item in args.app_env),
        }
        server = Server("app", env, workdir, server_cpu)
        server.wait_ready()
        pin(os.getpid(), load_cpu)
        print(f"app on port {server.port} (cpu {server_cpu}), fake on port {fake.port} (cpu {load_cpu})", flush=True)
        import uvloop

        out = uvloop.run(bench(args, server, fake, urls["LITESKILL_REDIS_URL"]))
    except BaseException:
        if server is not None:
            print(server.tail(), file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.stop()
        if fake is not None:
            fake.stop()
        if embedded is not None:
            embedded.stop()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # the app's log, for a look at its errors
            shutil.copy(workdir / "app.log", args.output.with_suffix(".server.log"))
        shutil.rmtree(workdir, ignore_errors=True)
    passed = report(out)
    document = {
        "benchmark": "chat",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "cpus": len(cpus) or os.cpu_count(),
        "pinned": server_cpu is not None,
        "quick": args.quick,
        **out,
        "pass": passed,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if passed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer turns, shorter streams (a smoke run)")
    parser.add_argument("--parts", default="latency,idle,active", help="comma-separated: latency,idle,active")
    parser.add_argument("--turns", type=int, default=150, help="measured turns per variant at concurrency 1")
    parser.add_argument("--idle-streams", type=int, default=2000)
    parser.add_argument("--idle-runs", type=int, default=200, help="silent runs the idle streams follow")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds all idle streams stay open")
    parser.add_argument("--active-streams", type=int, default=300)
    parser.add_argument("--rate", type=float, default=40.0, help="tokens per second of each active stream")
    parser.add_argument("--active-seconds", type=float, default=5.0, help="how long each active stream lasts")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--app-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    args.parts = set(args.parts.split(","))
    if args.quick:
        args.turns = min(args.turns, 40)
        args.active_seconds = min(args.active_seconds, 4.0)
        args.hold = min(args.hold, 1.0)
    _stop_on_sigterm()
    return measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
