"""HTTP throughput of GET /api/v1/health on one uvicorn worker: the real app against a raw ASGI baseline.

Run ``python bench/http/run.py [--duration 5]``. Both servers use uvloop + httptools with uvicorn's
access log off; the app keeps its own middleware (request ids, one JSON access line per request).
Load comes from ``wrk`` when it is on PATH, else from a Python keep-alive client in its own process.
Results are printed and written to bench/results/http.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http.load import PATH, pin, python_load, wrk_load  # noqa: E402

BODY = b'{"status":"ok"}'
TARGET_RPS = 5_000
RESULTS = ROOT / "bench" / "results" / "http.json"


# --- servers ------------------------------------------------------------------------------------


async def http_only(scope: dict[str, Any], receive: Any, send: Any) -> bool:
    """For bare ASGI callables: answer the lifespan protocol (until shutdown) and say whether
    ``scope`` is an HTTP request to serve."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return False
    return bool(scope["type"] == "http")


async def baseline_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: a bare ASGI callable answering every request with the health body."""
    if not await http_only(scope, receive, send):
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def serve(kind: str, port: int) -> None:
    import uvicorn

    common: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "workers": 1,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_config": None,
        "lifespan": "on",
    }
    if kind == "app":
        # The same factory and flags `liteskill serve` uses; settings come from the environment.
        uvicorn.run("api.asgi:create", factory=True, timeout_graceful_shutdown=5, **common)
    else:
        uvicorn.run(baseline_app, **common)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own process group (and its children): TERM, then KILL after 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Server:
    """One uvicorn process serving ``kind`` on a loopback port, logs to a file, always stopped."""

    def __init__(self, kind: str, env: dict[str, str], workdir: Path, cpu: int | None) -> None:
        self.kind = kind
        self.port = free_port()
        self.log_path = workdir / f"{kind}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pin(self.proc.pid, cpu)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def wait_ready(self, timeout: float = 60.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    return bytes(response.read())
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.kind} server not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop_group(self.proc)
        self._log.close()


# --- orchestration ------------------------------------------------------------------------------


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _services(workdir: Path) -> tuple[dict[str, str], Any]:
    """Database and Redis URLs for the app: from the environment, else embedded servers (migrated)."""
    db, redis = os.environ.get("LITESKILL_DATABASE_URL"), os.environ.get("LITESKILL_REDIS_URL")
    if db and redis:
        return {"LITESKILL_DATABASE_URL": db, "LITESKILL_REDIS_URL": redis}, None
    from infra.db import migrate
    from infra.embedded.runtime import EmbeddedServices
    from infra.settings import load_settings

    env = {"LITESKILL_DATA_DIR": str(workdir / "data")}
    if db:
        env["LITESKILL_DATABASE_URL"] = db
    if redis:
        env["LITESKILL_REDIS_URL"] = redis
    services = EmbeddedServices(load_settings(env, dotenv=None))
    resolved = services.start()
    assert resolved.database.url
    assert resolved.redis.url
    if services.postgres is not None:
        migrate.upgrade(resolved.database.url)
    return {"LITESKILL_DATABASE_URL": resolved.database.url, "LITESKILL_REDIS_URL": resolved.redis.url}, services


def measure(args: argparse.Namespace) -> int:
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    elif generator == "wrk" and not shutil.which("wrk"):
        print("wrk is not on PATH: use --generator python", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    # Server on one core, load generator on another, so neither steals the other's scheduler slot.
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 and not args.no_pin else (None, None)

    workdir = Path(tempfile.mkdtemp(prefix="liteskill-bench-http-"))
    embedded = None
    servers: list[Server] = []
    results: dict[str, dict[str, Any]] = {}
    try:
        urls, embedded = _services(workdir)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("LITESKILL_")}
        app_env = {
            **base_env,
            **urls,
            "LITESKILL_ENV": "production",  # request logging on, as deployed
            "LITESKILL_LOG_LEVEL": "info",
            "LITESKILL_DATA_DIR": str(workdir / "data"),
            **dict(item.split("=", 1) for item in args.app_env),
        }
        bodies: dict[str, bytes] = {}
        for kind, env in (("baseline", base_env), ("app", app_env)):
            server = Server(kind, env, workdir, server_cpu)
            servers.append(server)
            bodies[kind] = server.wait_ready()
            print(f"{kind}: serving on port {server.port}, load: {generator}, {args.duration}s", flush=True)
            if generator == "wrk":
                results[kind] = wrk_load(server.url, args.connections, args.warmup, args.duration, load_cpu)
            else:
                results[kind] = python_load(server.port, args.connections, args.warmup, args.duration, load_cpu)
            server.stop()
        if bodies["app"] != bodies["baseline"]:
            print(f"warning: bodies differ: app {bodies['app']!r}, baseline {bodies['baseline']!r}", file=sys.stderr)
    finally:
        for server in servers:
            server.stop()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    app, base = results["app"], results["baseline"]
    ratio = app["rps"] / base["rps"] if base["rps"] else 0.0
    passed = app["rps"] >= args.target and app["errors"] == 0

    def fmt(value: float | None) -> str:
        return f"{value:8.2f}" if value is not None else "     n/a"

    print(f"\n{'server':<10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name in ("baseline", "app"):
        r = results[name]
        print(f"{name:<10} {r['rps']:>10.0f} {fmt(r['p50_ms'])} {fmt(r['p99_ms'])} {r['errors']:>7}")
    print(f"\nratio app/baseline: {ratio:.2f}")
    print(f"target: app >= {args.target} req/s on one worker: {'PASS' if passed else 'FAIL'}")

    report = {
        "benchmark": "http",
        "path": PATH,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(cpus) or os.cpu_count(),
        "pinned": server_cpu is not None,
        "generator": generator,
        "connections": args.connections,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "results": results,
        "ratio": ratio,
        "target_rps": args.target,
        "pass": passed,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if passed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per server (default 5)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--target", type=int, default=TARGET_RPS, help="req/s the app must reach")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load to separate cores")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--app-env", action="append", default=[], metavar="KEY=VALUE", help="extra app setting (experiments)"
    )
    parser.add_argument("--serve", choices=("app", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0
    _stop_on_sigterm()
    return measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
