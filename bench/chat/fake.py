"""A lean OpenAI-compatible streaming server for bench/chat, run in its own process so its CPU is
not the app server's: ``python bench/chat/fake.py --port N``.

``POST /v1/chat/completions`` with ``stream: true`` answers with the wire format of the real API
(``data: <chat.completion.chunk json>`` events, a finish chunk, a usage chunk with ``choices: []``
when ``stream_options.include_usage`` was asked for, then ``data: [DONE]``). The model id picks the
pace:

- ``bench:text``: four text deltas ("Hello", ",", " world", "!") at once, like tests/fakes' ``text``;
- ``bench:rate:<tokens_per_s>:<count>``: ``count`` one-word deltas, the first at once, the next on a
  fixed schedule of ``tokens_per_s`` (absolute times, so a late tick does not shift the rest);
- ``bench:rate:<tokens_per_s>:<count>:<group>:<size>``: the same, but the deltas wait (after the role
  chunk) until ``size`` requests of ``group`` have arrived, so they all stream at the same time;
- ``bench:idle``: the role chunk, then silence until the client goes away (at most 10 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http.run import http_only  # noqa: E402

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-request-id", b"req_bench"),
]
TEXT = ["Hello", ",", " world", "!"]


def _event(data: dict[str, Any] | str) -> bytes:
    line = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {line}\n\n".encode()


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if not await http_only(scope, receive, send):
        return
    body = json.loads(await _read_body(receive) or b"{}")
    if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
        payload = b'{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}'
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})
        return
    model = str(body.get("model", "bench:text"))
    usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await _stream(model, usage_wanted, send, gone)
    finally:
        watcher.cancel()


_GROUPS: dict[str, tuple[list[int], asyncio.Event]] = {}
BARRIER_TIMEOUT_S = 50.0  # under the platform's 60 s provider idle timeout


async def _barrier(group: str, size: int) -> None:
    arrived, ready = _GROUPS.setdefault(group, ([0], asyncio.Event()))
    arrived[0] += 1
    if arrived[0] >= size:
        ready.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ready.wait(), timeout=BARRIER_TIMEOUT_S)


async def _stream(model: str, usage_wanted: bool, send: Any, gone: asyncio.Event) -> None:
    base: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_bench",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        out = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if usage_wanted:
            out["usage"] = None
        return _event(out)

    async def emit(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    await emit(chunk({"role": "assistant", "content": "", "refusal": None}))
    parts = model.split(":")
    if parts[1:2] == ["idle"]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone.wait(), timeout=600)
        return
    if parts[1:2] == ["rate"]:
        rate, count = float(parts[2]), int(parts[3])
        token = chunk({"content": " tok"})
        if len(parts) >= 6:
            await _barrier(parts[4], int(parts[5]))
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if gone.is_set():
                return
            await emit(token)
        output_tokens = count
    else:
        for text in TEXT:
            await emit(chunk({"content": text}))
        output_tokens = len(TEXT)
    await emit(chunk({}, "stop"))
    if usage_wanted:
        usage = {
            "prompt_tokens": 12,
            "completion_tokens": output_tokens,
            "total_tokens": 12 + output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        await emit(_event({**base, "choices": [], "usage": usage}))
    await emit(_event("[DONE]"))
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        backlog=4096,
        timeout_keep_alive=60,
    )


if __name__ == "__main__":
    main()
