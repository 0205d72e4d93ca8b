"""The secrets service on the real database: per-tenant data keys, binding, rotation, key files."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import select, text

from domain.shared.errors import Conflict, Invalid
from infra.db.engine import Database
from infra.db.tables.secrets import data_keys
from infra.secrets.envelope import Kek, encode_key
from infra.secrets.service import SecretsService, load_kek, rotate_master_key
from infra.settings import Settings, SettingsError

SECRET = "sk-ant-api03-VERY-SECRET-value-4242"


def _kek() -> Kek:
    return Kek(os.urandom(32))


async def _rows(db: Database) -> list[dict[str, object]]:
    async with db.read() as session:
        result = await session.execute(select(data_keys).order_by(data_keys.c.tenant_id))
        return [dict(row._mapping) for row in result]


async def test_round_trip_across_sessions(db: Database) -> None:
    kek = _kek()
    async with db.write() as session:
        token = await SecretsService(session, kek).encrypt("t1", "provider:1", "api_key", SECRET)
    async with db.write() as session:
        assert await SecretsService(session, kek).decrypt("t1", "provider:1", "api_key", token) == SECRET


@pytest.mark.parametrize(
    ("tenant", "record", "field"), [("t2", "p1", "api_key"), ("t1", "p2", "api_key"), ("t1", "p1", "header")]
)
async def test_copied_ciphertext_fails_elsewhere(db: Database, tenant: str, record: str, field: str) -> None:
    kek = _kek()
    async with db.write() as session:
        svc = SecretsService(session, kek)
        token = await svc.encrypt("t1", "p1", "api_key", SECRET)
        await svc.encrypt("t2", "p1", "api_key", "t2 has a key too")
    async with db.write() as session:
        with pytest.raises(Invalid) as err:
            await SecretsService(session, kek).decrypt(tenant, record, field, token)
    assert err.value.code == "secret_undecryptable"


async def test_tampered_ciphertext_fails(db: Database) -> None:
    kek = _kek()
    async with db.write() as session:
        token = await SecretsService(session, kek).encrypt("t1", "p1", "api_key", SECRET)
    head, body = token.rsplit(".", 1)
    flipped = "A" if body[5] != "A" else "B"
    async with db.write() as session:
        with pytest.raises(Invalid, match="cannot be decrypted"):
            await SecretsService(session, kek).decrypt("t1", "p1", "api_key", f"{head}.{body[:5]}{flipped}{body[6:]}")


async def test_one_lazily_created_data_key_per_tenant(db: Database) -> None:
    kek = _kek()
    assert await _rows(db) == []
    async with db.write() as session:
        svc = SecretsService(session, kek)
        a1 = await svc.encrypt("t1", "p1", "api_key", SECRET)
        a2 = await svc.encrypt("t1", "p2", "api_key", SECRET)
        b1 = await svc.encrypt("t2", "p1", "api_key", SECRET)
    async with db.write() as session:  # a fresh service finds the stored key rather than adding one
        a3 = await SecretsService(session, kek).encrypt("t1", "p3", "api_key", SECRET)
    rows = await _rows(db)
    assert [r["tenant_id"] for r in rows] == ["t1", "t2"]
    assert all(r["active"] and r["kek_id"] == kek.id for r in rows)
    assert rows[0]["wrapped_key"] != rows[1]["wrapped_key"]
    key_of = {t: t.split(".")[1] for t in (a1, a2, b1, a3)}
    assert key_of[a1] == key_of[a2] == key_of[a3] == str(rows[0]["id"])
    assert key_of[b1] == str(rows[1]["id"]) != key_of[a1]


async def test_plaintext_never_reaches_the_table(db: Database) -> None:
    kek = _kek()
    async with db.write() as session:
        await SecretsService(session, kek).encrypt("t1", "p1", "api_key", SECRET)
    async with db.read() as session:
        dump = (await session.execute(text("SELECT string_agg(d::text, '|') FROM data_keys d"))).scalar_one()
    assert dump
    assert "t1" in dump
    assert SECRET not in dump
    assert SECRET.encode().hex() not in dump


async def test_rotation_rewraps_keys_and_old_ciphertexts_still_decrypt(db: Database) -> None:
    old, new = _kek(), _kek()
    async with db.write() as session:
        svc = SecretsService(session, old)
        tokens = {t: await svc.encrypt(t, "p1", "api_key", f"{SECRET}-{t}") for t in ("t1", "t2", "t3")}
    before = await _rows(db)
    async with db.write() as session:
        assert await SecretsService(session, old).rotate_kek(new) == 3
    after = await _rows(db)
    assert [r["id"] for r in after] == [r["id"] for r in before]
    assert all(r["kek_id"] == new.id for r in after)
    assert all(a["wrapped_key"] != b["wrapped_key"] for a, b in zip(after, before, strict=True))
    async with db.write() as session:
        svc = SecretsService(session, new)
        for tenant, token in tokens.items():
            assert await svc.decrypt(tenant, "p1", "api_key", token) == f"{SECRET}-{tenant}"
        assert await svc.rotate_kek(new) == 0  # a rerun is harmless
    async with db.write() as session:  # the old master key no longer opens anything
        with pytest.raises(Invalid) as err:
            await SecretsService(session, old).decrypt("t1", "p1", "api_key", tokens["t1"])
    assert err.value.code == "secret_undecryptable"


async def test_rotation_rolls_back_with_its_transaction(db: Database) -> None:
    old, new = _kek(), _kek()
    async with db.write() as session:
        await SecretsService(session, old).encrypt("t1", "p1", "api_key", SECRET)
    before = await _rows(db)

    class Boom(Exception):
        pass

    async def rotate_then_fail() -> None:
        async with db.write() as session:
            await SecretsService(session, old).rotate_kek(new)
            raise Boom

    with pytest.raises(Boom):
        await rotate_then_fail()
    assert await _rows(db) == before


async def test_wrong_master_key_cannot_decrypt(db: Database) -> None:
    async with db.write() as session:
        token = await SecretsService(session, _kek()).encrypt("t1", "p1", "api_key", SECRET)
    async with db.write() as session:
        with pytest.raises(Invalid) as err:
            await SecretsService(session, _kek()).decrypt("t1", "p1", "api_key", token)
    assert err.value.code == "secret_undecryptable"
    assert SECRET not in str(err.value)


async def test_generated_key_file_is_reused_and_private(db: Database, settings: Settings, tmp_path: Path) -> None:
    local = msgspec.structs.replace(settings, data_dir=tmp_path / "data", master_key=None, master_key_file=None)
    first = load_kek(local)
    path = tmp_path / "data" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    async with db.write() as session:
        token = await SecretsService(session, first).encrypt("t1", "p1", "api_key", SECRET)
    second = load_kek(local)
    assert second.id == first.id
    async with db.write() as session:
        assert await SecretsService(session, second).decrypt("t1", "p1", "api_key", token) == SECRET


async def test_master_key_from_environment_value_wins(settings: Settings, tmp_path: Path) -> None:
    raw = os.urandom(32)
    local = msgspec.structs.replace(settings, data_dir=tmp_path, master_key=base64.b64encode(raw).decode())
    assert load_kek(local).id == Kek(raw).id
    assert not (tmp_path / "master.key").exists()


async def test_rotate_master_key_updates_the_key_file(db: Database, settings: Settings, tmp_path: Path) -> None:
    local = msgspec.structs.replace(settings, data_dir=tmp_path, master_key=None, master_key_file=None)
    old = load_kek(local)
    async with db.write() as session:
        token = await SecretsService(session, old).encrypt("t1", "p1", "api_key", SECRET)
    new_raw = os.urandom(32)
    assert await rotate_master_key(local, new_raw) == 1
    assert (tmp_path / "master.key").read_text().strip() == encode_key(new_raw)
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]
    reloaded = load_kek(local)
    assert reloaded.id == Kek(new_raw).id
    async with db.write() as session:
        assert await SecretsService(session, reloaded).decrypt("t1", "p1", "api_key", token) == SECRET


async def test_concurrent_first_use_creates_one_key(db: Database) -> None:
    kek = _kek()

    async def encrypt(record: str) -> str:
        async with db.write() as session:
            return await SecretsService(session, kek).encrypt("t1", record, "api_key", SECRET)

    async with db.write() as session:
        first = await SecretsService(session, kek).encrypt("t1", "p0", "api_key", SECRET)
        # The others find no committed key and insert their own, waiting on this uncommitted one.
        racers = [asyncio.create_task(encrypt(f"p{i}")) for i in (1, 2, 3)]
        await asyncio.sleep(0.3)
        assert not any(task.done() for task in racers)
    tokens = [first, *await asyncio.gather(*racers)]
    rows = await _rows(db)
    assert len(rows) == 1
    assert {t.split(".")[1] for t in tokens} == {str(rows[0]["id"])}
    async with db.write() as session:
        svc = SecretsService(session, kek)
        assert [await svc.decrypt("t1", f"p{i}", "api_key", t) for i, t in enumerate(tokens)] == [SECRET] * 4


async def test_a_process_with_a_rotated_away_key_cannot_create_keys(db: Database) -> None:
    old, new = _kek(), _kek()
    async with db.write() as session:
        await SecretsService(session, old).encrypt("t1", "p1", "api_key", SECRET)
    async with db.write() as session:
        await SecretsService(session, old).rotate_kek(new)
    async with db.write() as session:
        with pytest.raises(Conflict) as err:
            await SecretsService(session, old).encrypt("t2", "p1", "api_key", SECRET)
    assert err.value.code == "master_key_rotated"
    assert [r["tenant_id"] for r in await _rows(db)] == ["t1"]


async def test_rotation_refuses_to_overwrite_an_interrupted_rotation(settings: Settings, tmp_path: Path) -> None:
    local = msgspec.structs.replace(settings, data_dir=tmp_path, master_key=None, master_key_file=None)
    load_kek(local)
    (tmp_path / "master.key.new").write_text("left over\n")
    with pytest.raises(SettingsError, match="interrupted rotation"):
        await rotate_master_key(local, os.urandom(32))
    assert (tmp_path / "master.key.new").read_text() == "left over\n"
