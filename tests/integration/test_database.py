"""The migrated database: pgvector is installed and an HNSW cosine index answers nearest-neighbour queries."""

from __future__ import annotations

from sqlalchemy import text

from infra.db.engine import Database


async def test_vector_extension_and_hnsw_cosine_index(db: Database) -> None:
    async with db.write() as s:
        await s.execute(text("CREATE TEMP TABLE emb (id int primary key, v vector(3)) ON COMMIT DROP"))
        await s.execute(text("CREATE INDEX ON emb USING hnsw (v vector_cosine_ops)"))
        await s.execute(
            text("INSERT INTO emb VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]'), (4, '[0,0,1]')")
        )
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        plan = (await s.execute(text("EXPLAIN SELECT id FROM emb ORDER BY v <=> '[1,0,0]' LIMIT 2"))).scalars().all()
        assert any("emb_v_idx" in line for line in plan), plan
        rows = (await s.execute(text("SELECT id FROM emb ORDER BY v <=> '[1,0,0]' LIMIT 2"))).scalars().all()
        assert rows == [1, 3]


async def test_read_session_refuses_writes(db: Database) -> None:
    import pytest
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError, match="read-only"):
        async with db.read() as s:
            await s.execute(text("CREATE TEMP TABLE nope (id int)"))
