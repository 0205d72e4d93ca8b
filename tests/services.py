"""Real PostgreSQL and Valkey for the test session: one server, one migrated template database,
and one database per xdist worker cloned from the template (cheap, and isolated)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import fasteners

from infra.db import migrate
from infra.embedded.postgres import EmbeddedPostgres
from infra.embedded.valkey import EmbeddedValkey

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "infra" / "db" / "migrations"
BASE = Path(os.environ.get("TESTS_LITESKILL_DATA", Path(tempfile.gettempdir()) / "liteskill-test-services"))
RUN_VARIABLE = "TESTS_LITESKILL_RUN"  # not LITESKILL_*: settings reject unknown ones


def test_data() -> Path:
    """This test run's own directory: one PostgreSQL per run (shared by its xdist workers), so
    concurrent runs never drop each other's databases or stop each other's server."""
    return BASE / f"run-{os.environ.get(RUN_VARIABLE, 'solo')}"


def _migrations_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(MIGRATIONS.rglob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def start_postgres() -> EmbeddedPostgres:
    data = test_data()
    data.mkdir(parents=True, exist_ok=True)
    with fasteners.InterProcessLock(str(data / ".pg.lock")):
        pg = EmbeddedPostgres(data)
        pg.start()
    return pg


def template_database(pg: EmbeddedPostgres) -> str:
    """A database migrated to head, named after the migrations' content so edits rebuild it."""
    name = f"liteskill_tpl_{_migrations_hash()}"
    with fasteners.InterProcessLock(str(test_data() / ".template.lock")):
        out = pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}' AND datistemplate")
        if "1 row" not in out:
            pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            pg.psql(f'CREATE DATABASE "{name}"')
            migrate.upgrade(pg.url(name))
            pg.psql(f'ALTER DATABASE "{name}" WITH is_template true ALLOW_CONNECTIONS false')
    return name


def worker_database(pg: EmbeddedPostgres, template: str, worker: str) -> str:
    name = f"liteskill_test_{worker}"
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return pg.url(name)


def start_valkey(worker: str) -> EmbeddedValkey:
    vk = EmbeddedValkey(Path(tempfile.mkdtemp(prefix=f"liteskill-valkey-{worker}-")), persist=False)
    vk.start()
    return vk
