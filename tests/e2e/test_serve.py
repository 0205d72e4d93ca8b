"""`liteskill serve` as a user runs it: a real process, real embedded servers, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/api/v1"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("LITESKILL_")}
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env={**clean, "LITESKILL_DATA_DIR": str(data_dir), "LITESKILL_LOG_LEVEL": "info", **(env or {})},
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve not ready:\n{self.log.read_text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"serve did not stop:\n{self.log.read_text()[-4000:]}") from None


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def postgres_running(data_dir: Path) -> bool:
    return (data_dir / "postgres" / "postmaster.pid").exists()


def test_serve_starts_embedded_services_stops_cleanly_and_keeps_data(data_dir: Path) -> None:
    server = Server(data_dir)
    try:
        server.wait_ready()
        assert httpx.get(f"{server.base}/health").json() == {"status": "ok"}
        account = {"email": "keeper@example.com", "password": "correct horse battery staple"}
        registered = httpx.post(f"{server.base}/auth/register", json=account, timeout=30)
        assert registered.status_code == 201, registered.text
        auth = {"Authorization": f"Bearer {registered.json()['access_token']}"}
        created = httpx.post(f"{server.base}/prompts", json={"name": "kept", "body": "Hello {{name}}"}, headers=auth)
        assert created.status_code == 201, created.text
        prompt_id = created.json()["id"]
        assert postgres_running(data_dir)
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.log.read_text()[-4000:]
    assert not postgres_running(data_dir)  # its children were stopped, not orphaned

    again = Server(data_dir)
    try:
        again.wait_ready()
        login = httpx.post(f"{again.base}/auth/login", json=account, timeout=30)
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        got = httpx.get(f"{again.base}/prompts/{prompt_id}", headers=auth)
        assert got.status_code == 200
        assert got.json()["name"] == "kept"
    finally:
        assert again.stop(signal.SIGINT) == 0
    assert not postgres_running(data_dir)


def test_serve_uses_configured_servers_and_starts_nothing(data_dir: Path, settings: Settings) -> None:
    assert settings.database.url
    assert settings.redis.url
    server = Server(
        data_dir,
        {"LITESKILL_DATABASE_URL": settings.database.url, "LITESKILL_REDIS_URL": settings.redis.url},
    )
    try:
        server.wait_ready()
    finally:
        assert server.stop() == 0
    assert not (data_dir / "postgres").exists()
    assert not (data_dir / "valkey").exists()
