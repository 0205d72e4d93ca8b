"""Database-backed secrets: lazily created per-tenant data keys and master key (KEK) rotation.

A ``SecretsService`` works inside the caller's session and never commits: the edge owns the
transaction, so a data key created for a secret is stored atomically with the secret itself.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from sqlalchemy import LargeBinary, Text, exists, literal, select, text, update
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from domain.shared.errors import Conflict
from domain.shared.ids import new_id
from infra.db.engine import Database, create_engine
from infra.db.tables.secrets import data_keys
from infra.secrets.envelope import (
    DataKey,
    Kek,
    decode_key,
    encode_key,
    load_or_create_key_file,
    new_data_key_bytes,
    parse_token,
    undecryptable,
    write_private_file,
)
from infra.settings import Settings, SettingsError

MASTER_KEY_FILE = "master.key"


def master_key_path(settings: Settings) -> Path:
    return settings.master_key_file or settings.data_dir / MASTER_KEY_FILE


def load_kek(settings: Settings) -> Kek:
    """The KEK from LITESKILL_MASTER_KEY, else its key file, else a key file generated on first use."""
    if settings.master_key is not None:
        try:
            return Kek(decode_key(settings.master_key))
        except ValueError as exc:
            raise SettingsError(f"LITESKILL_MASTER_KEY must be base64 of 32 random bytes ({exc})") from None
    path = master_key_path(settings)
    explicit = settings.master_key_file is not None
    try:
        # An operator-named file must exist; only the default file in the data dir is generated.
        return Kek(load_or_create_key_file(path, create=not explicit))
    except FileNotFoundError:
        raise SettingsError(f"LITESKILL_MASTER_KEY_FILE: {path} does not exist") from None
    except ValueError as exc:
        name = "LITESKILL_MASTER_KEY_FILE" if explicit else "LITESKILL_DATA_DIR"
        raise SettingsError(f"{name}: key file {path} is not base64 of 32 bytes ({exc})") from None


class SecretsService:
    """Encrypts and decrypts tenant secrets bound to (tenant, record, field)."""

    def __init__(self, session: AsyncSession, kek: Kek) -> None:
        self._session = session
        self._kek = kek
        self._active: dict[str, DataKey] = {}
        self._by_id: dict[str, DataKey] = {}

    def __repr__(self) -> str:
        return f"SecretsService(kek={self._kek!r})"

    async def encrypt(self, tenant_id: str, record: str, field: str, plaintext: str) -> str:
        key = await self._active_key(tenant_id)
        return key.encrypt(record, field, plaintext)

    async def decrypt(self, tenant_id: str, record: str, field: str, token: str) -> str:
        key_id, _, _ = parse_token(token)
        key = await self._key_by_id(tenant_id, key_id)
        return key.decrypt(record, field, token)

    async def rotate_kek(self, new_kek: Kek) -> int:
        """Re-wrap every data key under ``new_kek`` in the session's transaction; secrets stay as
        they are. Keys already wrapped by ``new_kek`` are skipped, so a rerun is harmless."""
        # Readers go on; writers (a data key created meanwhile) wait, so none escapes re-wrapping.
        await self._session.execute(text("LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE"))
        rows = (
            await self._session.execute(
                select(data_keys.c.id, data_keys.c.tenant_id, data_keys.c.wrapped_key, data_keys.c.kek_id).order_by(
                    data_keys.c.id
                )
            )
        ).all()
        count = 0
        for row in rows:
            if row.kek_id == new_kek.id:
                continue
            if row.kek_id != self._kek.id:
                raise undecryptable(f"data key {row.id} is wrapped by {row.kek_id}, not the current master key")
            plain = self._kek.unwrap(row.tenant_id, row.wrapped_key)
            await self._session.execute(
                update(data_keys)
                .where(data_keys.c.id == row.id)
                .values(wrapped_key=new_kek.wrap(row.tenant_id, plain), kek_id=new_kek.id)
            )
            count += 1
        self._kek = new_kek
        return count

    async def _active_key(self, tenant_id: str) -> DataKey:
        cached = self._active.get(tenant_id)
        if cached is not None:
            return cached
        query = select(data_keys.c.id, data_keys.c.wrapped_key, data_keys.c.kek_id).where(
            data_keys.c.tenant_id == tenant_id, data_keys.c.active
        )
        row = (await self._session.execute(query)).first()
        if row is None:
            key_id, plain = new_id(), new_data_key_bytes()
            # The guard refuses a key wrapped by a master key that has since been rotated away
            # (a process started before `keys rotate`), which nobody could unwrap later.
            rotated = exists().where(data_keys.c.kek_id != self._kek.id)
            source = select(
                literal(key_id, UUID(as_uuid=True)),
                literal(tenant_id, Text()),
                literal(self._kek.wrap(tenant_id, plain), LargeBinary()),
                literal(self._kek.id, Text()),
            ).where(~rotated)
            created = await self._session.execute(
                insert(data_keys)
                .from_select(["id", "tenant_id", "wrapped_key", "kek_id"], source)
                .on_conflict_do_nothing(index_elements=[data_keys.c.tenant_id], index_where=data_keys.c.active)
                .returning(data_keys.c.id)
            )
            if created.first() is not None:
                return self._remember(DataKey(str(key_id), tenant_id, plain), active=True)
            row = (await self._session.execute(query)).first()
            if row is None:
                raise Conflict(
                    "the master key was rotated since this process started; restart it with the new key",
                    code="master_key_rotated",
                )
            # Another transaction created the tenant's key first: use theirs.
        return self._remember(self._unwrap(tenant_id, row.id, row.wrapped_key, row.kek_id), active=True)

    async def _key_by_id(self, tenant_id: str, key_id: str) -> DataKey:
        cached = self._by_id.get(key_id)
        if cached is not None and cached.tenant_id == tenant_id:
            return cached
        try:
            parsed = uuid.UUID(key_id)
        except ValueError:
            raise undecryptable("the secret token names no data key") from None
        row = (
            await self._session.execute(
                select(data_keys.c.wrapped_key, data_keys.c.kek_id).where(
                    data_keys.c.id == parsed, data_keys.c.tenant_id == tenant_id
                )
            )
        ).first()
        if row is None:
            # Unknown id or another tenant's key: the same error either way, so nothing leaks.
            raise undecryptable()
        return self._remember(self._unwrap(tenant_id, parsed, row.wrapped_key, row.kek_id), active=False)

    def _unwrap(self, tenant_id: str, key_id: uuid.UUID, wrapped: bytes, kek_id: str) -> DataKey:
        if kek_id != self._kek.id:
            raise undecryptable(f"data key {key_id} is wrapped by {kek_id}, not the configured master key")
        return DataKey(str(key_id), tenant_id, self._kek.unwrap(tenant_id, wrapped))

    def _remember(self, key: DataKey, *, active: bool) -> DataKey:
        self._by_id[key.id] = key
        if active:
            self._active[key.tenant_id] = key
        return key


async def rotate_master_key(settings: Settings, new_key: bytes) -> int:
    """Re-wrap every data key under ``new_key`` and return how many changed (for `liteskill keys rotate`).

    With a key file, the new key is staged beside it before the commit and moved into place after,
    so a crash leaves either the old file or a ``.new`` file holding the key the database needs.
    With LITESKILL_MASTER_KEY the operator must set the new value before the next start.
    """
    if settings.database.url is None:
        raise SettingsError("LITESKILL_DATABASE_URL: rotating the master key needs a running database")
    old, new = load_kek(settings), Kek(new_key)
    path = None if settings.master_key is not None else master_key_path(settings)
    staged = path.with_name(path.name + ".new") if path is not None else None
    if staged is not None:
        if staged.exists():
            # Left by an interrupted rotation; the database may already depend on it.
            raise SettingsError(
                f"{staged} is left from an interrupted rotation: if its key now wraps the data keys, "
                "move it over the key file, else delete it; then rotate again"
            )
        write_private_file(staged, (encode_key(new_key) + "\n").encode("ascii"))
    database = Database(create_engine(settings.database.url, pool_size=1, max_overflow=0))
    try:
        async with database.write() as session:
            count = await SecretsService(session, old).rotate_kek(new)
    finally:
        await database.dispose()
    if path is not None and staged is not None:
        os.replace(staged, path)
    return count
