"""Throughput of the authenticated paths on one uvicorn worker, against GET /api/v1/health in the same run.

Run ``python bench/auth/run.py [--duration 5]``. One app server (the same uvicorn flags and factory
as bench/http, whose server and load-generator code this imports) serves every measurement: a user
and an API key are seeded over HTTP, then each route is loaded in turn:

- ``POST /api/v1/auth/login``: Argon2-bound, so fewer connections;
- ``GET /api/v1/me`` with an access token (JWT) and with an API key;
- ``GET /api/v1/health``: the baseline.

Prints req/s, latency, the ratio to /health, and PASS/FAIL for "authenticated /me >= 0.5 x /health"
per credential; writes bench/results/auth.json. The per-principal rate limit stays on with a very
high limit and the login limits are raised (a benchmark is one client hammering one account).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http.load import PATH as HEALTH  # noqa: E402
from bench.http.load import python_load, wrk_load  # noqa: E402
from bench.http.run import Server, _services, _stop_on_sigterm  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "auth.json"
EMAIL = "bench@example.com"
PASSWORD = "a benchmark passphrase"
ME = "/api/v1/me"
LOGIN = "/api/v1/auth/login"
TARGET_RATIO = 0.5
APP_SETTINGS = {
    # The per-principal limit stays on (its production path: local counts synced to Redis in
    # batches), just high enough that one client hammering one account is never refused.
    "LITESKILL_API_RATE_PER_PRINCIPAL": "1000000000",
    "LITESKILL_AUTH_RATE_PER_IP": "1000000",
    "LITESKILL_AUTH_RATE_PER_ACCOUNT": "1000000",
}


def _call(base: str, method: str, path: str, body: dict[str, Any] | None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def seed(base: str) -> tuple[str, str]:
    """(access token, API key) of a fresh account."""
    tokens = _call(base, "POST", "/api/v1/auth/register", {"email": EMAIL, "password": PASSWORD})
    key = _call(base, "POST", "/api/v1/api-keys", {"name": "bench"}, tokens["access_token"])
    return str(tokens["access_token"]), str(key["key"])


def raw_request(method: str, path: str, token: str | None = None, body: bytes | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "User-Agent: liteskill-bench"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def wrk_args(method: str, token: str | None, body: bytes | None, workdir: Path, name: str) -> tuple[str, ...]:
    if body is None:
        return ("-H", f"Authorization: Bearer {token}") if token else ()
    script = workdir / f"{name}.lua"
    script.write_text(
        f'wrk.method = "{method}"\nwrk.body = {json.dumps(body.decode())}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return ("-s", str(script))


def measure(args: argparse.Namespace) -> int:
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 and not args.no_pin else (None, None)

    workdir = Path(tempfile.mkdtemp(prefix="liteskill-bench-auth-"))
    embedded = None
    server: Server | None = None
    results: dict[str, dict[str, Any]] = {}
    try:
        urls, embedded = _services(workdir)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("LITESKILL_")}
        env = {
            **base_env,
            **urls,
            "LITESKILL_ENV": "production",
            "LITESKILL_LOG_LEVEL": "info",
            "LITESKILL_DATA_DIR": str(workdir / "data"),
            **APP_SETTINGS,
            **dict(item.split("=", 1) for item in args.app_env),
        }
        server = Server("app", env, workdir, server_cpu)
        server.wait_ready()
        base = f"http://127.0.0.1:{server.port}"
        token, key = seed(base)
        login_body = json.dumps({"email": EMAIL, "password": PASSWORD}).encode()
        cases: list[tuple[str, str, str, str | None, bytes | None, int, float]] = [
            ("health", "GET", HEALTH, None, None, args.connections, args.duration),
            ("me_jwt", "GET", ME, token, None, args.connections, args.duration),
            ("me_api_key", "GET", ME, key, None, args.connections, args.duration),
            ("login", "POST", LOGIN, None, login_body, args.login_connections, args.login_duration),
        ]
        for name, method, path, credential, body, connections, duration in cases:
            print(f"{name}: {method} {path}, {connections} connections, {duration}s ({generator})", flush=True)
            if generator == "wrk":
                extra = wrk_args(method, credential, body, workdir, name)
                results[name] = wrk_load(base + path, connections, args.warmup, duration, load_cpu, extra)
            else:
                request = raw_request(method, path, credential, body)
                results[name] = python_load(server.port, connections, args.warmup, duration, load_cpu, request)
    finally:
        if server is not None:
            server.stop()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    health = results["health"]["rps"] or 1.0
    for r in results.values():
        r["ratio_to_health"] = r["rps"] / health
    checks = {
        name: results[name]["ratio_to_health"] >= TARGET_RATIO and results[name]["errors"] == 0
        for name in ("me_jwt", "me_api_key")
    }

    def fmt(value: float | None) -> str:
        return f"{value:8.2f}" if value is not None else "     n/a"

    print(f"\n{'route':<12} {'req/s':>10} {'/health':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in results.items():
        print(
            f"{name:<12} {r['rps']:>10.0f} {r['ratio_to_health']:>8.2f} "
            f"{fmt(r['p50_ms'])} {fmt(r['p99_ms'])} {r['errors']:>7}"
        )
    for name, ok in checks.items():
        print(f"{name}: >= {TARGET_RATIO} x /health: {'PASS' if ok else 'FAIL'}")

    report = {
        "benchmark": "auth",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(cpus) or os.cpu_count(),
        "pinned": server_cpu is not None,
        "generator": generator,
        "connections": args.connections,
        "login_connections": args.login_connections,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "login_duration_s": args.login_duration,
        "results": results,
        "target_ratio": TARGET_RATIO,
        "pass": checks,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(checks.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per route (default 5)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    parser.add_argument("--login-connections", type=int, default=4, help="connections for login (default 4)")
    parser.add_argument("--login-duration", type=float, default=5.0, help="measured seconds of login (default 5)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load to separate cores")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--app-env", action="append", default=[], metavar="KEY=VALUE", help="extra app setting (experiments)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None and args.generator == "wrk":
        print("wrk is not on PATH: use --generator python", file=sys.stderr)
        return 2
    _stop_on_sigterm()
    return measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
