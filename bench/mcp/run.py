"""MCP gateway benchmark: a trivial tool (``echo``) called through ``McpGateway.call`` beside the raw
SDK ``ClientSession.call_tool`` against the same server, in the same run.

    python bench/mcp/run.py [--calls 500] [--warmup 50] [--loop uvloop|asyncio]

Starts the test MCP server (tests/fakes/mcp_server.py) over streamable HTTP on a loopback port in
this process (its own thread), opens one raw SDK session and one gateway (in-memory server directory,
no ledger: the database write is not the gateway's overhead), and sends N sequential calls per
variant, interleaved call by call (rotating which goes first) so drift hits both alike. The gateway
path includes resolving the qualified name, checking the arguments against the input schema, the
timeout and the result size check.

Prints calls/s and p50/p95 latency per variant, the gateway's overhead (difference of the p50s) and
PASS/FAIL for the target: gateway overhead p50 <= 1 ms. Writes bench/results/mcp.json; exit status 1
on FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from domain.mcp.types import McpServerConfig  # noqa: E402
from domain.shared.principal import Principal  # noqa: E402
from infra.mcp.gateway import McpGateway  # noqa: E402
from tests.fakes.mcp_server import running_mcp_http_server  # noqa: E402

TARGET_MS = 1.0
Call = Callable[[], Awaitable[None]]


class _Directory:
    def __init__(self, config: McpServerConfig) -> None:
        self.config = config

    async def configs(self, principal: Principal, server_ids: Sequence[uuid.UUID] | None) -> list[McpServerConfig]:
        return [self.config]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(variants: dict[str, Call], calls: int, warmup: int) -> dict[str, list[float]]:
    names = list(variants)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + calls):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            started = time.perf_counter()
            await variants[name]()
            if i >= warmup:
                out[name].append((time.perf_counter() - started) * 1000)
    return out


async def main(calls: int, warmup: int) -> int:
    with running_mcp_http_server() as server:
        tenant = uuid.uuid4()
        principal = Principal(user_id=uuid.uuid4(), tenant_id=tenant, role="user")
        config = McpServerConfig(
            id=uuid.uuid4(),
            tenant_id=tenant,
            name="bench",
            transport="streamable_http",
            url=server.url,
            outbound_allow=("127.0.0.1",),
        )
        gateway = McpGateway(_Directory(config))
        try:
            async with (
                streamable_http_client(server.url) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                await session.list_tools()

                async def raw() -> None:
                    result = await session.call_tool("echo", {"text": "ping"})
                    assert not result.is_error

                async def through_gateway() -> None:
                    result = await gateway.call(principal, "bench__echo", {"text": "ping"})
                    assert result.status == "ok", result

                samples = await measure({"raw": raw, "gateway": through_gateway}, calls, warmup)
        finally:
            await gateway.aclose()

    rows = []
    base = statistics.median(samples["raw"])
    for name, values in samples.items():
        p50 = statistics.median(values)
        overhead = p50 - base
        rows.append(
            {
                "variant": name,
                "calls": len(values),
                "calls_per_s": round(1000 / statistics.fmean(values), 1),
                "p50_ms": round(p50, 3),
                "p95_ms": round(_pct(values, 0.95), 3),
                "overhead_p50_ms": round(overhead, 3),
                "ratio_p50": round(p50 / base, 3),
                "pass": None if name == "raw" else overhead <= TARGET_MS,
            }
        )
    print(f"{'variant':<10} {'calls':>6} {'calls/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'+p50 ms':>8} {'ratio':>6}")
    for r in rows:
        verdict = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        print(
            f"{r['variant']:<10} {r['calls']:>6} {r['calls_per_s']:>9} {r['p50_ms']:>8} {r['p95_ms']:>8}"
            f" {r['overhead_p50_ms']:>8} {r['ratio_p50']:>6}  {verdict}"
        )
    print(f"target: gateway overhead p50 <= {TARGET_MS} ms over streamable HTTP")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mcp.json").write_text(json.dumps(rows, indent=2))
    return 0 if all(r["pass"] is not False for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    sys.exit(asyncio.run(main(args.calls, args.warmup)))
