"""How runs end: exactly one terminal event when work raises, cancel within a second (also before
the start), the lease reaper sparing heartbeating runs, a run whose lease was lost publishing no
second terminal event, shutdown interrupting running work, the background runtime reaping at start."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from api.services import Services
from domain.runs.events import MessageDelta, MessageStarted, RunCompleted, problem
from domain.shared.ids import new_id
from infra.db.engine import Database
from infra.db.tables.runs import runs
from infra.runs.reaper import RunHooks, reap
from infra.runs.rows import Run
from infra.runs.runner import RunContext, RunFailure, RunRunner
from infra.runs.stream import RunStreams, stream_key
from infra.settings import Settings
from tests.integration import test_runs as runs_tests
from tests.integration.test_access import User
from tests.integration.test_auth import events_of
from tests.integration.test_http_platform import assert_problem
from tests.integration.test_runs import URL, new_run, other_process, parse_sse, run_row, seqs, talker

app = runs_tests.app
ada = runs_tests.ada
bob = runs_tests.bob
runners = runs_tests.runners  # autouse: every runner a test starts is closed after it


# -- terminal events, cancel, reaper ---------------------------------------------------------
async def test_work_that_raises_ends_with_exactly_one_run_failed(
    client: httpx.AsyncClient, services: Services, ada: User, runners: list[RunRunner]
) -> None:
    async def boom(ctx: RunContext) -> None:
        await ctx.publish(MessageStarted(message_id=new_id()))
        raise RuntimeError("secret internals")

    async def refused(ctx: RunContext) -> None:
        raise RunFailure(problem(429, "rate_limited", "Too Many Requests", "The provider is rate limiting."))

    async def sneaky(ctx: RunContext) -> None:
        await ctx.publish(RunCompleted())  # only the runner ends a run

    runner = other_process(services, runners)
    for work, code in ((boom, "internal_error"), (refused, "rate_limited"), (sneaky, "internal_error")):
        run_id = await new_run(services.db, ada)
        assert await runner.start(run_id, work) == "failed"
        frames = parse_sse((await client.get(f"{URL}/{run_id}/events", headers=ada.headers)).text)
        terminal = [f for f in frames if f["event"] in ("run.completed", "run.failed", "run.cancelled")]
        assert len(terminal) == 1
        assert frames[-1] is terminal[0]
        assert terminal[0]["json"]["problem"]["code"] == code
        assert "secret internals" not in json.dumps(frames)
        run = (await client.get(f"{URL}/{run_id}", headers=ada.headers)).json()
        assert run["status"] == "failed"
        assert run["error"]["code"] == code


async def test_cancel_ends_the_run_within_a_second_and_its_events_stop(
    client: httpx.AsyncClient, services: Services, ada: User, runners: list[RunRunner], db: Database
) -> None:
    closed = asyncio.Event()

    async def endless(ctx: RunContext) -> None:
        mid = new_id()
        try:
            while True:
                await ctx.publish(MessageDelta(message_id=mid, text="."))
                await asyncio.sleep(0.01)
        finally:
            closed.set()  # where a provider stream is closed

    # Run by another process (cancel travels over pub/sub), and by this one (direct).
    for runner in (other_process(services, runners), services.runs()):
        closed.clear()
        run_id = await new_run(services.db, ada)
        task = runner.start(run_id, endless)
        await asyncio.wait_for(runner.subscribed.wait(), 30)  # a cancel published before is not heard
        await asyncio.sleep(0.1)
        resp = await client.post(f"{URL}/{run_id}/cancel", headers=ada.headers)
        assert resp.status_code == 202, resp.text
        assert resp.json()["cancel_requested_at"] is not None
        assert await asyncio.wait_for(task, 10) == "cancelled"  # the work never ends on its own
        assert closed.is_set()
        last = await runner.streams.last_seq(run_id)
        await asyncio.sleep(0.1)
        assert await runner.streams.last_seq(run_id) == last  # nothing after the terminal event
        frames = parse_sse((await client.get(f"{URL}/{run_id}/events", headers=ada.headers)).text)
        assert frames[-1]["event"] == "run.cancelled"
        assert [f["event"] for f in frames].count("run.cancelled") == 1
        assert (await run_row(db, run_id)).status == "cancelled"
        assert_problem(await client.post(f"{URL}/{run_id}/cancel", headers=ada.headers), 409, "run_finished")
    cancels = await events_of(db, "runs.cancel_requested.v1")
    assert len(cancels) == 2
    assert cancels[0]["metadata"]["actor"] == f"user:{ada.id}"


async def test_a_cancel_requested_before_start_ends_it_at_once(
    client: httpx.AsyncClient, services: Services, ada: User, runners: list[RunRunner]
) -> None:
    ran = False

    async def work(ctx: RunContext) -> None:
        nonlocal ran
        ran = True

    run_id = await new_run(services.db, ada)
    assert (await client.post(f"{URL}/{run_id}/cancel", headers=ada.headers)).status_code == 202
    assert await other_process(services, runners).start(run_id, work) == "cancelled"
    assert not ran


async def test_the_reaper_interrupts_expired_leases_and_spares_heartbeating_runs(
    client: httpx.AsyncClient, services: Services, ada: User, runners: list[RunRunner], db: Database
) -> None:
    hooks = RunHooks()
    seen: list[uuid.UUID] = []

    @hooks.on_interrupted("agent")
    async def keep_partial(session: AsyncSession, run: Run) -> None:
        seen.append(run.id)

    # A run whose process died: running, lease long expired, a few events already published.
    dead = await new_run(db, ada)
    streams = RunStreams(services.redis, 3600)
    await streams.publish(dead, MessageDelta(message_id=dead, text="partial"))
    async with db.write() as session:
        await session.execute(
            update(runs)
            .where(runs.c.id == dead)
            .values(status="running", lease_owner="gone", lease_expires_at=datetime.now(UTC) - timedelta(seconds=5))
        )
    # A slow but healthy run with a short lease: heartbeats keep it alive across several reaps.
    alive = await new_run(db, ada)
    runner = other_process(services, runners, lease_s=0.6)
    task = runner.start(alive, talker(8, delay=0.2))
    reaped: list[uuid.UUID] = []
    while not task.done():
        reaped += await reap(db, RunStreams(services.redis, 3600), hooks)
        await asyncio.sleep(0.25)
    assert await task == "completed"
    assert reaped == [dead]
    assert seen == [dead]

    run = (await client.get(f"{URL}/{dead}", headers=ada.headers)).json()
    assert run["status"] == "interrupted"
    assert run["error"]["code"] == "run_interrupted"
    frames = parse_sse((await client.get(f"{URL}/{dead}/events", headers=ada.headers)).text)
    assert seqs(frames) == [1, 2]
    assert frames[-1]["event"] == "run.failed"
    assert frames[-1]["json"]["problem"]["code"] == "run_interrupted"
    assert (await run_row(db, alive)).status == "completed"
    assert await reap(db, streams, hooks) == []  # nothing twice


async def test_a_run_whose_lease_was_lost_publishes_no_second_terminal(
    services: Services, ada: User, runners: list[RunRunner], db: Database
) -> None:
    runner = other_process(services, runners, lease_s=0.6)
    run_id = await new_run(db, ada)
    task = runner.start(run_id, talker(100, delay=0.05))
    await asyncio.sleep(0.2)
    async with db.write() as session:  # another process reaped it (e.g. after a long pause)
        await session.execute(update(runs).where(runs.c.id == run_id).values(lease_owner="someone-else"))
    assert await asyncio.wait_for(task, 2) == "interrupted"
    entries = await services.redis.xrange(stream_key(run_id))
    assert not [e for e in entries if e[1][b"type"].startswith(b"run.") and e[1][b"type"] != b"run.started"]


async def test_shutdown_interrupts_running_work(services: Services, ada: User, db: Database) -> None:
    runner = RunRunner(db, RunStreams(services.redis, 60), lease_s=30)
    run_id = await new_run(db, ada)
    task = runner.start(run_id, talker(1000, delay=0.05))
    await asyncio.sleep(0.1)
    await runner.aclose()
    assert await task == "interrupted"
    run = await run_row(db, run_id)
    assert run.status == "interrupted"
    assert run.error is not None
    assert run.error["code"] == "run_interrupted"


async def test_the_background_runtime_reaps_at_start(settings: Settings, services: Services, ada: User) -> None:
    from infra.worker.runtime import BackgroundRuntime

    dead = await new_run(services.db, ada)
    async with services.db.write() as session:
        await session.execute(
            update(runs)
            .where(runs.c.id == dead)
            .values(status="running", lease_owner="gone", lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    rt = BackgroundRuntime(settings, consume=False)
    rt.start()
    try:
        deadline = time.monotonic() + 10
        while (await run_row(services.db, dead)).status == "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await asyncio.to_thread(rt.stop)
    assert (await run_row(services.db, dead)).status == "interrupted"
    entries = await services.redis.xrange(stream_key(dead))
    assert [e[1][b"type"] for e in entries] == [b"run.failed"]
