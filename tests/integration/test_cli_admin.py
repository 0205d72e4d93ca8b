"""`liteskill admin create` and `liteskill keys rotate`, run as the real command in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import text

from infra.db.engine import Database
from infra.secrets.envelope import Kek, decode_key
from infra.secrets.service import SecretsService, load_kek
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def liteskill(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert settings.database.url
    assert settings.redis.url
    assert settings.master_key is not None
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LITESKILL_")}
    environ.update(
        {
            "LITESKILL_ENV": "test",
            "LITESKILL_DATABASE_URL": settings.database.url,
            "LITESKILL_REDIS_URL": settings.redis.url,
            "LITESKILL_MASTER_KEY": str(settings.master_key),
            "LITESKILL_ADMIN_PASSWORD": PASSWORD,
        }
    )
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def users_of(db: Database) -> dict[str, tuple[str, str | None]]:
    async with db.read() as s:
        rows = await s.execute(text("SELECT email, role, name FROM users ORDER BY created_at"))
        return {r[0]: (r[1], r[2]) for r in rows}


async def test_admin_create_makes_the_first_admin_then_promotes(settings: Settings, db: Database) -> None:
    first = liteskill(settings, "admin", "create", "--email", "Root@Example.com", "--name", "Root")
    assert first.returncode == 0, first.stderr
    assert "created admin root@example.com" in first.stdout
    assert PASSWORD not in first.stdout + first.stderr
    assert await users_of(db) == {"root@example.com": ("admin", "Root")}

    second = liteskill(settings, "admin", "create", "--email", "ops@example.com")
    assert second.returncode == 0, second.stderr
    assert "promoted to admin" in second.stdout
    assert (await users_of(db))["ops@example.com"] == ("admin", None)

    async with db.read() as s:
        registered = (
            await s.execute(text("SELECT count(*) FROM events WHERE type_id = 'identity.user_registered.v1'"))
        ).scalar_one()
        open_sessions = (
            await s.execute(text("SELECT count(*) FROM auth_sessions WHERE revoked_at IS NULL"))
        ).scalar_one()
    assert registered == 2
    assert open_sessions == 0  # the shell gets no tokens


async def test_admin_create_refuses_taken_emails_and_weak_passwords(settings: Settings, db: Database) -> None:
    assert liteskill(settings, "admin", "create", "--email", "root@example.com").returncode == 0
    taken = liteskill(settings, "admin", "create", "--email", "ROOT@example.com")
    assert taken.returncode == 1
    assert "email_taken" in taken.stderr
    weak = liteskill(settings, "admin", "create", "--email", "x@example.com", LITESKILL_ADMIN_PASSWORD="short")
    assert weak.returncode == 1
    assert "password_policy" in weak.stderr
    assert set(await users_of(db)) == {"root@example.com"}


async def test_admin_create_without_a_password_or_terminal_fails(settings: Settings, db: Database) -> None:
    result = liteskill(settings, "admin", "create", "--email", "root@example.com", LITESKILL_ADMIN_PASSWORD="")
    assert result.returncode == 2
    assert "LITESKILL_ADMIN_PASSWORD" in result.stderr
    assert await users_of(db) == {}


async def test_keys_rotate_rewraps_data_keys_and_prints_the_new_key_once(settings: Settings, db: Database) -> None:
    tenant = str(uuid.uuid4())
    async with db.write() as s:
        token = await SecretsService(s, load_kek(settings)).encrypt(tenant, "provider-1", "api_key", "sk-secret")
    result = liteskill(settings, "keys", "rotate")
    assert result.returncode == 0, result.stderr
    assert "re-wrapped 1 data keys" in result.stdout
    printed = re.findall(r"^LITESKILL_MASTER_KEY=(\S+)$", result.stdout, flags=re.MULTILINE)
    assert len(printed) == 1
    new_key = decode_key(printed[0])
    assert new_key != decode_key(str(settings.master_key))
    async with db.read() as s:
        assert await SecretsService(s, Kek(new_key)).decrypt(tenant, "provider-1", "api_key", token) == "sk-secret"
