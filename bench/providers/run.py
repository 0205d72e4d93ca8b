"""Provider adapter benchmark: our chat adapters (and the usage metering around them) beside the raw
official SDKs, against the same loopback fake, in the same run.

    python bench/providers/run.py [--requests 300] [--warmup 30] [--loop uvloop|asyncio]

Starts the OpenAI and Anthropic fakes of tests/fakes in this process (each serves from its own
thread), then sends N sequential streaming requests of the ``text`` scenario per variant, the
variants interleaved request by request (rotating which goes first) so drift hits all alike:

- raw: ``client.chat.completions.create(stream=True)`` / ``client.messages.create(stream=True)``,
  iterated to the end (TTFT: the first chunk carrying text);
- adapter: ``openai_chat_model(...).stream`` / ``anthropic_chat_model(...).stream`` (TTFT: the first
  ``TextDelta``);
- metered: the adapter wrapped in ``MeteredChatModel`` with an in-memory sink.

Prints p50/p95 time to first token and total time per variant, the overhead of each variant over
raw (difference of the p50s), and PASS/FAIL for the target: adapter and metered overhead p50 <= 1 ms
(TTFT and total). Writes bench/results/providers.json; exit status 1 on FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from anthropic import AsyncAnthropic  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from domain.llm.messages import ChatRequest, UserMessage  # noqa: E402
from domain.llm.ports import ChatModel  # noqa: E402
from domain.llm.stream import StreamEvent, TextDelta  # noqa: E402
from domain.llm.usage import UsageContext  # noqa: E402
from infra.llm.anthropic_chat import anthropic_chat_model  # noqa: E402
from infra.llm.metering import MemoryUsageSink, MeteredChatModel  # noqa: E402
from infra.llm.openai_chat import openai_chat_model  # noqa: E402
from infra.llm.streaming import StreamPolicy  # noqa: E402
from tests.fakes.anthropic_server import running_anthropic_server  # noqa: E402
from tests.fakes.openai_server import running_openai_server  # noqa: E402

MODEL = "scenario:text"
TARGET_MS = 1.0
Timed = Callable[[], Awaitable[tuple[float, float]]]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _through(model: ChatModel) -> tuple[float, float]:
    """(ttft, total) in seconds for one stream through a ``ChatModel``."""
    request = ChatRequest(model=MODEL, messages=[UserMessage.text("hi")])
    start = time.perf_counter()
    first = 0.0
    stream: AsyncIterator[StreamEvent] = model.stream(request)
    async for event in stream:
        if not first and isinstance(event, TextDelta):
            first = time.perf_counter()
    return first - start, time.perf_counter() - start


def openai_raw(client: AsyncOpenAI) -> Timed:
    async def one() -> tuple[float, float]:
        start = time.perf_counter()
        first = 0.0
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if not first and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
        return first - start, time.perf_counter() - start

    return one


def anthropic_raw(client: AsyncAnthropic) -> Timed:
    async def one() -> tuple[float, float]:
        start = time.perf_counter()
        first = 0.0
        stream = await client.messages.create(
            model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for event in stream:
            if not first and event.type == "content_block_delta" and event.delta.type == "text_delta":
                first = time.perf_counter()
        return first - start, time.perf_counter() - start

    return one


def adapter(model: ChatModel) -> Timed:
    return lambda: _through(model)


def metered(model: ChatModel) -> tuple[Timed, MemoryUsageSink]:
    sink = MemoryUsageSink()
    context = UsageContext(tenant_id=uuid.uuid4(), model_name="bench", purpose="chat")
    wrapped = MeteredChatModel(model, sink, context)
    return (lambda: _through(wrapped)), sink


async def measure(variants: dict[str, Timed], requests: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    names = list(variants)
    for i in range(warmup):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            await variants[name]()
    out: dict[str, dict[str, list[float]]] = {n: {"ttft": [], "total": []} for n in names}
    for i in range(requests):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            ttft, total = await variants[name]()
            out[name]["ttft"].append(ttft * 1000)
            out[name]["total"].append(total * 1000)
    return out


async def main(requests: int, warmup: int) -> int:
    rows: list[dict[str, Any]] = []
    no_retry = StreamPolicy(max_retries=0)
    with running_openai_server() as oa, running_anthropic_server() as an:
        oa_raw = AsyncOpenAI(api_key="sk-bench", base_url=oa.base_url, max_retries=0)
        an_raw = AsyncAnthropic(api_key="sk-bench", base_url=an.base_url, max_retries=0)
        oa_model = openai_chat_model(api_key="sk-bench", base_url=oa.base_url, policy=no_retry)
        an_model = anthropic_chat_model(api_key="sk-bench", base_url=an.base_url, policy=no_retry)
        oa_metered, oa_sink = metered(openai_chat_model(api_key="sk-bench", base_url=oa.base_url, policy=no_retry))
        an_metered, an_sink = metered(anthropic_chat_model(api_key="sk-bench", base_url=an.base_url, policy=no_retry))
        suites = {
            "openai": {"raw": openai_raw(oa_raw), "adapter": adapter(oa_model), "metered": oa_metered},
            "anthropic": {"raw": anthropic_raw(an_raw), "adapter": adapter(an_model), "metered": an_metered},
        }
        try:
            for provider, variants in suites.items():
                results = await measure(variants, requests, warmup)
                oa.reset()
                an.reset()
                base = results["raw"]
                for name, r in results.items():
                    ttft50, total50 = statistics.median(r["ttft"]), statistics.median(r["total"])
                    over_ttft = ttft50 - statistics.median(base["ttft"])
                    over_total = total50 - statistics.median(base["total"])
                    checked = name != "raw"
                    rows.append(
                        {
                            "provider": provider,
                            "variant": name,
                            "requests": requests,
                            "ttft_p50_ms": ttft50,
                            "ttft_p95_ms": _pct(r["ttft"], 0.95),
                            "total_p50_ms": total50,
                            "total_p95_ms": _pct(r["total"], 0.95),
                            "overhead_ttft_p50_ms": over_ttft if checked else None,
                            "overhead_total_p50_ms": over_total if checked else None,
                            "ratio_total_p50": total50 / statistics.median(base["total"]),
                            "target": f"overhead p50 <= {TARGET_MS:g} ms" if checked else "-",
                            "pass": (over_ttft <= TARGET_MS and over_total <= TARGET_MS) if checked else None,
                        }
                    )
        finally:
            await oa_raw.close()
            await an_raw.close()
            for model in (oa_model, an_model):
                closer = getattr(model, "aclose", None) or getattr(getattr(model, "client", None), "close", None)
                if closer is not None:
                    await closer()
    recorded = len(oa_sink.entries) + len(an_sink.entries)
    expected = 2 * (requests + warmup)
    assert recorded == expected, f"metering recorded {recorded} entries, expected {expected}"

    print(
        f"\n{'provider':<10}{'variant':<9}{'ttft p50':>10}{'ttft p95':>10}{'total p50':>11}{'total p95':>11}"
        f"{'over ttft':>11}{'over total':>12}{'ratio':>7}  result"
    )
    for r in rows:
        verdict = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        over_t = "-" if r["overhead_ttft_p50_ms"] is None else f"{r['overhead_ttft_p50_ms']:+.3f}"
        over_all = "-" if r["overhead_total_p50_ms"] is None else f"{r['overhead_total_p50_ms']:+.3f}"
        print(
            f"{r['provider']:<10}{r['variant']:<9}{r['ttft_p50_ms']:>10.3f}{r['ttft_p95_ms']:>10.3f}"
            f"{r['total_p50_ms']:>11.3f}{r['total_p95_ms']:>11.3f}{over_t:>11}{over_all:>12}"
            f"{r['ratio_total_p50']:>7.2f}  {verdict}"
        )
    print(
        f"\ntimes in ms over {requests} sequential requests per variant (scenario 'text'); overhead: the variant's"
        f" p50 minus raw's p50; ratio: total p50 / raw total p50. Target: overhead p50 <= {TARGET_MS:g} ms."
    )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "providers.json").write_text(json.dumps(rows, indent=2))
    return 0 if all(r["pass"] is not False for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per variant")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured requests per variant first")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop (serve uses uvloop)"
    )
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    sys.exit(runner(main(args.requests, args.warmup)))
