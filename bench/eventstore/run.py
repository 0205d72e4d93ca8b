"""Event store benchmark: the library beside raw asyncpg doing the same SQL, in the same run.

    python bench/eventstore/run.py [--quick]

Uses LITESKILL_DATABASE_URL when set, else starts an embedded PostgreSQL in a temporary directory.
Each measurement creates a fresh database migrated to head. Prints a table and writes
bench/results/eventstore.json. Targets (from the platform issue): >= 1,200 single appends/s from one
writer, >= 40,000 events/s batched (50 per commit), 200-event aggregate load p95 <= 3 ms,
projection rebuild >= 50,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import msgspec  # noqa: E402

from domain.shared.aggregate import Aggregate, load, save_snapshot_quietly  # noqa: E402
from domain.shared.events import Event, EventMetadata, NewEvent, event_type  # noqa: E402
from infra.db import migrate  # noqa: E402
from infra.db.engine import Database, create_engine, plain_url  # noqa: E402
from infra.eventstore.postgres import APPEND_LOCK, PostgresTransactionFactory  # noqa: E402
from infra.projections.audit import _INSERT as AUDIT_INSERT  # noqa: E402
from infra.projections.audit import AuditLogProjection  # noqa: E402
from infra.projections.runner import rebuild  # noqa: E402


@event_type("bench.item_added.v1")
class ItemAdded(Event, frozen=True, kw_only=True):
    sku: str
    quantity: int
    note: str = ""


class Cart(msgspec.Struct):
    items: dict[str, int] = {}
    count: int = 0


def evolve(state: Cart, event: Event) -> Cart:
    assert isinstance(event, ItemAdded)
    state.items[event.sku] = state.items.get(event.sku, 0) + event.quantity
    state.count += 1
    return state


CART = Aggregate(name="cart", state_type=Cart, initial=Cart, evolve=evolve)
META = EventMetadata(tenant_id="t1", actor="user:bench", request_id="req-1", correlation_id="corr-1")


def new_event(i: int) -> NewEvent:
    return NewEvent(payload=ItemAdded(sku=f"sku-{i % 17}", quantity=i % 5 + 1, note="x" * 40), metadata=META)


RAW_INSERT = """
INSERT INTO events (stream_id, version, position, event_id, type_id, data, metadata, tenant_id)
SELECT $1, $2 + t.ord, nextval('events_position_seq'), t.event_id, t.type_id, t.data::jsonb, t.metadata::jsonb,
       t.tenant_id
FROM (SELECT * FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[])
      WITH ORDINALITY AS u(event_id, type_id, data, metadata, tenant_id, ord) ORDER BY ord) AS t
WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1) = $2
RETURNING version
"""


def raw_params(stream: str, expected: int, events: list[NewEvent]) -> tuple[Any, ...]:
    enc = msgspec.json.encode
    return (
        stream,
        expected,
        [e.event_id for e in events],
        [type(e.payload).type_id for e in events],
        [enc(e.payload).decode() for e in events],
        [enc(e.metadata).decode() for e in events],
        [e.metadata.tenant_id for e in events],
    )


class Env:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.n = 0

    async def fresh(self, synchronous_commit: bool = True) -> str:
        """A new database migrated to head; returns its URL."""
        self.n += 1
        name = f"bench_es_{os.getpid()}_{self.n}"
        conn = await asyncpg.connect(plain_url(self.admin_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
            if not synchronous_commit:
                await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        finally:
            await conn.close()
        base, _, query = self.admin_url.partition("?")
        url = base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")
        await asyncio.to_thread(migrate.upgrade, url)
        return url


async def rate(n: int, fn: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await fn()
    return n / (time.perf_counter() - start)


# -- measurements ------------------------------------------------------------------------------


async def lib_appends(url: str, writers: int, per_writer: int, batch: int) -> float:
    db = Database(create_engine(url, pool_size=writers + 2))
    factory = PostgresTransactionFactory(db)

    async def writer(w: int) -> None:
        stream = f"cart-{uuid.uuid4()}"
        batches = [[new_event(i) for i in range(batch)] for _ in range(per_writer)]
        for i, events in enumerate(batches):
            async with factory.transaction() as tx:
                await tx.events.append(stream, i * batch, events)

    async def run() -> None:
        await asyncio.gather(*(writer(w) for w in range(writers)))

    await writer(-1)  # warm up the pool and statement caches
    result = await rate(writers * per_writer * batch, run)
    await db.dispose()
    return result


async def raw_appends(url: str, writers: int, per_writer: int, batch: int) -> float:
    pool = await asyncpg.create_pool(plain_url(url), min_size=writers, max_size=writers + 2)

    async def writer(w: int) -> None:
        stream = f"cart-{uuid.uuid4()}"
        batches = [[new_event(i) for i in range(batch)] for _ in range(per_writer)]
        async with pool.acquire() as conn:
            for i, events in enumerate(batches):
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
                    rows = await conn.fetch(RAW_INSERT, *raw_params(stream, i * batch, events))
                    assert len(rows) == batch

    async def run() -> None:
        await asyncio.gather(*(writer(w) for w in range(writers)))

    await writer(-1)
    result = await rate(writers * per_writer * batch, run)
    await pool.close()
    return result


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[94] if len(samples) >= 20 else max(samples)


async def lib_load(url: str, runs: int, snapshot: bool) -> tuple[float, float]:
    db = Database(create_engine(url))
    factory = PostgresTransactionFactory(db)
    stream = f"cart-{uuid.uuid4()}"
    async with factory.transaction() as tx:
        await tx.events.append(stream, 0, [new_event(i) for i in range(200)])
        if snapshot:
            loaded = await load(tx.events, stream, CART)
            await save_snapshot_quietly(tx.events, stream, CART, loaded.version, loaded.state)
    samples = []
    for i in range(runs + 20):
        async with db.read() as session:
            from infra.eventstore.postgres import PostgresEventStore

            store = PostgresEventStore(session, factory.codec)
            start = time.perf_counter()
            loaded = await load(store, stream, CART)
            elapsed = (time.perf_counter() - start) * 1000
        assert loaded.version == 200
        if i >= 20:
            samples.append(elapsed)
    await db.dispose()
    return statistics.median(samples), p95(samples)


async def raw_load(url: str, runs: int) -> tuple[float, float]:
    conn = await asyncpg.connect(plain_url(url))
    stream = f"cart-{uuid.uuid4()}"
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
        await conn.fetch(RAW_INSERT, *raw_params(stream, 0, [new_event(i) for i in range(200)]))
    decoder = msgspec.json.Decoder(ItemAdded)
    samples = []
    for i in range(runs + 20):
        async with conn.transaction(readonly=True):
            start = time.perf_counter()
            rows = await conn.fetch(
                "SELECT event_id, version, position, type_id, data::text, metadata::text, recorded_at "
                "FROM events WHERE stream_id = $1 AND version >= 1 ORDER BY version",
                stream,
            )
            state = Cart()
            for r in rows:
                state = evolve(state, decoder.decode(r[4]))
            elapsed = (time.perf_counter() - start) * 1000
        assert state.count == 200
        if i >= 20:
            samples.append(elapsed)
    await conn.close()
    return statistics.median(samples), p95(samples)


async def seed(url: str, total: int) -> None:
    pool = await asyncpg.create_pool(plain_url(url), min_size=1, max_size=2)
    async with pool.acquire() as conn:
        for _ in range(total // 500):
            events = [new_event(i) for i in range(500)]
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
                await conn.fetch(RAW_INSERT, *raw_params(f"cart-{uuid.uuid4()}", 0, events))
    await pool.close()


async def lib_rebuild(url: str, total: int) -> float:
    db = Database(create_engine(url))
    factory = PostgresTransactionFactory(db)
    projection = AuditLogProjection()
    start = time.perf_counter()
    n = await rebuild(factory, projection, batch=2000)
    elapsed = time.perf_counter() - start
    assert n == total, (n, total)
    await db.dispose()
    return n / elapsed


async def raw_rebuild(url: str, total: int) -> float:
    """Same work by hand: read in position order in batches, insert the audit rows with unnest."""
    conn = await asyncpg.connect(plain_url(url))
    start = time.perf_counter()
    n = 0
    async with conn.transaction():
        await conn.execute("DELETE FROM audit_log")
        position = 0
        while True:
            rows = await conn.fetch(
                "SELECT event_id, stream_id, version, position, type_id, data::text, metadata::text, recorded_at "
                "FROM events WHERE position > $1 ORDER BY position LIMIT 2000",
                position,
            )
            if not rows:
                break
            metas = [msgspec.json.decode(r[6]) for r in rows]
            datas = [msgspec.json.decode(r[5]) for r in rows]
            changed = [d.get("changed") if isinstance(d, dict) else None for d in datas]
            await conn.execute(
                AUDIT_INSERT,  # the projection's own statement: the same rows, the same columns
                [r[3] for r in rows],
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[4] for r in rows],
                [r[4].rsplit(".", 1)[0] for r in rows],
                [r[1].partition("-")[0] for r in rows],
                [r[1].partition("-")[2] for r in rows],
                [m.get("tenant_id") for m in metas],
                [m.get("actor") for m in metas],
                [m.get("request_id") for m in metas],
                [m.get("correlation_id") for m in metas],
                [r[7] for r in rows],
                [m.get("ip") for m in metas],
                [m.get("user_agent") for m in metas],
                [msgspec.json.encode(c).decode() if isinstance(c, list) else None for c in changed],
                [r[5] for r in rows],
            )
            position = rows[-1][3]
            n += len(rows)
    elapsed = time.perf_counter() - start
    await conn.close()
    return n / elapsed


async def main(quick: bool) -> int:
    admin_url = os.environ.get("LITESKILL_DATABASE_URL")
    pg = None
    tmp = None
    if not admin_url:
        from infra.embedded.postgres import EmbeddedPostgres

        tmp = tempfile.mkdtemp(prefix="liteskill-bench-")
        pg = EmbeddedPostgres(Path(tmp))
        await asyncio.to_thread(pg.start)
        admin_url = pg.url("postgres")
    env = Env(admin_url)
    scale = 4 if quick else 1
    rows: list[dict[str, Any]] = []

    def add(name: str, unit: str, lib: float, raw: float, target: str, ok: bool | None) -> None:
        ratio = lib / raw if unit.endswith("/s") else raw / lib
        rows.append(
            {"name": name, "unit": unit, "liteskill": lib, "asyncpg": raw, "ratio": ratio, "target": target, "pass": ok}
        )

    try:
        single = 2000 // scale
        commits = 400 // scale
        for durable in (True, False):
            mode = "fsync per commit" if durable else "synchronous_commit=off"
            lib = await lib_appends(await env.fresh(durable), 1, single, 1)
            raw = await raw_appends(await env.fresh(durable), 1, single, 1)
            add(f"single appends, 1 writer [{mode}]", "appends/s", lib, raw, ">= 1,200", lib >= 1200)
            lib = await lib_appends(await env.fresh(durable), 16, single // 8, 1)
            raw = await raw_appends(await env.fresh(durable), 16, single // 8, 1)
            add(f"single appends, 16 writers [{mode}]", "appends/s", lib, raw, "-", None)
            lib = await lib_appends(await env.fresh(durable), 1, commits, 50)
            raw = await raw_appends(await env.fresh(durable), 1, commits, 50)
            add(f"batched appends, 50/commit [{mode}]", "events/s", lib, raw, ">= 40,000", lib >= 40_000)
        url = await env.fresh()
        _, lib_p95 = await lib_load(url, 200, snapshot=False)
        _, raw_p95 = await raw_load(url, 200)
        add("load 200-event aggregate, p95", "ms", lib_p95, raw_p95, "<= 3 ms", lib_p95 <= 3.0)
        _, snap_p95 = await lib_load(url, 200, snapshot=True)
        add("load 200-event aggregate with snapshot, p95", "ms", snap_p95, raw_p95, "-", None)
        total = 50_000 // scale
        url = await env.fresh()
        await seed(url, total)
        raw = await raw_rebuild(url, total)
        lib = await lib_rebuild(url, total)
        add(f"projection rebuild ({total:,} events)", "events/s", lib, raw, ">= 50,000", lib >= 50_000)
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.stop)

    print(f"\n{'measurement':<58}{'liteskill':>14}{'asyncpg':>14}{'ratio':>8}  {'target':<10}result")
    for r in rows:
        verdict = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        print(
            f"{r['name']:<58}{r['liteskill']:>11,.1f} {r['unit'][:2]:<2}{r['asyncpg']:>11,.1f} {r['unit'][:2]:<2}"
            f"{r['ratio']:>7.2f}  {r['target']:<10}{verdict}"
        )
    print("\nratio: liteskill relative to raw asyncpg doing the same SQL (1.00 = no overhead; for times, raw/lib)")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "eventstore.json").write_text(json.dumps(rows, indent=2))
    return 0 if all(r["pass"] is not False for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a quarter of the work (a smoke run)")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop (serve uses uvloop)"
    )
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        raise SystemExit(uvloop.run(main(args.quick)))
    raise SystemExit(asyncio.run(main(args.quick)))
